"""One-off timing of the cache's CRC-32 check at load (issue 21 item 15): prints, asserts nothing.

    .venv/bin/python scripts/bench_cache_crc.py DATA_DIR
"""

import sys
import time

from mnist_cli.data import load_mnist
from mnist_cli.data.load import content_crc


def best(fn, n: int = 7) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


data_dir = sys.argv[1]
d = load_mnist(data_dir, offline=True)  # cached (and stamped with CRCs) from here on
arrays = [d.train_images, d.train_labels, d.test_images, d.test_labels]
mb = sum(a.nbytes for a in arrays) / 1e6
crc = best(lambda: [content_crc(a) for a in arrays])
load = best(lambda: load_mnist(data_dir, offline=True))
print(f"CRC-32 of the four cached arrays ({mb:.1f} MB): {crc * 1e3:.1f} ms; a whole cached load_mnist: "
      f"{load * 1e3:.1f} ms (best of 7)")
