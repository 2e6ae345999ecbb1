"""OOD Lens core library: dataset → model → cache → scorer → metrics."""
__version__ = "0.1.0"
