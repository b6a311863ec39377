"""Errors for bad datasets: one message that names the file (and line) and what is wrong."""


class DatasetError(ValueError):
    """A dataset cannot be used as given; the message says where and why."""


class BadImageError(DatasetError):
    """An image file is missing or cannot be decoded."""
