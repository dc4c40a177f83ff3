# `make demo` and `make test` do all set-up on a fresh machine: they create .venv with the
# system python3 if missing, install the package editable with the extras they need (once: a
# stamp file records each install, redone when pyproject.toml changes), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-examples: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[examples]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,examples]"
	touch $@

demo: $(VENV)/.installed-examples
	$(PY) -m sghmc_jax

test: $(VENV)/.installed-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (they still run in `make test` and CI).
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
