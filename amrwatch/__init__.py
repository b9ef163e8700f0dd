"""amrwatch: real-time monitoring of the abnormal muscle response during MVD."""

__version__ = "0.1.0"
