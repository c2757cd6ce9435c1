"""Where and how patiently to fetch (:mod:`mnist_cli.data.mirrors`): the order and validation of mirrors,
the fetch settings and ``MNIST_SOFTMAX_OFFLINE``, each wrong value a one-line error naming it."""

from __future__ import annotations

import pytest
from _download import download, routes
from _server import FaultServer

from mnist_cli.data.download import ensure_mnist
from mnist_cli.data.mirrors import FetchSettings, offline_from_env, resolve_mirrors
from mnist_cli.errors import ConfigError
from mnist_cli.options import DATA_DIR_ENV, MIRRORS_ENV, OFFLINE_ENV

pytestmark = pytest.mark.usefixtures("download_env")


# Mirrors ------------------------------------------------------------------------------------------


def test_mirror_order_and_validation(tmp_path):
    env = {MIRRORS_ENV: f"https://env.example/a  {tmp_path}"}
    mirrors = [str(m) for m in resolve_mirrors(["http://mine.example/x"], environ=env)]
    assert mirrors == [
        "http://mine.example/x/",
        "https://env.example/a/",
        str(tmp_path),
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ]
    assert len(resolve_mirrors(["https://ossci-datasets.s3.amazonaws.com/mnist/"], environ={})) == 2
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_mirrors([str(tmp_path / "nope")], environ={})
    with pytest.raises(ConfigError, match="has no host"):
        resolve_mirrors(["http:///x"], environ={})


def test_bad_scheme_is_refused_before_any_request(tmp_path, tiny_mnist, monkeypatch):
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", "ftp://example.com/mnist/", "--mirror", server.url)
        monkeypatch.setenv(MIRRORS_ENV, "gopher://x/")
        from_env = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: Mirror 'ftp://example.com/mnist/' uses the unsupported scheme 'ftp': give an http(s) URL "
        f"or a local directory (--mirror or {MIRRORS_ENV})."
    )
    assert from_env.exit_code == 1 and "'gopher'" in from_env.output


@pytest.mark.parametrize("url, reason", [("http://[bad/", "Invalid IPv6 URL"),
                                         ("https://host:99999/", "Port out of range 0-65535")])
def test_malformed_mirror_url_is_one_line_naming_the_mirror(url, reason, tmp_path, tiny_mnist, monkeypatch):
    flag = download("--data-dir", tmp_path, "--mirror", url)
    monkeypatch.setenv(MIRRORS_ENV, url)
    from_env = download("--data-dir", tmp_path)
    for result in (flag, from_env):
        assert result.exit_code == 1 and not isinstance(result.exception, ValueError), result.output
        assert result.output == f"Error: Mirror {url!r} is not a valid URL ({reason}); fix --mirror or {MIRRORS_ENV}.\n"


def test_unknown_users_home_in_a_mirror_is_one_line(tmp_path, tiny_mnist, monkeypatch):
    bad = "~nosuchuser-mnist/mirror"
    flag = download("--data-dir", tmp_path, "--mirror", bad)
    monkeypatch.setenv(MIRRORS_ENV, bad)
    from_env = download("--data-dir", tmp_path)
    for result in (flag, from_env):
        assert result.exit_code == 1 and not isinstance(result.exception, RuntimeError), result.output
        assert result.output == (f"Error: Cannot find the home directory of '~nosuchuser-mnist' in {bad!r}; "
                                 f"give a full path with --mirror or {MIRRORS_ENV}.\n")


# Fetch settings and the environment ---------------------------------------------------------------


def test_library_and_cli_agree_on_variable_names():
    from mnist_cli.data import directory, download

    assert (directory.DATA_DIR_ENV, download.MIRRORS_ENV, download.OFFLINE_ENV) == (DATA_DIR_ENV, MIRRORS_ENV, OFFLINE_ENV)


def test_fetch_settings_from_env():
    assert FetchSettings.from_env({"MNIST_SOFTMAX_RETRIES": "5", "MNIST_SOFTMAX_DEADLINE": "2.5"}) == FetchSettings(
        retries=5, deadline=2.5
    )
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ConfigError, match=f"MNIST_SOFTMAX_READ_TIMEOUT='{bad}'"):
            FetchSettings.from_env({"MNIST_SOFTMAX_READ_TIMEOUT": bad})


@pytest.mark.parametrize("var, text", [
    ("MNIST_SOFTMAX_READ_TIMEOUT", "0"), ("MNIST_SOFTMAX_CONNECT_TIMEOUT", "0"), ("MNIST_SOFTMAX_CONNECT_TIMEOUT", "inf"),
    ("MNIST_SOFTMAX_READ_TIMEOUT", "1e300"), ("MNIST_SOFTMAX_DEADLINE", "0"), ("MNIST_SOFTMAX_DEADLINE", "inf"),
    ("MNIST_SOFTMAX_BACKOFF", "-0.1"), ("MNIST_SOFTMAX_BACKOFF", "inf"), ("MNIST_SOFTMAX_BACKOFF_MAX", "1e300"),
    ("MNIST_SOFTMAX_RETRIES", "-1"), ("MNIST_SOFTMAX_RETRIES", "1e9"), ("MNIST_SOFTMAX_RETRIES", "1000000"),
])
def test_unusable_fetch_setting_is_one_line_naming_the_variable(var, text, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(var, text)
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
        assert sum(server.hits.values()) == 0
    assert result.exit_code == 1 and not isinstance(result.exception, (ValueError, OverflowError)), result.output
    assert result.output.startswith(f"Error: {var}={text!r}: must be ") and result.output.endswith("; fix or unset it.\n")
    assert len(result.output.splitlines()) == 1


def test_fetch_settings_bounds():
    assert FetchSettings.from_env({"MNIST_SOFTMAX_BACKOFF": "0", "MNIST_SOFTMAX_RETRIES": "0"}).backoff == 0
    assert FetchSettings.from_env({"MNIST_SOFTMAX_DEADLINE": "86400"}).deadline == 86400
    with pytest.raises(ConfigError, match=r"FetchSettings\(read_timeout=0\): must be a number of seconds, more than 0"):
        FetchSettings(read_timeout=0)
    with pytest.raises(ConfigError, match="retries"):
        FetchSettings(retries=2.5)


def test_lock_timeout_is_a_patience_setting():
    assert FetchSettings().lock_timeout == 600
    assert FetchSettings.from_env({"MNIST_SOFTMAX_LOCK_TIMEOUT": "5"}).lock_timeout == 5
    with pytest.raises(ConfigError, match="MNIST_SOFTMAX_LOCK_TIMEOUT='forever'"):
        FetchSettings.from_env({"MNIST_SOFTMAX_LOCK_TIMEOUT": "forever"})


def test_bad_offline_variable_is_a_config_error(tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "maybe")
    with pytest.raises(ConfigError, match=OFFLINE_ENV):
        ensure_mnist(tmp_path)


OFFLINE_TEXTS = {"1": True, "0": False, "true": True, "FALSE": False, "Yes": True, "no": False, "y": True, "N": False,
                 "t": True, "F": False, "on": True, "OFF": False, " yes ": True, "": False}


@pytest.mark.parametrize("text", [*OFFLINE_TEXTS, "maybe", "2"])
def test_offline_variable_means_the_same_to_the_library_and_the_cli(text, tmp_path, tiny_mnist, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, text)
    with FaultServer(routes(tiny_mnist)) as server:
        result = download("--data-dir", tmp_path, "--mirror", server.url)
    if text not in OFFLINE_TEXTS:
        with pytest.raises(ConfigError, match=f"{OFFLINE_ENV}={text!r} is not a boolean; use 1 or 0"):
            offline_from_env()
        assert result.exit_code == 2 and f"env var: '{OFFLINE_ENV}'" in result.output, result.output
    elif OFFLINE_TEXTS[text]:
        assert offline_from_env() is True
        assert result.exit_code == 1 and "forbids downloading" in result.output, result.output
    else:
        assert offline_from_env() is False
        assert result.exit_code == 0 and "4 downloaded" in result.output, result.output
