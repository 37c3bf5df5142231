# backprop-lab: every target sets up its own virtual environment first (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: run test test-slow test-integration test-all lint bench ui clean

# The package and what training needs.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# Plus the test tools and PyTorch CPU (the autograd oracle of the tests, the benchmarks' peer).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,torch]"
	touch $@

## run: set up, then train sigmoid, tanh and relu as one Hydra multirun into ./mlflow.db
run: $(VENV)/.installed
	$(PY) train.py -m activation=sigmoid,tanh,relu

## test: set up, then run the default (fast) test suite
test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

## test-slow: the tests marked slow
test-slow: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m slow || [ $$? -eq 5 ]  # 5: no test selected

## test-integration: tests that start real servers on 127.0.0.1
test-integration: $(VENV)/.installed-dev
	$(PY) -m pytest -q -m integration || [ $$? -eq 5 ]

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/run.py

## ui: open the MLflow UI on the default store (http://127.0.0.1:5000)
ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) outputs multirun reports
