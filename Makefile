# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NOTEBOOKS := notebooks/01_bn_inversion.ipynb notebooks/02_meta_initialization.ipynb notebooks/03_segmentation.ipynb notebooks/04_imagenet_scaling.ipynb
# The shared CIFAR-10 next to the checkout, when it exists (tests skip the real-data checks without it).
ifneq ($(wildcard ../shared/data/cifar10),)
export FDK_DATA ?= $(abspath ../shared/data)
endif
export TQDM_MININTERVAL ?= 10
export PYTHONWARNINGS ?= ignore::DeprecationWarning

.PHONY: setup demo test lint lab chromium strip clean
setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	-git config filter.nbstripout.clean >/dev/null || $(BIN)/nbstripout --install
	touch $@

# The notebooks, small (smoke) and offline, with the embedded teachers: executed copies and HTML in runs/demo.
demo: setup
	mkdir -p runs/demo
	for nb in $(NOTEBOOKS); do \
	  name=$$(basename $$nb .ipynb); \
	  $(BIN)/papermill $$nb runs/demo/$$name.ipynb -p SMOKE True --cwd notebooks --log-level WARNING || exit 1; \
	  $(BIN)/python -c "import fdk.notebook as n; n.export_html('runs/demo/$$name.ipynb')" || exit 1; \
	done
	@ls -lh runs/demo
	@echo "executed notebooks and offline HTML: runs/demo/ (run folders: runs/notebooks/)"

# Unit tests, the notebooks under nbval (smoke, lax: asserts in cells), and the Chromium check.
test: setup chromium
	$(BIN)/ruff check .
	FDK_SMOKE=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=900 tests notebooks

# The browser test drives Debian's Chromium; install it when missing (skipped with a reason if that fails).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "could not install chromium: the browser test will be skipped"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check fdk tests benchmarks

lab: setup
	$(BIN)/jupyter lab notebooks/

strip: setup
	$(BIN)/nbstripout $(NOTEBOOKS)

clean:
	rm -rf runs .pytest_cache
