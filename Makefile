# Set-up and the two everyday jobs. Every target creates or refreshes the local venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build on the project's machines (constraints.txt).
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(PY) -m ruff check src tests benchmarks

test: venv lint
	$(PY) -m pytest -q

# train -> backtest (validation and test splits) -> report, on the bundled S&P 500 data.
demo: venv
	@set -e; \
	run=$$($(VENV)/bin/tradingbot train --config configs/demo.yaml | tee /dev/stderr \
	       | sed -n 's/^run directory: //p'); \
	$(VENV)/bin/tradingbot backtest "$$run" --split validation; \
	$(VENV)/bin/tradingbot backtest "$$run" --split test; \
	$(VENV)/bin/tradingbot report "$$run"

bench: venv
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
