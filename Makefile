# One-command entry points; each creates the virtual environment first if needed.
#   make repro                                   download MUCT and run the whole pipeline
#   make repro SOURCE=../shared/datasets/helen-train   the same on a local folder (no internet)
#   make test                                    the test suite
#   make server                                  an MLflow tracking server on 127.0.0.1:5001 (SERVER_PORT=...)
#   make serve                                   the registered detector over REST on 127.0.0.1:5002 (docs/predict.md)
#   make champion VERSION=N                      point the alias `champion` (what make serve serves) at version N
#   make results                                 docs/results.md and the README's table, from metrics/ (docs/results.yaml)
#   make ui-check                                the MLflow UI of a tiny pipeline, seen in headless Chromium
#   make ui-screenshot                           docs/mlflow-compare.png: two runs compared in the MLflow UI
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
SOURCE ?=
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
SERVER_OPTS ?=
MODEL_NAME ?= faceswap-ela-cnn
MODEL ?= models:/$(MODEL_NAME)@champion
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 5002
VERSION ?=
# the store the pipeline registers into, unless MLFLOW_TRACKING_URI names another (a server)
STORE = $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}

export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test lint bench results ui server serve champion ui-check ui-screenshot clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	$(BIN)/python -c "import dlib, faceswap_ela.landmarks as l; print('dlib', dlib.__version__, l.predictor_path())"
	touch $@

repro: setup
	$(BIN)/python -m faceswap_ela.stage sweep
ifeq ($(strip $(SOURCE)),)
	$(BIN)/dvc repro
else
	$(BIN)/dvc exp run -S 'data.source=$(SOURCE)'
endif

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/landmarks.py
	$(BIN)/python benchmarks/ela.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/train_ops.py --tf-ops
	$(BIN)/python benchmarks/predict.py

results: setup
	$(BIN)/python tools/results.py

ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts

# a tracking server for a team: its own sqlite store, artifacts proxied (clients need no shared disk)
server: setup
	$(BIN)/mlflow server --host $(SERVER_HOST) --port $(SERVER_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow-server.db \
		--serve-artifacts --artifacts-destination $(CURDIR)/mlartifacts-server $(SERVER_OPTS)

# the registered detector (detector.py) over REST, on loopback: POST /invocations (docs/predict.md);
# MODEL=models:/faceswap-ela-cnn/latest serves the newest version, whatever the alias
serve: setup
	MLFLOW_TRACKING_URI=$(STORE) $(BIN)/mlflow models serve -m '$(MODEL)' --env-manager local \
		--host $(SERVE_HOST) --port $(SERVE_PORT)

champion: setup
	@test -n '$(VERSION)' || { echo 'usage: make champion VERSION=N (a version of $(MODEL_NAME))'; exit 2; }
	MLFLOW_TRACKING_URI=$(STORE) $(BIN)/python -c 'import sys, mlflow; \
		mlflow.MlflowClient().set_registered_model_alias(sys.argv[1], "champion", sys.argv[2])' \
		'$(MODEL_NAME)' '$(VERSION)'

# the UI checks need Chromium (apt-get install chromium); without it ui-check skips
ui-check: setup
	$(BIN)/python -m pytest tests/test_ui.py -rs

ui-screenshot: setup
	$(BIN)/python tools/mlflow_screenshot.py docs/mlflow-compare.png

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
