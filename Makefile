# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two install levels: `make run` needs the runtime and the report extra only
# (RUN_STAMP); `make test` adds the test toolchain (STAMP).
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
CONFIG ?= configs/default.yaml
DURATION ?= 60
# FRESH=0 keeps the previous demo's outbox, sink and drift state.
FRESH ?= 1
# The ring and producer tests also run on Python 3.13, whose shared-memory API differs.
PY313 := $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python3.13; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV313 := .venv313
STAMP313 := $(VENV313)/.installed
CORE_TESTS := tests/test_ring.py tests/test_producer.py tests/test_shm.py

.PHONY: install run test test-main test-spark test313 lint format bench chaos docs clean

$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[report]'
	@touch $@

# One resolve for both levels when the test set comes first (a fresh clone's CI).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[report,test]'
	@touch $(RUN_STAMP) $@

# The benchmark-only peers (river, whylogs, py-spy): never in the runtime or test sets.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[report,test,bench]'
	@touch $@

install: $(STAMP)

# Self-contained: state under ./var, an instance name of this checkout (examples/run_demo.py).
run: $(RUN_STAMP)
	$(BIN)/python examples/run_demo.py -c $(CONFIG) $(if $(filter 0,$(FRESH)),--keep-state)

lint: $(STAMP)
	$(BIN)/ruff check edge_actors tests benchmarks examples scripts
	$(BIN)/ruff format --check edge_actors tests benchmarks examples scripts
	$(BIN)/mypy --strict edge_actors

format: $(STAMP)
	$(BIN)/ruff format edge_actors tests benchmarks examples
	$(BIN)/ruff check --fix edge_actors tests benchmarks examples

# Every part runs even when an earlier one fails (a lint error must not hide
# the 3.13 results); the exit code is non-zero if any part failed.
test: $(STAMP)
	@failed=""; \
	for part in lint test-main test313; do \
		$(MAKE) --no-print-directory $$part || failed="$$failed $$part"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: lint, test-main and test313 passed"

# One pytest worker per core, a test file per worker at a time (its module
# fixtures, the demo and the fork server, are made once).
test-main: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile

# The Spark engine's tests (pyspark: a ~400 MB install, minutes; Java 17+). Not in
# `make test`: without pyspark tests/test_fleet_spark.py skips (CI time, docs/fleet.md).
test-spark: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[report,test,spark]'
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fleet_spark.py

$(STAMP313): pyproject.toml
	@test -x $(VENV313)/bin/python || $(PY313) -m venv $(VENV313)
	$(VENV313)/bin/python -m pip install -q --disable-pip-version-check \
		numpy psutil PyYAML orjson pytest pytest-timeout hypothesis
	$(VENV313)/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

test313:
ifeq ($(PY313),)
	@echo "SKIPPED: Python 3.13 not found; ring and producer tests ran on $$($(BIN)/python -V) only"
else
	@$(MAKE) --no-print-directory $(STAMP313)
	$(VENV313)/bin/python -m pytest -q -p no:cacheprovider $(CORE_TESTS)
endif

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/run_all.py

chaos: $(STAMP)
	$(BIN)/python -m pytest -q tests/chaos --chaos-duration=$(DURATION)

docs: $(STAMP)
	$(BIN)/python scripts/gen_config_docs.py

clean:
	rm -rf $(VENV) $(VENV313) build *.egg-info .mypy_cache .ruff_cache

# Emulated ARM boards (aarch64, armv7, ARMv6), not part of `make test`: needs root,
# debootstrap and qemu-user-static; the roots are built once into ~/.cache/edge-actors.
.PHONY: test-arm
test-arm:
	$(PYTHON) scripts/arm/test_arm.py
