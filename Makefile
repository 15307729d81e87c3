# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The shared CIFAR-10 next to the checkout, when it exists (tests skip the real-data checks without it).
ifneq ($(wildcard ../shared/data/cifar10),)
export FDK_DATA ?= $(abspath ../shared/data)
endif
export TQDM_MININTERVAL ?= 10

.PHONY: setup demo test lint lab clean
setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	touch $@

demo: setup
	$(BIN)/fdk demo --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check fdk tests

lab: setup
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf runs .pytest_cache
