# Two commands: `make run` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: run test test-fast bench demo clean

$(BIN)/mailer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

## run: set up .venv and start the service on the example config (Ctrl-C stops it)
run: $(BIN)/mailer
	$(BIN)/mailer --config $(CONFIG) topics import --if-empty examples/topics.toml
	$(BIN)/mailer --config $(CONFIG) serve

## test: set up .venv and run the whole test suite
test: $(BIN)/mailer
	$(BIN)/python -m pytest -q

## test-fast: the suite without the slow crash and fault cases
test-fast: $(BIN)/mailer
	$(BIN)/python -m pytest -q -m "not slow"

## demo: the newcomer's tour in a temporary folder
demo: $(BIN)/mailer
	$(BIN)/mailer demo

clean:
	rm -rf $(VENV) var/ .pytest_cache
