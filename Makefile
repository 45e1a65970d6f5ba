# Fresh-machine commands: `make demo` and `make test`. Both create .venv when it
# is missing and install dclab into it first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dclab-installed

.PHONY: demo test test-fast lab checkpoints exercises clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $(STAMP)

# The main job: the whole pipeline on LeNet-300-100 with the bundled MNIST subset.
demo: $(STAMP)
	$(BIN)/dclab demo

# The whole suite: library tests, then every lecture and solution notebook
# under nbval in quick mode (the exercises are checked from tests/).
test: $(STAMP)
	$(BIN)/python -m pytest -ra
	@if ls notebooks/*.ipynb solutions/*.ipynb >/dev/null 2>&1; then \
		DCLAB_QUICK=1 $(BIN)/python -m pytest -ra --nbval-lax --nbval-current-env -p no:cacheprovider \
			$$(ls notebooks/*.ipynb solutions/*.ipynb 2>/dev/null); \
	fi

test-fast: $(STAMP)
	$(BIN)/python -m pytest -ra -m "not slow and not browser and not fullscale"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

checkpoints: $(STAMP)
	$(BIN)/dclab make-checkpoints

# Regenerate exercises/ from solutions/ (run after editing a solution notebook).
exercises: $(STAMP)
	$(BIN)/python -m dclab.course make-exercises

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
