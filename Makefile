# hwgen: `make demo` and `make test` install what is missing (into .venv), then run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HWGEN := $(VENV)/bin/hwgen
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export OBJCACHE := $(shell command -v ccache >/dev/null 2>&1 && echo ccache)
export PYTHONHASHSEED := 0

.PHONY: install demo test test-fast bench models lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml scripts/install.sh
	@bash scripts/install.sh
	@touch $@

demo: install
	@bash scripts/demo.sh

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m bench.run

models: install
	bash scripts/train_models.sh

clean:
	rm -rf build sim_build .pytest_cache
