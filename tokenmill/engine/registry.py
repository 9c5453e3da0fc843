"""Stage and reader registries: YAML names map to classes here.

Stages come from plugins: packages or modules named under the `tokenmill.plugins` entry-point group (tokenmill's
own are `tokenmill.curate`, `tokenmill.tokenize` and `tokenmill.train.stages`; a third-party package adds its own
the same way). A package plugin is imported module by module, so each module's `@register` classes register
themselves. The engine itself names no plugin: it only finds them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)

STAGES: dict[str, type] = {}
READERS: dict[str, type] = {}
UNAVAILABLE: dict[str, str] = {}  # module -> why it could not be imported (an optional dependency is missing)
PLUGIN_GROUP = "tokenmill.plugins"
# Used only when the package's metadata is missing (running from a source tree that was never installed).
_BUILTIN_PLUGINS = ("tokenmill.curate", "tokenmill.tokenize", "tokenmill.train.stages")
_loaded = False


def register(name: str) -> Callable[[T], T]:
    """Register a stage class under the YAML key `name`."""

    def wrap(cls: T) -> T:
        if name in STAGES and STAGES[name] is not cls:
            raise ValueError(f"stage {name!r} is already registered by {STAGES[name].__qualname__}")
        cls.stage_name = name
        STAGES[name] = cls
        return cls

    return wrap


def register_reader(fmt: str) -> Callable[[T], T]:
    """Register a reader class under `read: {format: fmt}`."""

    def wrap(cls: T) -> T:
        READERS[fmt] = cls
        return cls

    return wrap


def plugin_modules() -> list[str]:
    """Names of the plugin modules and packages declared under the `tokenmill.plugins` entry points."""
    names = sorted({ep.value for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP)})
    return names or list(_BUILTIN_PLUGINS)


def load_builtins() -> None:
    """Import every plugin module (every module of a plugin package) once, so their classes register themselves.

    A module whose *optional third-party* dependency is missing is recorded in UNAVAILABLE and reported when one
    of its stages is asked for; a missing tokenmill module is a bug and raises.
    """
    global _loaded
    if _loaded:
        return
    for plugin in plugin_modules():
        for name in _modules_of(plugin):
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                missing = exc.name or ""
                if missing == "tokenmill" or missing.startswith("tokenmill.") or missing == name:
                    raise
                UNAVAILABLE[name] = str(exc)
    _loaded = True


def _modules_of(plugin: str) -> list[str]:
    module = importlib.import_module(plugin)
    if not hasattr(module, "__path__"):  # a plain module
        return [plugin]
    return [plugin, *(m.name for m in pkgutil.walk_packages(module.__path__, prefix=f"{plugin}."))]


def known_stages() -> list[str]:
    load_builtins()
    return sorted([*STAGES, "read"])


def known_formats() -> list[str]:
    load_builtins()
    return sorted(READERS)
