# Every target bootstraps the local virtualenv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser

.PHONY: install run test thorough chaos lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The browser tier needs Debian's chromium + chromium-driver; the script is a no-op when present.
$(BROWSER_STAMP): scripts/install_browser.sh | $(STAMP)
	@bash scripts/install_browser.sh
	@touch $(BROWSER_STAMP)

CONFIG ?= algo/spot-future-arb/config.json

# The hub in the foreground with the shipped demo (venue sim, three rows); Ctrl-C stops the
# fleet, then the simulator.
run: $(STAMP)
	$(BIN)/hub --config $(CONFIG) serve --all

test: $(STAMP) $(BROWSER_STAMP)
	$(BIN)/python -m pytest -n auto

# The core's property tests with fresh random examples (2000 each; several minutes).
thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -n auto tests/unit/test_core_properties.py \
	  tests/unit/test_core_fast_path.py

# SIGKILL the worker at 200 randomized points of its cycles, restart it, check the recovery
# (no fill lost or counted twice, positions equal the simulator's, no orderLinkId sent twice).
chaos: $(STAMP)
	$(BIN)/python -m tests.integration.chaos --points 200

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.core
	$(BIN)/python -m bench.sim
	$(BIN)/python -m bench.worker
	$(BIN)/python -m bench.hub

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
