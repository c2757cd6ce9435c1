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


class SettingsError(MnistError, ValueError):
    """A setting that cannot work. ``settings`` names it as the library does (``lr``, ``batch_size``),
    never as a flag; the message may refer to them as ``{batch_size}``. ``str()`` spells them as
    names, :meth:`text` as the caller likes: the CLI words them with its options (``--batch-size``)."""

    def __init__(self, settings: str | tuple[str, ...], message: str):
        self.settings = (settings,) if isinstance(settings, str) else tuple(settings)
        self.message = message
        super().__init__(self.text(str))

    def text(self, spell) -> str:
        """``"<settings>: <message>"`` with every setting spelt by ``spell(name)``."""
        message = self.message
        for name in self.settings:  # str.replace, not format: a value quoted in the message may hold braces
            message = message.replace("{" + name + "}", spell(name))
        return f"{' / '.join(spell(name) for name in self.settings)}: {message}"
