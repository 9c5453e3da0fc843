"""Stage and reader registries: YAML names map to classes here."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)

STAGES: dict[str, type] = {}
READERS: dict[str, type] = {}
UNAVAILABLE: dict[str, str] = {}  # module -> why it could not be imported (an optional dependency is missing)
_PACKAGES = ("tokenmill.curate", "tokenmill.tokenize")
_MODULES = ("tokenmill.train.stages",)  # the train package itself needs torch; its stage module does not
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


def load_builtins() -> None:
    """Import every module of the stage packages, so their classes register themselves (once)."""
    global _loaded
    if _loaded:
        return
    names = list(_MODULES)
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        names += [module.name for module in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}.")]
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an optional dependency of that module is not installed
            UNAVAILABLE[name] = str(exc)
    _loaded = True


def known_stages() -> list[str]:
    load_builtins()
    return sorted([*STAGES, "read"])


def known_formats() -> list[str]:
    load_builtins()
    return sorted(READERS)
