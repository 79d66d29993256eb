# The two commands: `make run` (the whole local system) and `make test` (everything).
PYTHON ?= $(shell command -v python3.12 || command -v python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test install kafka lint unit integration clean

run: install kafka
	$(BIN)/fraudstream up

test: install kafka lint
	$(BIN)/pytest

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 12) else "fraudstream needs Python 3.11 or 3.12 (Bytewax 0.21 supports up to 3.12); set PYTHON=...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e . --group dev
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

integration: install kafka
	$(BIN)/pytest -m integration

clean:
	rm -rf $(VENV) .fraudstream .pytest_cache .mypy_cache .ruff_cache
