"""Typed exceptions. Library code raises these and never prints or exits; ``cli.py`` turns them
into one-line messages with a non-zero exit code."""


import re

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def placeholders(text: str) -> tuple[str, ...]:
    """The settings a library-written text refers to as ``{name}`` (never apply this to user text)."""
    return tuple(dict.fromkeys(_PLACEHOLDER.findall(text)))


class MnistError(Exception):
    """Base class of every error this package raises on purpose.

    A message may refer to the settings a user changes to fix it as ``{name}`` (``{data_dir}``,
    ``{save}``), listed in ``settings`` (default: the class's own). The library never spells a flag:
    ``str()`` writes the names as they are, :meth:`text` as the caller likes (the CLI: ``--data-dir``).
    """

    settings: tuple[str, ...] = ()

    def __init__(self, message: str = "", settings: str | tuple[str, ...] | None = None):
        if settings is not None:
            self.settings = (settings,) if isinstance(settings, str) else tuple(settings)
        self.message = message
        super().__init__(message)

    def text(self, spell) -> str:
        """The message with every ``{setting}`` spelt by ``spell(name)``."""
        message = self.message
        for name in self.settings:  # str.replace, not format: a value quoted in the message may hold braces
            message = message.replace("{" + name + "}", spell(name))
        return message

    def __str__(self) -> str:
        return self.text(str)


class ConfigError(MnistError):
    """A setting (option, environment variable, URL scheme, path) that cannot work."""

    settings = ("mirror", "data_dir", "offline")


class DownloadError(MnistError):
    """Every mirror failed for a file; the message lists each mirror's failure and the manual fix."""

    settings = ("mirror",)


class ChecksumError(MnistError):
    """A file's content does not match its pinned size or SHA-256."""

    settings = ("force",)


class FormatError(MnistError):
    """A file is not a valid IDX file of the expected shape and type."""

    settings = ("data_dir", "force", "mirror")

    def with_fix(self) -> "FormatError":
        """This error with :data:`DATA_FIX` appended (once)."""
        if DATA_FIX in self.message:
            return self
        return FormatError(f"{self.message.rstrip()} {DATA_FIX}", tuple(dict.fromkeys((*self.settings, "force"))))


#: What to do about a data file that cannot be read (the end of every such error).
DATA_FIX = ("Fix: `mnist-softmax download {force}` replaces the data directory's files with verified MNIST, "
            "or remove the file (or choose another {data_dir}).")


class DataNotFoundError(MnistError):
    """The dataset is not present and may not be fetched (e.g. offline)."""

    settings = ("mirror", "offline", "data_dir")


class DataDirError(MnistError):
    """The data directory cannot be created or written."""

    settings = ("data_dir",)


class LockTimeoutError(MnistError):
    """Another process held the data directory's lock for longer than the wait limit."""

    settings = ("data_dir",)


class OutputError(MnistError):
    """An output file (a saved model, metrics, a plot) cannot be written."""


class ModelFileError(MnistError):
    """A saved model file is missing, malformed, too large or of the wrong shape."""

    settings = ("save", "input_scale")


class MissingExtraError(MnistError):
    """An optional dependency (e.g. matplotlib for plots) is not installed; the message gives the pip line."""

    settings = ("plot",)


class SettingsError(MnistError, ValueError):
    """A setting that cannot work: ``settings`` names it as the library does (``lr``, ``batch_size``),
    the message may refer to it as ``{lr}``; :meth:`text` prefixes the settings' names. The CLI words
    them with its options (``--batch-size``) and exits 2."""

    def __init__(self, settings: str | tuple[str, ...], message: str):
        super().__init__(message, settings)

    def text(self, spell) -> str:
        """``"<settings>: <message>"`` with every setting spelt by ``spell(name)``."""
        return f"{' / '.join(spell(name) for name in self.settings)}: {super().text(spell)}"
