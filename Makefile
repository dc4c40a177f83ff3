# `make demo` and `make test` do all set-up on a fresh machine: they create .venv with the
# system python3 if missing, install the package editable with the extras they need (once: a
# stamp file records each install, redone when pyproject.toml changes), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint docs bench bench-quick clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-examples: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[examples]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,examples,notebooks,lint,docs]"
	touch $@

demo: $(VENV)/.installed-examples
	$(PY) -m sghmc_jax

# ruff (format, then lint) and pyright (basic mode, as pyproject.toml sets) on the package; pyright
# resolves imports in .venv through --pythonpath.
lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff format --check sghmc_jax
	$(VENV)/bin/ruff check sghmc_jax
	$(VENV)/bin/basedpyright --pythonpath $(PY)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything but the tests marked slow (they still run in `make test` and CI).
test-fast: $(VENV)/.installed-test
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

$(VENV)/.installed-docs: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[docs]"
	touch $@

# The HTML site (open docs/_build/html/index.html), built offline: the notebooks from their
# committed outputs, MathJax bundled. `make test` builds it too, with warnings as errors and every
# reference resolved (-W -n), in tests/test_site.py, which then checks what it wrote.
SPHINX_ARGS ?=
docs: $(VENV)/.installed-docs
	$(PY) -m sphinx -b html -q -W -n --keep-going $(SPHINX_ARGS) docs docs/_build/html

$(VENV)/.installed-bench: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

# posteriors (PyTorch) gets its own environment with the CPU torch build; when it cannot be
# created the benchmarks say so and skip that candidate.
POSTERIORS_VENV := benchmarks/.venv-posteriors
$(POSTERIORS_VENV)/.installed:
	-( $(PYTHON) -m venv $(POSTERIORS_VENV) \
	   && $(POSTERIORS_VENV)/bin/python -m pip install --quiet torch==2.13.0 posteriors numpy \
	   && touch $@ ) || echo "posteriors environment could not be created: its benchmark will be skipped"

# Benchmarks print tables of ratios to optax SGD-momentum measured in the same run (see
# benchmarks/README.md); `bench-quick` uses fewer repeats.
bench: $(VENV)/.installed-bench $(POSTERIORS_VENV)/.installed
	$(PY) benchmarks/noise.py
	$(PY) benchmarks/update_only.py --rss
	$(PY) benchmarks/training.py

bench-quick: $(VENV)/.installed-bench $(POSTERIORS_VENV)/.installed
	$(PY) benchmarks/noise.py --quick
	$(PY) benchmarks/update_only.py --quick
	$(PY) benchmarks/training.py --quick

clean:
	rm -rf $(VENV) $(POSTERIORS_VENV) build *.egg-info docs/_build docs/api/sgmcmc
