# Entry points that do all the set-up on a fresh machine:
#   make demo   -- create .venv, install, fetch MNIST and run `mnist-softmax compare`
#   make test   -- create .venv, install with test extras, run the test suite (in two processes)
#   make lint   -- ruff (configured in pyproject.toml) over the package, the tests and the scripts
#   make bench  -- scripts/bench.py: the performance figures (BENCH_FLAGS=--quick, --json, --contended)
#   make crosscheck -- the tests marked torch; scripts/probe_frameworks.py --check (the profiles still match the
#                      installed frameworks); scripts/crosscheck.py: losses against PyTorch and TensorFlow, each
#                      with its profile, training against PyTorch and TensorFlow; the tests marked sklearn
#   make mutation -- scripts/mutation.py: a sampled cosmic-ray run over the core modules (not in CI; MUTATION_FLAGS)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/mnist-softmax
# A local copy of MNIST, used as the first mirror when it exists (offline machines, CI).
LOCAL_MNIST ?= $(wildcard ../shared/datasets/mnist)
MIRROR_FLAGS := $(if $(LOCAL_MNIST),--mirror $(LOCAL_MNIST),)

.PHONY: demo test examples lint smoke bench crosscheck mutation clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m compileall -q mnist_cli  # an editable install has no .pyc, and PYTHONDONTWRITEBYTECODE=1 keeps it so
	touch $@

demo: $(VENV)/.installed
	$(CLI) download $(MIRROR_FLAGS)
	$(CLI) compare $(MIRROR_FLAGS)

# two pytest-xdist workers (CI has 2 cores); worksteal: each starts on a contiguous half of the tests (a file's module
# fixtures built in one worker, mostly) and takes tests from the other's queue when its own is empty
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not examples"

examples: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist worksteal -m examples

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check mnist_cli tests scripts

smoke: $(VENV)/.installed
	$(CLI) compare --smoke $(MIRROR_FLAGS)

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]' 'torch==2.13.0'
	$(PY) scripts/bench.py $(BENCH_FLAGS)

# torch 2.13.0 and tensorflow-cpu 2.21.0 only: both install from this machine's local package mirror (any other
# torch version pulls a CUDA build); the profiles in mnist_cli/frameworks.py were measured with these versions.
# Measured on 2 cores: install ~1-2 min the first time, probes ~65 s, loss level ~75 s (torch) + ~190 s
# (tensorflow), training level ~90 s.
crosscheck: $(VENV)/.installed
	$(PY) -m pip install -q 'torch==2.13.0' 'tensorflow-cpu==2.21.0' 'scikit-learn>=1.4'
	$(PY) -m pytest -q -m torch
	$(PY) -m pytest -q -m sklearn
	$(PY) scripts/probe_frameworks.py --check > /dev/null
	$(PY) scripts/crosscheck.py

# each scope of tests/mutation/scopes.toml against its own tests, in a copy of the tree (.mutation/); ~25 min
mutation: $(VENV)/.installed
	$(PY) -m pip install -q 'cosmic-ray==8.7.0'
	$(PY) scripts/mutation.py $(MUTATION_FLAGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mutation
