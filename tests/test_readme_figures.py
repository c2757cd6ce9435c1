"""Figures and claims of the README and its pages in docs/ that the code can state itself (issue 21, item 7); the
timed ones are measured by hand and name their machine."""

import re
from pathlib import Path

from mnist_cli.data.datasets import MNIST_SPEC
from mnist_cli.data.download import size_text

ROOT = Path(__file__).resolve().parents[1]
# the README and every reference page it links, read as one text (a section may move between them)
README = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_the_announced_download_size_is_the_one_download_announces():
    announced = size_text(sum(f.gz_size or f.size for f in MNIST_SPEC.files))
    quoted = re.findall(r"Downloading MNIST \(4 files, ([0-9.]+ [kM]B)\)", README)
    assert quoted == [announced], (quoted, announced)


def test_mixed_precision_is_named_as_cuda_autocast_everywhere(cli):
    assert "`torch.autocast`'s policy" not in README and "CUDA autocast's policy" in README
    for command in ("train", "compare"):
        text = " ".join(cli(command, "--help", data_dir=None, offline=False, quiet=False).output.split())
        assert "CUDA autocast's policy" in text and "torch.autocast's policy" not in text


def test_timed_figures_name_the_machine_they_were_measured_on():
    for figure in ("~0.8 s more per 10 points", "3.0-3.2 s (idle 2-core Xeon", "6-13 of 10000",
                   "1254 tests in 2 pytest-xdist processes, 84 s on a 2-core Intel Xeon VM"):
        assert figure in README, figure
