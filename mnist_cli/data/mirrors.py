"""Where and how patiently to fetch: the fetch settings and the mirrors, parsed and checked before any fetching.

    >>> FetchSettings(retries=2).retries
    2
    >>> [m.location for m in resolve_mirrors(["https://user:pw@example.org/mnist"], environ={})][0]
    'https://user:pw@example.org/mnist/'
    >>> str(resolve_mirrors(["https://user:pw@example.org/mnist"], environ={})[0])   # messages never show it
    'https://user:***@example.org/mnist/'

:class:`FetchSettings` holds the timeouts, the deadline, the retries and the back-off, each settable as
``MNIST_SOFTMAX_<FIELD>``; :func:`resolve_mirrors` turns the caller's mirrors, ``$MNIST_SOFTMAX_MIRRORS``
and the dataset's own into :class:`Mirror` objects (an http(s) base URL or a local directory);
:func:`offline_from_env` reads ``$MNIST_SOFTMAX_OFFLINE``. A bad value is a one-line
:class:`mnist_cli.errors.ConfigError` that names it. :mod:`mnist_cli.data.download` tries the mirrors in
order and :mod:`mnist_cli.data.fetch` fetches from each within the settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit

from mnist_cli.data import datasets
from mnist_cli.data.datasets import DatasetSpec
from mnist_cli.data.directory import expand_home, redact
from mnist_cli.errors import ConfigError
from mnist_cli.settings import MIRRORS_ENV, OFFLINE_ENV

__all__ = ["FetchSettings", "Mirror", "resolve_mirrors", "offline_from_env"]




MAX_SECONDS = 86400.0  # a day: longer waits are mistakes, and sockets overflow near 1e10 s
MAX_RETRIES = 100


@dataclass(frozen=True)
class FetchSettings:
    """How patient a download is. Each field can be set by ``MNIST_SOFTMAX_<FIELD>`` (upper case).

    Durations are seconds, finite and at most :data:`MAX_SECONDS`; the timeouts and the deadline must be
    above 0 (0 would fail every request), the back-offs may be 0. ``retries`` is a whole number from 0
    to :data:`MAX_RETRIES`. Anything else is a :class:`ConfigError`.
    """

    connect_timeout: float = 10.0  # seconds to open a connection
    read_timeout: float = 30.0  # seconds without a byte before a response counts as stalled
    deadline: float = 300.0  # seconds per file and mirror, retries included: stops a server dripping bytes
    retries: int = 3  # extra attempts after a connection error, 429 or 5xx (never after 403/404)
    backoff: float = 0.5  # first wait between attempts; doubles each time
    backoff_max: float = 30.0  # longest wait; a longer Retry-After gives up on the mirror instead
    lock_timeout: float = 600.0  # seconds to wait for another process fetching into the same directory

    def __post_init__(self) -> None:
        for f in fields(self):
            problem = _setting_problem(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"FetchSettings({f.name}={getattr(self, f.name)!r}): {problem}.")

    @classmethod
    def from_env(cls, environ=None) -> FetchSettings:
        """The defaults, overridden by the ``MNIST_SOFTMAX_*`` variables that are set and not blank.

        :class:`ConfigError` naming the variable for a value that is not a number or out of range.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            var = f"MNIST_SOFTMAX_{f.name.upper()}"
            text = environ.get(var, "").strip()
            if not text:
                continue
            try:
                value = int(text) if f.name == "retries" else float(text)
            except ValueError:
                value = None
            problem = _setting_problem(f.name, value)
            if problem:
                raise ConfigError(f"{var}={text!r}: {problem}; fix or unset it.")
            values[f.name] = value
        return cls(**values)


def _setting_problem(name: str, value) -> str | None:
    """Why ``value`` cannot work for the :class:`FetchSettings` field ``name``; None if it can."""
    if name == "retries":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RETRIES
        return None if ok else f"must be a whole number from 0 to {MAX_RETRIES}"
    may_be_zero = name in ("backoff", "backoff_max")  # a timeout or deadline of 0 would fail every request
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and (value >= 0 if may_be_zero else value > 0) and value <= MAX_SECONDS:  # refuses nan and inf too
        return None
    least = "0 or more" if may_be_zero else "more than 0"
    return f"must be a number of seconds, {least} and at most {MAX_SECONDS:g}"


@dataclass(frozen=True)
class Mirror:
    """Where files can come from: an http(s) base URL ending in ``/``, or a local directory."""

    location: str
    directory: Path | None = None  # set for a local directory

    def __str__(self) -> str:  # what messages show: never the password
        return redact(self.location)


def resolve_mirrors(mirrors=(), spec: DatasetSpec | None = None, environ=None) -> list[Mirror]:
    """The caller's mirrors, then ``$MNIST_SOFTMAX_MIRRORS`` (space-separated), then the dataset's own.

    :class:`ConfigError` for a scheme other than http(s) or a local directory that does not exist,
    before any request is made.
    """
    environ = os.environ if environ is None else environ
    spec = spec or datasets.MNIST_SPEC
    candidates = [*mirrors, *environ.get(MIRRORS_ENV, "").split(), *spec.mirrors]
    resolved, seen = [], set()
    for text in candidates:
        mirror = _parse_mirror(str(text))
        if mirror.location not in seen:
            seen.add(mirror.location)
            resolved.append(mirror)
    return resolved


def _parse_mirror(text: str) -> Mirror:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - parsing the port is what checks it (e.g. "Port out of range")
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" for an unclosed "["
        raise ConfigError(
            f"Mirror {redact(text)!r} is not a valid URL ({exc}); fix {{mirror}} or {MIRRORS_ENV}."
        ) from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.netloc:
            raise ConfigError(f"Mirror {redact(text)!r} has no host; give a URL like https://host/path/.")
        return Mirror(text if text.endswith("/") else text + "/")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"Mirror {redact(text)!r} names the host {parts.netloc!r}: a file:// mirror is a "
                              f"directory on this machine (file:///path); fix {{mirror}} or {MIRRORS_ENV}.")
        path = Path(parts.path)
    elif len(scheme) <= 1:  # no scheme, or a Windows drive letter
        path = Path(text)
    else:
        raise ConfigError(
            f"Mirror {redact(text)!r} uses the unsupported scheme {scheme!r}: give an http(s) URL or a local directory "
            f"({{mirror}} or {MIRRORS_ENV})."
        )
    path = expand_home(path, f"give a full path with {{mirror}} or {MIRRORS_ENV}").absolute()
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"Mirror directory {path} {what}; give a directory holding the files with {{mirror}} "
                          f"or {MIRRORS_ENV}.")
    return Mirror(str(path), directory=path)


def offline_from_env(environ=None) -> bool:
    """Whether ``$MNIST_SOFTMAX_OFFLINE`` forbids network access.

    The value is read by click's BOOL, the very parser of ``--offline``'s variable, so the library and
    the command line agree: 1/0, true/false, yes/no, y/n, t/f, on/off in any case; empty means unset.
    """
    text = (os.environ if environ is None else environ).get(OFFLINE_ENV, "")
    if not text:  # click, too, treats an empty variable as unset
        return False
    import click  # the command line's own dependency; imported here only when the variable is set

    try:
        return click.BOOL.convert(text, None, None)
    except click.BadParameter:
        raise ConfigError(
            f"{OFFLINE_ENV}={text!r} is not a boolean; use 1 or 0 (also true/false, yes/no, on/off), or unset it."
        ) from None
