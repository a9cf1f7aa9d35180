# hwgen: `make demo` and `make test` install what is missing (into .venv), then run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HWGEN := $(VENV)/bin/hwgen
STAMP := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export OBJCACHE := $(shell command -v ccache >/dev/null 2>&1 && echo ccache)
export PYTHONHASHSEED := 0

.PHONY: install browser demo test test-fast bench impl models lint clean

install: $(STAMP)

# Chromium for the report's headless screenshot test (the tests skip it when no browser can be installed)
browser: $(BROWSER_STAMP)

$(BROWSER_STAMP): scripts/install.sh | $(STAMP)
	@bash scripts/install.sh --browser
	@touch $@

$(STAMP): requirements.txt pyproject.toml setup.py scripts/install.sh
	@bash scripts/install.sh
	@touch $@

demo: install
	@bash scripts/demo.sh

# Two workers (the machines have two cores), each taking whole test files so a module's fixtures are built once
test: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check hwgen sim tests bench

bench: install
	$(PY) -m bench.run

# The open flow (hwgen impl: Yosys, nextpnr, packer) on the shipped W8 model: ULX3S 25F (ECP5) and
# iCEBreaker (iCE40 UP5K). The iCE40 step reports that the reference model does not fit the UP5K (its
# rescale multipliers alone take more SB_MAC16 than the part has) and make goes on.
impl: install
	$(HWGEN) build models/pm25_w8.pt --board ulx3s_25f --parallel auto --no-eval --out build/impl-ulx3s_25f
	$(HWGEN) impl build/impl-ulx3s_25f
	$(HWGEN) build models/pm25_w8.pt --board icebreaker --parallel 1 --force --no-eval --out build/impl-icebreaker
	-$(HWGEN) impl build/impl-icebreaker

models: install
	bash scripts/train_models.sh

clean:
	rm -rf build sim_build .pytest_cache
