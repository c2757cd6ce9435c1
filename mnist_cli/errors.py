"""Typed exceptions. Library code raises these and never prints or exits; ``cli.py`` turns them
into one-line messages with a non-zero exit code."""


class MnistError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MnistError):
    """A setting (option, environment variable, URL scheme, path) that cannot work."""


class DownloadError(MnistError):
    """Every mirror failed for a file; the message lists each mirror's failure and the manual fix."""


class ChecksumError(MnistError):
    """A file's content does not match its pinned size or SHA-256."""


class FormatError(MnistError):
    """A file is not a valid IDX file of the expected shape and type."""


class DataNotFoundError(MnistError):
    """The dataset is not present and may not be fetched (e.g. --offline)."""


class DataDirError(MnistError):
    """The data directory cannot be created or written."""


class LockTimeoutError(MnistError):
    """Another process held the data directory's lock for longer than the wait limit."""


class OutputError(MnistError):
    """An output file (--save, --metrics-out, --plot) cannot be written."""


class ModelFileError(MnistError):
    """A saved model file is missing, malformed, too large or of the wrong shape."""


class MissingExtraError(MnistError):
    """An optional dependency (e.g. matplotlib for ``--plot``) is not installed; the message gives the pip line."""
