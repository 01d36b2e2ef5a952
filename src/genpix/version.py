"""genpix's version, in a module of its own so that every layer can read it without importing the package
root (which reaches up to the pipelines for ``genpix.load_pipeline``)."""

__version__ = "0.1.0"
