"""Time getting MNIST ready: a cold download+verify from a loopback server, then cached loads.

    python scripts/bench_data.py            # readable
    python scripts/bench_data.py --json     # one JSON document

The four shared files (``../shared/datasets/mnist`` beside the repository, or
``$MNIST_SOFTMAX_TEST_DATA``, or ``--source``) are served by a throw-away HTTP server on 127.0.0.1
and fetched into a fresh temporary data directory through the real code path
(:func:`mnist_cli.data.download.ensure_mnist`). Cached loads run :func:`mnist_cli.data.load_mnist` in
fresh processes, as ``train`` would.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_SOURCE = Path(os.environ.get("MNIST_SOFTMAX_TEST_DATA")
                      or Path(__file__).resolve().parents[2] / "shared/datasets/mnist")

# Run in a fresh process: the time of load_mnist alone, and of the whole process up to that point.
_CACHED_LOAD = """
import json, sys, time
t0 = time.perf_counter()
from mnist_cli.data import load_mnist
t1 = time.perf_counter()
m = load_mnist(sys.argv[1], offline=True)
t2 = time.perf_counter()
print(json.dumps({"load": t2 - t1, "import_and_load": t2 - t0, "verified": m.verified}))
"""


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(directory: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def bench(source: Path, repeat: int) -> dict:
    from mnist_cli.data import load_mnist
    from mnist_cli.data.download import ensure_mnist  # imported before timing: a one-off ~0.2 s
    from mnist_cli.report.download import format_download

    server = _serve(source)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    cold, first_load, cached, process = [], [], [], []
    try:
        for _ in range(repeat):
            with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
                t = time.perf_counter()
                report = ensure_mnist(tmp, mirrors=[url])
                cold.append(time.perf_counter() - t)
                if not (report.verified and len(report.downloaded) == 4):
                    raise SystemExit(f"download did not verify: {format_download(report.to_dict())}")
                t = time.perf_counter()
                load_mnist(tmp, offline=True)
                first_load.append(time.perf_counter() - t)
                for _ in range(3):
                    out = subprocess.run([sys.executable, "-c", _CACHED_LOAD, tmp], capture_output=True, check=True)
                    result = json.loads(out.stdout)
                    cached.append(result["load"])
                    process.append(result["import_and_load"])
    finally:
        server.shutdown()
        server.server_close()
    return {
        "source": str(source),
        "bytes": report.bytes_fetched,
        "repeat": repeat,
        "cold_download_verify_s": _stats(cold),
        "first_load_decode_and_cache_s": _stats(first_load),
        "cached_load_s": _stats(cached),
        "cached_import_and_load_s": _stats(process),
    }


def _stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def _format(result: dict) -> str:
    rows = [
        ("cold download + verify (loopback)", "cold_download_verify_s"),
        ("first load (decode gz, write .npy cache)", "first_load_decode_and_cache_s"),
        ("cached load (load_mnist only)", "cached_load_s"),
        ("cached load incl. imports (fresh process)", "cached_import_and_load_s"),
    ]
    lines = [f"MNIST from {result['source']} ({result['bytes'] / 1e6:.1f} MB over loopback), {result['repeat']} rounds"]
    for label, key in rows:
        s = result[key]
        lines.append(f"  {label:<44} median {s['median'] * 1e3:7.1f} ms   min {s['min'] * 1e3:7.1f} ms   (n={s['n']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Directory holding the four MNIST files.")
    parser.add_argument("--repeat", type=int, default=3, help="Cold downloads to time (each followed by 3 cached loads).")
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args()
    result = bench(args.source, args.repeat)
    print(json.dumps(result, indent=2) if args.json else _format(result))


if __name__ == "__main__":
    main()
