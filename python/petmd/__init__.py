"""petmd: train, export and run PET machine-learning potentials (Python half)."""

__version__ = "0.1.0"

from .errors import PetmdError  # noqa: F401
