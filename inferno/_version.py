"""The package version: defined here once (setup.py reads it)."""
__version__ = "0.2.0"
