"""What to download, as data: the files of a dataset, their pinned sizes and checksums, and its mirrors.

    >>> from mnist_cli.data.datasets import MNIST_SPEC
    >>> [f.name for f in MNIST_SPEC.files][:2]
    ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']

A file counts as genuine when its *decompressed* content has the pinned ``size`` and ``sha256``: every
mirror serves the same content, while the compressed bytes may differ (a mirror, or the shared copy,
may have recompressed a file). The compressed size and hashes are kept where known, to report
whether a download is byte-identical to the files the public mirrors serve.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its name on the mirrors and the pinned facts about its content."""

    name: str  # name on the mirrors, e.g. "train-images-idx3-ubyte.gz"
    role: str  # which array it holds: "train_images", "train_labels", "test_images" or "test_labels"
    size: int  # bytes of the decompressed IDX content
    sha256: str  # SHA-256 of the decompressed IDX content: the authority
    gz_size: int | None = None  # bytes of the .gz the public mirrors serve, where known
    gz_sha256: str | None = None  # SHA-256 of that .gz, where known
    gz_md5: str | None = None  # MD5 of that .gz (what torchvision pins), where known

    @property
    def raw_name(self) -> str:
        """The name of the decompressed file (``train-images-idx3-ubyte``), also accepted on disk."""
        return self.name.removesuffix(".gz")

    @property
    def max_download(self) -> int:
        """The most bytes a genuine copy can take on the wire: raw size plus generous gzip overhead.

        A body larger than this is refused without reading it all (an endless or oversized response).
        """
        return self.size + self.size // 100 + 64 * 1024


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its four IDX files and the base URLs that serve them, tried in order."""

    name: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]
    title: str = ""  # a declared dataset's name in reports ("verified Fashion-MNIST"); "" for a stand-in
    classes: tuple[str, ...] = tuple(str(d) for d in range(10))  # label -> the class's name in reports

    @property
    def label(self) -> str:
        """How the download report names the files: the title, else the name in capitals."""
        return self.title or self.name.upper()

    def file(self, role: str) -> FileSpec:
        """The file holding ``role`` (e.g. ``"train_images"``)."""
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(role)


ROLES = ("train_images", "train_labels", "test_images", "test_labels")

MNIST_SPEC = DatasetSpec(
    name="mnist",
    title="MNIST",
    files=(
        FileSpec(
            name="train-images-idx3-ubyte.gz",
            role="train_images",
            size=47040016,
            sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            gz_size=9912422,
            gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        FileSpec(
            name="train-labels-idx1-ubyte.gz",
            role="train_labels",
            size=60008,
            sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            gz_size=28881,
            gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
        ),
        FileSpec(
            name="t10k-images-idx3-ubyte.gz",
            role="test_images",
            size=7840016,
            sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            gz_size=1648877,
            gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            gz_md5="9fb629c4189551a2d022fa330f9573f3",
        ),
        FileSpec(
            name="t10k-labels-idx1-ubyte.gz",
            role="test_labels",
            size=10008,
            sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            gz_size=4542,
            gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    # yann.lecun.com no longer serves the files.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

# Class counts of the genuine files: a sanity check for tests and for anyone re-deriving the pins.
MNIST_TRAIN_CLASS_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


FASHION_MNIST_SPEC = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    # Zalando Research's fashion-mnist README, label order
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
             "Ankle boot"),
    # Sizes and SHA-256 of the decompressed files: computed here from Debian's dataset-fashion-mnist
    # 0.0~git20200523.55506a9-1 (`apt-get download dataset-fashion-mnist`, /usr/share/datasets/fashion-mnist/).
    # Debian recompressed the .gz files (24 bytes smaller than the publisher's), so only the content is
    # pinned; gz_md5 is the publisher's (its README and torchvision's FashionMNIST), for reference.
    files=(
        FileSpec(
            name="train-images-idx3-ubyte.gz",
            role="train_images",
            size=47040016,
            sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        FileSpec(
            name="train-labels-idx1-ubyte.gz",
            role="train_labels",
            size=60008,
            sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            gz_md5="25c81989df183df01b3e8a0aad5dffbe",
        ),
        FileSpec(
            name="t10k-images-idx3-ubyte.gz",
            role="test_images",
            size=7840016,
            sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            gz_md5="bef4ecab320f06d8554ea6380940ec79",
        ),
        FileSpec(
            name="t10k-labels-idx1-ubyte.gz",
            role="test_labels",
            size=10008,
            sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            gz_md5="bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    # the two places the publisher's README names: its S3 bucket and the repository's data/fashion folder
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
)


def dataset_spec(name: str) -> DatasetSpec:
    """The declared dataset called ``name`` (one of :data:`mnist_cli.settings.DATASET_NAMES`)."""
    return {"mnist": MNIST_SPEC, "fashion-mnist": FASHION_MNIST_SPEC}[name]  # looked up now: tests replace them
