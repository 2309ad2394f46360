# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed

.PHONY: demo test unit cluster lint bench clean redis-server fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# The head-restart tests run a real redis-server (Debian's package).
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing redis-server (Debian package) for the head-restart tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null \
	  || echo "could not install redis-server: the head-restart tests will fail until it is installed"; }

test: $(TEST_STAMP) redis-server
	$(PY) -m ruff check .
	$(PY) -m mypy manta --ignore-missing-imports
	$(PY) -m pytest tests -q -p no:cacheprovider

unit: $(TEST_STAMP)
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

cluster: $(TEST_STAMP)
	$(PY) -m pytest tests/cluster -q -p no:cacheprovider

lint: $(TEST_STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy manta --ignore-missing-imports

# The full fuzz run (make test runs a 3,000-frame slice); RELIABILITY.md has its figures.
FUZZ_FRAMES ?= 200000
fuzz: $(TEST_STAMP)
	MANTA_FUZZ_FRAMES=$(FUZZ_FRAMES) MANTA_FUZZ_REPORT=fuzz.json $(PY) -m pytest tests/security/test_dos_fuzz.py -s -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/microbench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
