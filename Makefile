# Two entry points: `make demo` (the whole loop on embedded defaults) and `make test` (the suite).
# Both build the virtualenv from nothing, so a fresh clone needs no other step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench services-up services-down clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dcflex demo $(DEMO_ARGS)

test: $(STAMP) lint
	scripts/services.sh up
	status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; scripts/services.sh down; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check gateway adapters simulators tests benchmarks
	$(BIN)/mypy gateway

bench: $(STAMP)
	$(BIN)/python -m benchmarks.planner_bench
	$(BIN)/python -m benchmarks.event_latency_bench
	$(BIN)/python -m benchmarks.slurm_parse_bench
	$(BIN)/python -m benchmarks.jobside_bench
	scripts/services.sh up
	status=0; $(BIN)/python -m benchmarks.tsdb_bench && $(BIN)/python -m benchmarks.mqtt_bench || status=$$?; scripts/services.sh down; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-report.json demo-report.png
