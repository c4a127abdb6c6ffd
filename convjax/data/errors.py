"""The data package's error (private module; import it from :mod:`convjax.data`)."""


class DataError(ValueError):
    """Bad or missing data: the message names the dataset and the file or record."""


__all__ = ["DataError"]
