# The two commands: `make run` (the whole local system) and `make test` (everything).
# The first interpreter that runs and is 3.11 or 3.12 (pyenv shims may exist but not run).
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test system system-run install kafka lint unit integration soak bench clean

run: system-run install kafka
	$(BIN)/fraudstream up

test: system install kafka lint
	$(BIN)/pytest

# Debian packages beyond Python: Java and Maven (broker), PostgreSQL, Chromium (tests).
system:
	bash deploy/local/system-packages.sh test

system-run:
	bash deploy/local/system-packages.sh run

install: $(INSTALLED)

# The locked versions (requirements-dev.txt: runtime and dev group, hash-checked), then
# fraudstream itself, editable, with nothing more. README, Development, "Locked versions".
$(INSTALLED): pyproject.toml requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "fraudstream needs Python 3.11 or 3.12 (Bytewax 0.21 supports up to 3.12); set PYTHON=..."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Apache Kafka jars from Maven Central (needs Java 17+ and Maven), cached in .fraudstream/.
kafka: install
	$(BIN)/fraudstream broker fetch

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not integration"

integration: system install kafka
	$(BIN)/pytest -m integration

# 20 SIGKILLs of the detector under 500 transactions a second, on a broker of its own:
# prints what was lost, changed and published twice (tests/integration/campaign.py).
soak: install kafka
	$(BIN)/python -m tests.integration.campaign --kills 20 --rate 500

# The streaming path through a real broker (a temporary one): the plain loop against the
# detector with 1 and 2 processes on Handbook transactions, then latency at 1,000 tx/s.
bench: install kafka
	$(BIN)/fraudstream bench

clean:
	rm -rf $(VENV) .fraudstream .pytest_cache .mypy_cache .ruff_cache
