from .pet import PET  # noqa: F401
