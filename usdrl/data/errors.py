"""The one error type of the data layer: bad input, with where it is and what to do."""


class DataError(ValueError):
    """Bad input data. The message names the file, line or sample and what to do about it."""
