"""The package version: the one module the engine may import from outside `engine/`."""

__version__ = "0.1.0"
