# txraft developer tasks.  `make test` is the project's one test command.

VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv cluster lint test mutate bench clean

# A non-editable install, so the twistd plugin lands in site-packages' twisted/plugins/.
# Re-installed every time (cheap, and the venv never runs stale code); build/ is removed
# first because setuptools would otherwise install modules since deleted from txraft/.
venv:
	test -x $(BIN)/python || python3 -m venv $(VENV)
	rm -rf build
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '.[test]'

# The cluster's key is made on first use (git-ignored), so the first command a new user
# runs starts a cluster whose peers authenticate each other.
CLUSTER_KEY := etc/cluster.key

# Each node serves its web view, /metrics, /health and /status: the first on
# HTTP_PORT, the next on the port after, and so on; the launcher prints the addresses.
HTTP_PORT ?= 8080

cluster: venv
	mkdir -p logs
	test -e $(CLUSTER_KEY) || $(BIN)/txraft-keygen $(CLUSTER_KEY)
	$(BIN)/txraft-cluster --cluster-key $(CLUSTER_KEY) --http $(HTTP_PORT)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The whole suite, then a sample of mutants of the core and the driver that must all die,
# so that a weakening of the tests fails CI (mutation/run.py).
test: venv lint
	$(BIN)/python -m pytest
	$(BIN)/python mutation/run.py --sample 60

# Every mutant of the core, the log, the driver, storage, the state machine and the wire
# format, with a score per module; then the planted bugs of mutation/named.py.
mutate: venv
	$(BIN)/python mutation/run.py
	$(BIN)/python mutation/named.py

bench: venv
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache _trial_temp* .mutation
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name dropin.cache -delete
