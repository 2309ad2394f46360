# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.test-installed
# The test environment, pinned with hashes: `make lock` writes it from
# pyproject.toml's dependencies and test extras (and the build backend).
LOCK := requirements/test.lock
# What the container image (deploy/docker/Dockerfile) installs: manta's own
# dependencies and the build backend, without the test tools.
RUNTIME_LOCK := requirements/runtime.lock
UV_VERSION := 0.13.9
# The checkout goes on sys.path by a .pth line, as an installed package would
# be found: setuptools' default editable finder costs every process (head,
# agent, fork server, each worker) 20 ms and 1 MB at start (-X importtime).
# compileall: a process then never compiles manta at start, even where
# PYTHONDONTWRITEBYTECODE keeps it from caching what it compiled (0.4 s of
# init() in such a shell).
EDITABLE := --config-settings editable_mode=compat

.PHONY: demo test unit cluster lint bench clean redis-server chromium lock fuzz dashboard

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e . $(EDITABLE)
	$(PY) -m compileall -q manta
	touch $(STAMP)

# Everything from the lock, each file checked against its hash; then manta
# itself, built with the locked setuptools (no build isolation, which would
# fetch an unpinned one) and without resolving anything more.
$(TEST_STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --no-deps --no-build-isolation -e . $(EDITABLE)
	$(PY) -m compileall -q manta
	touch $(TEST_STAMP)

# uv resolves; it is a tool of this target only, installed (pinned) beside
# the project's packages and never one of its dependencies.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(VENV)/bin/uv || PYTHONWARNINGS=ignore $(PY) -m pip install --quiet 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --extra test --generate-hashes \
	  --universal --python-version 3.11 --custom-compile-command 'make lock' --quiet -o $(LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/build.in --generate-hashes \
	  --universal --python-version 3.11 --custom-compile-command 'make lock' --quiet -o $(RUNTIME_LOCK)

demo: $(STAMP)
	$(PY) examples/quickstart.py

# The head-restart tests run a real redis-server (Debian's package).
redis-server:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing redis-server (Debian package) for the head-restart tests"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null \
	  || echo "could not install redis-server: the head-restart tests will fail until it is installed"; }

# The dashboard's browser test (tests/cluster/test_dashboard_browser.py) drives Debian's Chromium:
# installed here when missing; the test says why it skips if it cannot be.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  echo "installing chromium (Debian package) for the dashboard's browser test"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	  || echo "could not install chromium: the dashboard's browser test will skip"; }

# Rebuilds the dashboard's chart bundle (uPlot, with its license) into the
# package from dashboard/package-lock.json; the output is committed.
dashboard:
	cd dashboard && npm ci --no-audit --no-fund && node build.mjs

test: $(TEST_STAMP) redis-server chromium
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
