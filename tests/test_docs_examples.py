"""Every shell example of README.md and docs/*.md runs as written (issue 21, item 17).

What is an example: a fenced block marked ``sh`` (every line a command; ``#`` comments, ``\\`` continuations and
multi-line loops allowed) or ``console`` (a transcript: ``$ CMD`` and its continuation lines are a command, the lines
after it its output). Other fences (``text``, ``python``, plain) hold output or schemas and are not run.

A page runs top to bottom in a fresh directory of its own, as a reader in the checkout runs it, each command in a
shell of its own: ``mnist-softmax`` and ``python`` are this environment's (``PATH`` starts with its ``bin``),
``scripts/`` is the checkout's and ``../shared/datasets/mnist`` the local MNIST (links), ``MNIST_SOFTMAX_DATA_DIR`` a
data directory the examples may change, ``MNIST_SOFTMAX_MIRRORS`` the local MNIST and ``MNIST_SOFTMAX_OFFLINE=1``: no
example reaches the network, and nothing is written beside the real MNIST. A command must exit 0 with no ``Error:``
line and no traceback, unless its transcript shows ``Error:``: then it must print that error line (and, where the
transcript shows ``exit N``, that exit); a comment ``# exit N`` after an sh line declares its exit status likewise.
Output figures are not compared (they are one machine's rounding); the pages name their machine.

Not run, and checked instead: a ``make TARGET`` line names a target of the Makefile (it installs, or runs this suite
itself); a block after a line ``<!-- not run: REASON -->`` (it installs, needs the network or a package that is no
dependency) is listed in ``NOT_RUN`` by its first command, so a new one is a decision. Every ``mnist-softmax
COMMAND --flag`` of every block, run or not, names an option COMMAND has.

One shortening, by rule (``shortened``): a ``compare`` that does not choose its length (no ``--steps``, ``--smoke``,
``--check`` or ``--train-limit``) runs ``--steps 200 --train-limit 5000`` here (every break the pages show happens by
step 56; the full default ``compare`` is ``make smoke``'s and the compare tests' to run). Nothing else is changed.
The quick test runs the pages whose examples take seconds; the rest (12-30 epoch runs, sweeps, half precision: ~80 s
of CPU, as much as the rest of the suite) is ``@pytest.mark.slow`` and ``examples``: ``make examples`` runs them
(``.ci/run`` does, after ``make test``, which leaves them out).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mnist_cli.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```(\w*)\s*$")
NOT_RUN_MARK = re.compile(r"^<!-- not run: (.+) -->$")
# The blocks left out on purpose, by page and first command (the reason is the page's own marker).
NOT_RUN = {
    ("README.md", "python3 -m venv .venv && .venv/bin/pip install -e ."),
    ("docs/crosscheck.md", "make crosscheck"),
    ("docs/development.md", "make test"),
    ("docs/download.md", "mnist-softmax download --dataset fashion-mnist --mirror "
                         "/tmp/fmnist-deb/usr/share/datasets/fashion-mnist --data-dir fdata --quiet | sed -n '1p;$p'"),
    ("docs/json.md", "mnist-softmax compare --lr 0.1:10:log5 --input-scale 1,16,255 --dtype float32,float64 "
                     "--seeds 0,1,2 --json |"),
}
# Pages run in the quick suite (seconds); the others under `-m examples` (`make examples`, in CI).
QUICK = {"README.md", "docs/predict.md", "docs/download.md", "docs/json.md"}


@dataclass
class Example:
    page: str
    line: int  # where the command starts (1-based)
    command: str
    output: list[str]  # the transcript's lines after it ([] in an sh block)
    run: bool
    first: bool  # the first command of its block


def _complete(text: str) -> bool:
    """Whether bash reads ``text`` as whole commands (no open quote, loop or trailing ``\\`` / ``|``)."""
    if text.endswith("\\"):
        return False
    return subprocess.run(["bash", "-n", "-c", text], capture_output=True).returncode == 0


def examples(page: Path) -> list[Example]:
    """The page's commands in order, each with its shown output."""
    lines = page.read_text().splitlines()
    name = page.relative_to(ROOT).as_posix()
    found: list[Example] = []
    i, marked = 0, False
    while i < len(lines):
        if NOT_RUN_MARK.match(lines[i]):
            marked = True
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent = fence[1]
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(indent + "```"))
        kind, first = fence[2], len(found)
        body = [line.removeprefix(indent) for line in lines[i + 1:end]]
        j = 0
        while kind in ("sh", "console") and j < len(body):
            line = body[j]
            if kind == "console" and not line.startswith("$ "):
                if found[first:]:
                    found[-1].output.append(line)
                j += 1
                continue
            if kind == "sh" and (not line.strip() or line.lstrip().startswith("#")):
                j += 1
                continue
            start, text = j, line[2:] if kind == "console" else line
            while not _complete(text) and j + 1 < len(body):
                j += 1
                text += "\n" + body[j]
            found.append(Example(name, i + 2 + start, text, [], not marked, len(found) == first))
            j += 1
        if marked and kind in ("sh", "console"):
            assert found[first:], f"{name}:{i + 1}: a not-run marker before a block with no command"
            marked = False
        i = end + 1
    return found


ALL = [e for page in PAGES for e in examples(page)]


def _invocations(command: str):
    """Each ``mnist-softmax ...`` inside a command line: its words up to the next shell operator."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    for k, word in enumerate(words):
        if word == "mnist-softmax":
            args = []
            for w in words[k + 1:]:
                if w and set(w) <= set("|&;<>()"):
                    break
                args.append(w)
            yield args


SHORTEN = ("--steps", "200", "--train-limit", "5000")


def shortened(command: str) -> str:
    """The command the test runs for a page's ``command``: the rule in the module's docstring."""
    if re.search(r"--(steps|smoke|check|train-limit)\b", command):
        return command
    return re.sub(r"\bmnist-softmax compare\b", "mnist-softmax compare " + " ".join(SHORTEN), command)


def _options(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}


def _head(command: str) -> str:
    """A command's first line without its trailing comment: how ``NOT_RUN`` names a block."""
    return re.sub(r"\s+#.*", "", command.split("\n")[0])


def test_the_pages_hold_examples_and_every_not_run_block_is_listed():
    assert len(ALL) > 60 and {e.page for e in ALL} >= {"README.md", "docs/train.md", "docs/compare.md"}
    assert {p.relative_to(ROOT).as_posix() for p in PAGES} >= QUICK
    marked = {(e.page, _head(e.command)) for e in ALL if not e.run and e.first}
    assert marked == NOT_RUN, (f"marked not run, not listed: {sorted(marked - NOT_RUN)}; "
                               f"listed, not marked (or gone): {sorted(NOT_RUN - marked)}")


def test_every_flag_in_the_examples_exists():
    """``mnist-softmax COMMAND --flag``: COMMAND is a command and has the flag (every block, run or not)."""
    wrong = []
    for e in ALL:
        for args in _invocations(e.command):
            command = main.commands.get(args[0]) if args and not args[0].startswith("-") else main
            if command is None:
                wrong.append((e.page, e.line, args[0]))
                continue
            for word in args:
                flag = word.split("=", 1)[0]
                if flag.startswith("-") and flag != "-" and not re.fullmatch(r"-\d.*", flag) \
                        and flag not in _options(command):
                    wrong.append((e.page, e.line, flag))
    assert wrong == []


def test_the_shortening_rule_touches_only_compare_and_keeps_its_flags_valid():
    assert shortened("mnist-softmax compare --plot m.png | head") == \
        "mnist-softmax compare --steps 200 --train-limit 5000 --plot m.png | head"
    assert shortened("mnist-softmax compare --smoke") == "mnist-softmax compare --smoke"
    assert shortened("mnist-softmax train --lr 5") == "mnist-softmax train --lr 5"
    assert set(SHORTEN[::2]) <= _options(main.commands["compare"])


def test_every_make_line_names_a_target():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = {m for e in ALL for m in re.findall(r"(?:^|&& |; )\s*(?:\w+=\S+ )*make (\w[\w-]*)", e.command)}
    assert named and named <= targets, named - targets


@pytest.fixture(scope="module")
def docs_data(tmp_path_factory, shared_mnist_dir):
    """A data directory for the pages, filled from the local MNIST through the real download (verified, cached)."""
    from mnist_cli.data import load_mnist

    data = tmp_path_factory.mktemp("docs-data")
    load_mnist(data, mirrors=[str(shared_mnist_dir)], offline=True)
    return data


def _run_page(page: str, tmp_path: Path, data: Path, shared: Path):
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    (tmp_path / "shared" / "datasets" / "mnist").symlink_to(shared)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNIST_SOFTMAX_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", MNIST_SOFTMAX_DATA_DIR=str(data),
               MNIST_SOFTMAX_MIRRORS=str(shared), MNIST_SOFTMAX_OFFLINE="1", COLUMNS="100")
    for e in [e for e in ALL if e.page == page and e.run]:
        if re.match(r"(\w+=\S+ )*make ", e.command):
            continue  # checked by test_every_make_line_names_a_target
        proc = subprocess.run(["bash", "-c", shortened(e.command)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=900, stdin=subprocess.DEVNULL)
        said = proc.stdout + proc.stderr
        where = f"{e.page}:{e.line}: {e.command}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        assert "Traceback" not in said, where
        shows_error = any(line.startswith("Error:") for line in e.output)
        errors = [line for line in said.splitlines() if line.startswith("Error:")]
        if shows_error:
            assert errors, where
            exits = [line for line in e.output if re.fullmatch(r"exit \d+", line)]
            if exits:
                assert exits[-1] in said.splitlines(), where
            elif not e.command.rstrip().endswith(("| cat", "2>&1")):
                assert proc.returncode != 0, where
        elif declared := re.search(r"#\s*exit (\d+)\b", e.command.split("\n")[0]):
            assert proc.returncode == int(declared[1]) and proc.stderr.strip(), where
        else:
            assert proc.returncode == 0 and not errors, where
    assert (data / "train-images-idx3-ubyte.gz").is_file()  # the shared copy was only read
    assert not (shared / ".mnist-softmax").exists(), "an example wrote into the local MNIST"


@pytest.mark.parametrize("page", sorted(QUICK))
def test_quick_pages_run_as_written(page, tmp_path, docs_data, shared_mnist_dir):
    _run_page(page, tmp_path, docs_data, shared_mnist_dir)


@pytest.mark.slow
@pytest.mark.examples
@pytest.mark.parametrize("page", sorted({p.relative_to(ROOT).as_posix() for p in PAGES} - QUICK))
def test_long_pages_run_as_written(page, tmp_path, docs_data, shared_mnist_dir):
    _run_page(page, tmp_path, docs_data, shared_mnist_dir)


def test_jq_is_there_for_the_pages_that_use_it():
    """Some examples pipe into jq; the machine must have it (``apt-get install jq``) or they cannot be checked."""
    if any("| jq" in e.command for e in ALL if e.run):
        assert shutil.which("jq"), "jq is not installed: apt-get install jq"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_page_is_linked_from_the_readme_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    assert {p.name for p in PAGES[1:]} <= set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.is_file() or (anchor and anchor not in _anchors(file)):
                broken.append((page.relative_to(ROOT).as_posix(), target))
    assert broken == []
