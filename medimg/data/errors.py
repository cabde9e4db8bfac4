"""The project's error type for bad input data."""


class DataError(ValueError):
    """Raised when a manifest or an image cannot be used; the message names file and problem."""
