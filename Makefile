# txraft developer tasks.  `make test` is the project's one test command.

VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv cluster lint test bench clean

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

cluster: venv
	mkdir -p logs
	test -e $(CLUSTER_KEY) || $(BIN)/txraft-keygen $(CLUSTER_KEY)
	$(BIN)/txraft-cluster --cluster-key $(CLUSTER_KEY)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache _trial_temp*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name dropin.cache -delete
