"""The README's examples and the docstrings' examples run."""

from __future__ import annotations

import doctest
import pathlib
import re

import pytest

import sghmc_jax
from sghmc_jax import kernels, schedules, transforms
from sghmc_jax.sgmcmc import baoa, psghmc, psgld, sghmc, sgld, sgnht

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_two_commands_first():
    text = README.read_text()
    first_code = text[text.index("```") : text.index("```", text.index("```") + 3)]
    assert "make demo" in first_code and "make test" in first_code


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip(), "the example prints its result"


def test_readme_optax_example_reaches_the_posterior_mean(capsys):
    namespace: dict = {}
    exec(compile(BLOCKS[0], "README.md[0]", "exec"), namespace)
    capsys.readouterr()
    import jax.numpy as jnp

    mean = jnp.mean(jnp.stack(namespace["samples"][500:]), axis=0)
    # Posterior N(1/1.01, 1/1.01); 1,500 correlated draws: the mean is within ~0.15.
    assert float(jnp.max(jnp.abs(mean - 1 / 1.01))) < 0.3


@pytest.mark.parametrize(
    "module",
    [kernels, transforms, schedules, sghmc, sgld, sgnht, baoa, psgld, psghmc, sghmc_jax.diagnostics],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
