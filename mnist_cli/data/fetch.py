"""The transport of the data layer: one file from one mirror into a part file, over http(s) or from a directory.

    from mnist_cli.data.fetch import Fetcher
    with Fetcher(FetchSettings.from_env(), progress=False) as fetcher, DataDirPart(root, f.name) as part:
        digest, n_bytes = fetcher.fetch(mirror, f, part)   # or MirrorFailed: why this mirror could not
        part.commit(root / f.name)

:mod:`mnist_cli.data.download` decides what to fetch and tries the mirrors in turn; this module fetches
from one mirror, verifying as it goes (:class:`mnist_cli.data.directory.Verifier`), and says why that
mirror failed with :class:`MirrorFailed`. Connection errors, 429 and 5xx are retried with back-off
first (honouring ``Retry-After``). The per-file deadline is enforced by a watchdog that shuts the
connection down, so it bounds the connection, the status line and headers (and endless ``1xx``),
redirects and the body together. What a server says (a reason phrase, an error text) is kept with its
control characters escaped, and a mirror's password never appears in a reason.
"""

from __future__ import annotations

import email.utils
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests
import urllib3

from mnist_cli import __version__
from mnist_cli.data.datasets import FileSpec
from mnist_cli.data.directory import DataDirPart, Digest, Verifier, find_file, printable, redact
from mnist_cli.data.mirrors import FetchSettings, Mirror
from mnist_cli.errors import MnistError
from mnist_cli.progress import bars_enabled, make_bar

__all__ = ["USER_AGENT", "Fetcher", "MirrorFailed"]

USER_AGENT = f"mnist-softmax/{__version__}"

class MirrorFailed(Exception):
    """One mirror failed for one file; ``reason`` is a short phrase for the error message."""

    def __init__(self, reason: str, *, retry: bool = False, retry_after: float | None = None, down: bool = False):
        reason = printable(reason)  # it may quote the server: no escape sequence reaches the terminal
        super().__init__(reason)
        self.reason, self.retry, self.retry_after, self.down = reason, retry, retry_after, down


class _Watchdog:
    """Shuts down the connections of one download when its total deadline passes.

    Every connection the session opens is registered (:class:`_WatchedAdapter`); from the deadline on,
    their sockets are shut down (again every 0.1 s, for one still connecting), which ends any blocking
    read at once: of the status line, the headers, an endless run of ``100 Continue``, a redirect or
    the body. ``fired`` tells the caller that this, not the server, ended the request.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._conns: list = []
        self._done = threading.Event()
        self.fired = False

    def watch(self, conn) -> None:
        with self._lock:
            self._conns.append(conn)

    @contextmanager
    def armed(self, seconds: float):
        self.fired = False
        self._done = done = threading.Event()
        thread = threading.Thread(target=self._run, args=(seconds, done), name="mnist-softmax-deadline", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            with self._lock:
                self._conns = []

    def _run(self, seconds: float, done: threading.Event) -> None:
        if done.wait(seconds):
            return
        self.fired = True
        while True:
            with self._lock:
                socks = [getattr(c, "sock", None) for c in self._conns]
            for sock in socks:
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:  # closed already
                        pass
            if done.wait(0.1):
                return


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with every new connection (direct or through a proxy) given to a watchdog."""

    def __init__(self, watchdog: _Watchdog):
        self.watchdog = watchdog  # before super().__init__, which builds the pool manager
        super().__init__()

    def _watched(self, manager):
        watchdog = self.watchdog

        def pool_class(base):
            class Pool(base):
                def _new_conn(self):
                    conn = super()._new_conn()
                    watchdog.watch(conn)
                    return conn

            return Pool

        if not getattr(manager, "_watched", False):
            manager.pool_classes_by_scheme = {k: pool_class(v) for k, v in manager.pool_classes_by_scheme.items()}
            manager._watched = True
        return manager

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self._watched(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        return self._watched(super().proxy_manager_for(proxy, **proxy_kwargs))


class Fetcher:
    """One http(s) session for a run of downloads: fetches a file from a mirror, within the fetch settings."""

    def __init__(self, settings: FetchSettings, progress: bool):
        self.settings = settings
        self.progress = bars_enabled(quiet=not progress)  # on stderr, only when it is a terminal
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        self.watchdog = _Watchdog()
        adapter = _WatchedAdapter(self.watchdog)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._received: int | None = None  # body bytes of the current attempt; None before its headers

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    def fetch(self, mirror: Mirror, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        """Write ``f`` from ``mirror`` into ``part``: its verified digest and the bytes read. Raises
        :class:`MirrorFailed` (or the :class:`MnistError` of wrong content) when this mirror cannot serve it."""
        if mirror.directory is not None:
            return _copy_local(mirror.directory, f, part)
        return self._download(mirror.location + f.name, f, part)

    def _download(self, url: str, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        """GET ``url`` with retries, back-off and Retry-After, all within the per-file deadline."""
        with self.watchdog.armed(self.settings.deadline):
            try:
                return self._retrying(url, f, part)
            except (MirrorFailed, MnistError):
                if self.watchdog.fired:  # the watchdog cut the connection: that is the real reason
                    raise self._past_deadline() from None
                raise

    def _past_deadline(self) -> MirrorFailed:
        s = self.settings
        if self._received is None:
            return MirrorFailed(
                f"no complete response (status line and headers) within {s.deadline:g} s "
                "(total deadline, MNIST_SOFTMAX_DEADLINE)",
                down=True,
            )
        return MirrorFailed(
            f"too slow: {self._received} bytes in {s.deadline:g} s (total deadline, MNIST_SOFTMAX_DEADLINE)")

    def _retrying(self, url: str, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
        s = self.settings
        deadline = time.monotonic() + s.deadline
        attempt = 0
        while True:
            part.restart()
            try:
                return self._attempt(url, f, part, deadline)
            except MirrorFailed as exc:
                attempt += 1
                if not exc.retry or self.watchdog.fired:
                    raise
                if attempt > s.retries:
                    raise MirrorFailed(f"{exc.reason}; gave up after {attempt} attempts", down=exc.down) from None
                wait = exc.retry_after if exc.retry_after is not None else min(s.backoff * 2 ** (attempt - 1), s.backoff_max)
                if wait > s.backoff_max or time.monotonic() + wait > deadline:
                    raise MirrorFailed(f"{exc.reason}; retry in {wait:g} s would pass the deadline") from None
                time.sleep(wait)

    def _attempt(self, url: str, f: FileSpec, part: DataDirPart, deadline: float) -> tuple[Digest, int]:
        s = self.settings
        self._received = None
        connect = min(s.connect_timeout, max(deadline - time.monotonic(), 0.01))
        try:
            response = self.session.get(url, stream=True, timeout=(connect, s.read_timeout))
        except requests.exceptions.ConnectTimeout:
            raise MirrorFailed(f"no connection within {connect:g} s", retry=True, down=True) from None
        except requests.exceptions.ReadTimeout:  # it accepted the connection and said nothing: silent
            raise MirrorFailed(f"no response within {s.read_timeout:g} s (read timeout)", retry=True, down=True) from None
        except requests.exceptions.ConnectionError as exc:
            raise MirrorFailed(f"connection failed ({_why(exc)})", retry=True, down=True) from None
        except requests.RequestException as exc:
            raise MirrorFailed(f"request failed ({_why(exc)})") from None
        except UnicodeError:  # requests decodes a redirect's Location as UTF-8: a bad byte is this mirror's fault
            raise MirrorFailed("it redirected to a Location that is not UTF-8 text") from None
        with response:
            if self.watchdog.fired:  # a head cut short by the watchdog can parse as a complete response
                raise MirrorFailed("the deadline passed before the response was complete")
            code = response.status_code
            if code == 429 or code >= 500:
                after = _retry_after(response.headers.get("Retry-After"))
                raise MirrorFailed(f"HTTP {code} {response.reason}", retry=True, retry_after=after)
            if code != 200:
                raise MirrorFailed(f"HTTP {code} {response.reason}")
            length = _content_length(response, f)
            received = self._received = 0
            verifier = Verifier(f)
            bar = make_bar(length, f.name, "B", self.progress, unit_scale=True, unit_divisor=1024)
            try:
                while chunk := self._read(response, received, length, deadline):
                    received += len(chunk)
                    self._received = received
                    verifier.update(chunk)
                    part.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if length is not None and received != length:
            raise MirrorFailed(f"body ended after {received} of {length} bytes (truncated)", retry=True)
        return verifier.finish(), received

    def _read(self, response, received: int, length: int | None, deadline: float) -> bytes:
        """The next piece of the body (b"" at its end), whatever has arrived: a slow drip still ends on time."""
        s = self.settings
        if time.monotonic() > deadline:
            raise MirrorFailed(
                f"too slow: {received} bytes in {s.deadline:g} s (total deadline, MNIST_SOFTMAX_DEADLINE)"
            )
        try:
            return response.raw.read1(64 * 1024, decode_content=True)
        except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
            raise MirrorFailed(
                f"stalled: no data for {s.read_timeout:g} s (read timeout, MNIST_SOFTMAX_READ_TIMEOUT)", retry=True,
                down=True,
            ) from None
        except urllib3.exceptions.DecodeError as exc:  # the same bytes would fail the same way: no retry
            encoding = response.headers.get("Content-Encoding", "")
            raise MirrorFailed(f"cannot decode the body (Content-Encoding: {encoding}; {_why(exc)})") from None
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            of = f" of {length}" if length is not None else ""
            raise MirrorFailed(f"connection broken after {received}{of} bytes ({_why(exc)})", retry=True) from None


def _copy_local(directory: Path, f: FileSpec, part: DataDirPart) -> tuple[Digest, int]:
    source = find_file(directory, f)
    if source is None:
        raise MirrorFailed(f"neither {f.name} nor {f.raw_name} is there")
    verifier = Verifier(f, name=str(source))
    copied = 0
    try:
        with open(source, "rb") as src:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                verifier.update(chunk)
                part.write(chunk)
    except OSError as exc:
        raise MirrorFailed(f"cannot read {source} ({exc.strerror})") from None
    return verifier.finish(), copied


def _content_length(response, f: FileSpec) -> int | None:
    """The announced body size, if it can be compared with the bytes read (no Content-Encoding)."""
    text = response.headers.get("Content-Length")
    if text is None or not text.strip().isdigit():
        return None
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return None  # urllib3 checks the encoded length itself; we count decoded bytes
    length = int(text)
    if length > f.max_download:
        raise MirrorFailed(f"announces {length} bytes, larger than any genuine copy of {f.name}")
    return length


def _retry_after(text: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay in seconds or an HTTP date); None if absent or bad."""
    if not text:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _why(exc: BaseException) -> str:
    """A short reason from the nested exceptions requests and urllib3 raise (e.g. 'Connection refused')."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if isinstance(e, urllib3.exceptions.IncompleteRead):
            return "the server closed the connection early"
        linked = (*e.args, getattr(e, "reason", None), e.__cause__, e.__context__)
        todo += [a for a in linked if isinstance(a, BaseException)]
    return redact(re.sub(r"<[^>]*>: ", "", str(exc))[:200])

