# backprop-lab: every target sets up its own virtual environment first (Python 3.11).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true

.PHONY: run test test-slow test-integration test-all lint bench ui clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,torch]"
	touch $@

## run: set up, then train sigmoid, tanh and relu as one Hydra multirun into ./mlflow.db
run: $(VENV)/.installed
	$(PY) train.py -m activation=sigmoid,tanh,relu

## test: set up, then run the default (fast) test suite
test: $(VENV)/.installed
	$(PY) -m pytest -q

## test-slow: the tests marked slow
test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

## test-integration: tests that start real servers on 127.0.0.1
test-integration: $(VENV)/.installed
	$(PY) -m pytest -q -m integration

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

## ui: open the MLflow UI on the default store (http://127.0.0.1:5000)
ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) outputs multirun reports
