# backprop-lab: every target sets up its own virtual environment first (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: docs lab run test test-slow test-integration test-browser test-all lint bench ui clean server-start server-stop

# The package and what training needs.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	$(MAKE) --no-print-directory plotly-cartesian
	touch $@

# plotly.js's cartesian bundle (scatter plots and heat maps: all the gradient-flow page draws,
# analysis/gradient_flow.py), from the npm registry: 1.5 MB against the 4.8 MB full bundle of
# the plotly package, which the page falls back to when npm is missing (docs/gradient_flow.md).
PLOTLY_JS_VERSION := 4.1.1
PLOTLY_CARTESIAN := $(VENV)/share/backprop-lab/plotly-cartesian.min.js
.PHONY: plotly-cartesian
plotly-cartesian: $(PLOTLY_CARTESIAN)
$(PLOTLY_CARTESIAN):
	@mkdir -p $(@D)
	@if command -v npm > /dev/null; then \
	  tmp=$$(mktemp -d) && \
	  (cd $$tmp && npm pack --silent plotly.js-cartesian-dist-min@$(PLOTLY_JS_VERSION) > /dev/null \
	   && tar xzf plotly.js-cartesian-dist-min-$(PLOTLY_JS_VERSION).tgz) && \
	  cp $$tmp/package/LICENSE $(@D)/plotly-cartesian.LICENSE && \
	  cp $$tmp/package/plotly-cartesian.min.js $@; rm -rf $$tmp; \
	else echo "npm not found: the gradient-flow page will inline plotly's full bundle"; fi

# Plus the test tools and PyTorch CPU (the autograd oracle of the tests, the benchmarks' peer).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,torch]"
	touch $@

# Plus scale-out: the Ray launchers and the PostgreSQL driver of the tracking server.
$(VENV)/.installed-cluster: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[cluster]"
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

## test-integration: tests that start real servers on 127.0.0.1 (PostgreSQL must be installed)
test-integration: $(VENV)/.installed-dev $(VENV)/.installed-cluster
	$(PY) -m pytest -q -m integration || [ $$? -eq 5 ]

## test-browser: the MLflow UI in headless Chromium (Debian's chromium must be installed:
##   .ci/browser.sh installs it); screenshots in test-artifacts/browser/
$(VENV)/.installed-browser: $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -e ".[browser]"
	touch $@

test-browser: $(VENV)/.installed-browser
	$(PY) -m pytest -q -s -m browser

## server-start: the shared MLflow tracking server (PostgreSQL + artifact folder) on
##   http://127.0.0.1:5050, data in $(SERVER_DIR); more options: SERVER_ARGS="--port 5051"
SERVER_DIR ?= .tracking-server
server-start: $(VENV)/.installed-cluster
	$(PY) scripts/tracking_server.py start --dir $(SERVER_DIR) $(SERVER_ARGS)

## server-stop: stop it (runs and artifacts stay in $(SERVER_DIR) for the next start)
server-stop: $(VENV)/.installed-cluster
	$(PY) scripts/tracking_server.py stop --dir $(SERVER_DIR)

## lint: ruff, and the import contracts of pyproject.toml (the layers of docs/architecture.md,
##   no circles)
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

## docs: the reference under docs/ as a site in site/ (MkDocs); fails on a broken link or anchor
$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	$(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/run.py

## ui: open the MLflow UI on the default store (http://127.0.0.1:5000)
ui: $(VENV)/.installed
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

## lab: JupyterLab on 127.0.0.1 for the notebooks in analysis/ (no update checks, no news)
lab: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[analysis]"
	$(VENV)/bin/jupyter lab analysis/ --ip 127.0.0.1 --no-browser \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

clean:
	rm -rf $(VENV) outputs multirun reports site
