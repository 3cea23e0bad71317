# Two entry points: `make demo` (the whole loop on embedded defaults) and `make test` (the suite).
# Both build the virtualenv from nothing, so a fresh clone needs no other step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(BIN)/uv

# Every Python package comes from uv.lock (exact versions, sha256 hashes checked by uv). uv itself comes from
# requirements/uv.txt, exported from the same lock, hash-checked by pip. The build backend (setuptools) is in the
# lock's `build` group and the project is built without isolation, so nothing is installed unhashed.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS    := never
SYNC := $(UV) sync --frozen --inexact --group build --group tools

.PHONY: demo test lint lock lock-check typecheck bench fuzz services-up services-down clean

$(UV): requirements/uv.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements/uv.txt
	touch $(UV)

$(STAMP): pyproject.toml uv.lock $(UV)
	$(SYNC) --quiet --no-install-project --extra dev
	$(SYNC) --quiet --extra dev
	touch $(STAMP)

# Refresh the lock to the newest versions pyproject.toml allows, and uv's own pin with it.
lock: $(UV)
	$(UV) lock --upgrade
	$(UV) export --frozen --quiet --only-group tools --no-emit-project --no-header --output-file requirements/uv.txt

# Fails when pyproject.toml and the lock disagree (a dependency added, removed or moved out of the locked version),
# or when uv's pin is not the lock's.
lock-check: $(UV)
	$(UV) lock --check --offline
	$(UV) export --frozen --quiet --only-group tools --no-emit-project --no-header | diff -u requirements/uv.txt - \
	  || { echo "requirements/uv.txt is not the lock's uv: run make lock" >&2; exit 1; }

demo: $(STAMP)
	$(BIN)/dcflex demo $(DEMO_ARGS)

test: $(STAMP) lint
	scripts/services.sh up
	status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; scripts/services.sh down; exit $$status

lint: $(STAMP) lock-check
	$(BIN)/ruff check gateway adapters simulators tests benchmarks
	$(BIN)/mypy gateway

# The fuzzer of the VEN's receive path with a large budget (make test runs it with a small one).
fuzz: $(STAMP)
	DCFLEX_FUZZ_EXAMPLES=$${DCFLEX_FUZZ_EXAMPLES:-50000} $(BIN)/python -m pytest -q -p no:cacheprovider tests/gateway/ven/test_fuzz.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.planner_bench
	$(BIN)/python -m benchmarks.event_latency_bench
	$(BIN)/python -m benchmarks.slurm_parse_bench
	$(BIN)/python -m benchmarks.jobside_bench
	$(BIN)/python -m benchmarks.hostile_bench
	scripts/services.sh up
	status=0; $(BIN)/python -m benchmarks.tsdb_bench && $(BIN)/python -m benchmarks.mqtt_bench || status=$$?; scripts/services.sh down; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-report.json demo-report.png
