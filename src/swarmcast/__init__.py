"""swarmcast: an open peer-to-peer live video broadcasting engine."""

__version__ = "0.1.0"
VERSION_CODE = 100
