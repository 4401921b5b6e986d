# Every target bootstraps the local virtualenv on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test thorough lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

CONFIG ?= algo/spot-future-arb/config.json

# Until the worker runtime and hub land, `make run` checks the config and runs the simulator.
run: $(STAMP)
	@echo "arbhub so far: the strategy core, the configuration check and the exchange simulator."
	@echo "Not built yet: the worker runtime, the hub and its /arb page (nothing trades yet)."
	@for id in $$($(BIN)/python -c "from worker.config_loader import load_config; \
	    print(' '.join(load_config('$(CONFIG)').ids))"); do \
	  $(BIN)/spot-future-arb --config $(CONFIG) --instance $$id --check > /dev/null \
	    && echo "  $$id: configuration valid ($(CONFIG))" || exit 2; \
	done
	@echo "Starting the exchange simulator (Bybit V5 REST + WebSocket; Ctrl-C stops it):"
	$(BIN)/exchange-sim --host 127.0.0.1 --port 0 --seed 1 \
	  --config algo/spot-future-arb/sim.json --state algo/spot-future-arb/run/sim-state

test: $(STAMP)
	$(BIN)/python -m pytest -n auto

# The core's property tests with fresh random examples (2000 each; several minutes).
thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -n auto tests/unit/test_core_properties.py \
	  tests/unit/test_core_fast_path.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.core
	$(BIN)/python -m bench.sim

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
