"""The package version, in a module of its own so that modules inside the package can read it without
importing the package's public face (which would tie them all into one import cycle)."""

__version__ = "0.1.0"
