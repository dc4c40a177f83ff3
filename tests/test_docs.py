"""The examples of the README, of the documentation site's pages (docs/**/*.md) and of the
docstrings run: the single-device ones in this process, the "Scaling out" ones in subprocesses
on 8 forced host devices, and its multi-host script as 2 processes joined by jax.distributed."""

from __future__ import annotations

import doctest
import importlib
import json
import os
import pathlib
import pkgutil
import re
import socket
import subprocess
import sys

import pytest

import sghmc_jax
from sghmc_jax import kernels

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# The README, then the site's pages (docs/_build is the built site, not a source).
PAGES = [README, *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts)]
_PYTHON = r"```python\n(.*?)```"


def _section(title: str) -> str:
    """The README's text from the heading `## title` to the next `## ` heading, or else the
    whole page of the site titled `# title`."""
    text = README.read_text()
    if f"\n## {title}\n" in text:
        start = text.index(f"\n## {title}\n")
        end = text.find("\n## ", start + 1)
        return text[start : end if end >= 0 else len(text)]
    pages = [p.read_text() for p in PAGES[1:] if p.read_text().startswith(f"# {title}\n")]
    assert len(pages) == 1, f"no README section or page titled {title!r}"
    return pages[0]


def _blocks() -> dict[str, str]:
    """Every python block of the README and of the pages, each once (a page may repeat the
    README's example), named by where it first appears."""
    found: dict[str, str] = {}
    for page in PAGES:
        for i, block in enumerate(re.findall(_PYTHON, page.read_text(), flags=re.S)):
            found.setdefault(block, f"{page.relative_to(ROOT)}[python block {i}]")
    return {name: block for block, name in found.items()}


SCALING = re.findall(_PYTHON, _section("Scaling out"), flags=re.S)
MULTI_HOST = [b for b in SCALING if "jax.distributed.initialize" in b]
ON_DEVICES = [b for b in SCALING if b not in MULTI_HOST]  # run in order, one namespace
BLOCKS = {name: b for name, b in _blocks().items() if b not in SCALING}

_RUN_IN_ORDER = """
import contextlib, io, json, sys
import numpy as np
namespace, printed, stats = {}, [], []
for i, block in enumerate(json.loads(sys.argv[1])):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, f"README.md[Scaling out, python block {i}]", "exec"), namespace)
    printed.append(out.getvalue())
    # A block that samples the regression (draws shaped (chain, draw, coefficient)): its
    # summary and the data, for the exact posterior.
    result, data = namespace.get("result"), namespace.get("data")
    if "sghmc_jax.sample(" in block and np.ndim(result.samples) == 3:
        s = result.summary()["params"]
        stats.append({**{k: np.asarray(s[k]).tolist() for k in ("mean", "sd", "mcse_mean", "ess_bulk")},
                      "x": np.asarray(data["x"]).tolist(), "y": np.asarray(data["y"]).tolist()})
    else:
        stats.append(None)
print("PRINTED " + json.dumps(printed))
print("STATS " + json.dumps(stats))
"""


def _check_against_exact_regression_posterior(stats: dict, where: str) -> None:
    """The draws' means and sds against the exact Gaussian posterior of y = xw + N(0, 1) with a
    N(0, I) prior (precision xᵀx + I), within 4.5 Monte Carlo standard errors per coefficient:
    the mean's MCSE from the summary, the sd's sd/√(2 ESS) (a Gaussian's, with the bulk ESS)."""
    import numpy as np

    x, y = np.asarray(stats["x"], np.float64), np.asarray(stats["y"], np.float64)
    cov = np.linalg.inv(x.T @ x + np.eye(x.shape[1]))
    mean, sd = cov @ x.T @ y, np.sqrt(np.diag(cov))
    got_mean, got_sd = np.asarray(stats["mean"]), np.asarray(stats["sd"])
    mcse_sd = got_sd / np.sqrt(2 * np.asarray(stats["ess_bulk"]))
    z_mean = (got_mean - mean) / np.asarray(stats["mcse_mean"])
    z_sd = (got_sd - sd) / mcse_sd
    assert np.all(np.abs(z_mean) < 4.5), f"{where}: means {got_mean} vs exact {mean}, z = {z_mean}"
    assert np.all(np.abs(z_sd) < 4.5), f"{where}: sds {got_sd} vs exact {sd} (ratio {got_sd / sd}), z = {z_sd}"


def _env(devices: int, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x)
    return {
        **os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu", "PYTHONPATH": path, **extra,
    }


def test_readme_has_the_two_commands_first():
    text = README.read_text()
    first_code = text[text.index("```") : text.index("```", text.index("```") + 3)]
    assert "make demo" in first_code and "make test" in first_code


@pytest.mark.parametrize("where", list(BLOCKS))
def test_readme_example_runs(where, capsys):
    """Every example of the README and of the site's pages (docs/)."""
    exec(compile(BLOCKS[where], where, "exec"), {})
    assert capsys.readouterr().out.strip(), "the example prints its result"


def test_the_pages_examples_are_found():
    """The walk over docs/ finds the guides' examples (a page moved out of the README keeps its
    examples run), and no example of the site repeats the multi-device ones here."""
    where = {name.split("[")[0] for name in BLOCKS}
    assert {f"docs/guides/{g}.md" for g in ("optax", "diagnosing", "models", "samplers")} <= where, where
    assert len(BLOCKS) >= 7 and len(SCALING) == 4, list(BLOCKS)


def test_readme_scaling_examples_run_on_8_devices():
    assert len(ON_DEVICES) == 3 and len(MULTI_HOST) == 1, "the section's examples were not found"
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_IN_ORDER, json.dumps(ON_DEVICES)], cwd=ROOT, env=_env(8),
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("PRINTED "))[8:])
    assert all(p.strip() for p in printed), f"every example prints its result: {printed}"
    assert "('chains', None, 'model')" in printed[2], printed[2]  # the state keeps w1's partition
    stats = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("STATS "))[6:])
    assert stats[0] is not None and stats[1] is not None, "the two regressions were not found"
    for i in (0, 1):  # chains across devices; data-parallel gradients
        _check_against_exact_regression_posterior(stats[i], f"Scaling out, python block {i}")


@pytest.mark.slow
def test_readme_multi_host_script_runs_as_two_processes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(MULTI_HOST[0])
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "run")], cwd=tmp_path,
            env=_env(4, COORDINATOR=f"localhost:{port}", NUM_HOSTS="2", HOST_ID=str(i)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "SampleResult(16 chains" in outs[0][0], outs[0][0]  # host 0 prints
    assert "SampleResult" not in outs[1][0]  # (gloo logs its connections on stdout)
    assert (tmp_path / "run" / "draws" / "zarr.json").is_file()
    assert (tmp_path / "run" / "ckpt" / "state" / "3000").is_dir()


def test_readme_optax_example_reaches_the_posterior_mean(capsys):
    namespace: dict = {}
    block = re.findall(_PYTHON, _section("The optax face"), flags=re.S)[0]
    exec(compile(block, "The optax face[0]", "exec"), namespace)
    capsys.readouterr()
    import numpy as np

    mean = np.mean(namespace["samples"][1000:], axis=0)
    # Posterior N(1/1.01, 1/1.01); 9,000 draws near critical damping (ε = 0.1, α = 2): the
    # per-coordinate Monte Carlo standard error of the mean is ~0.05 (measured over 200 seeds;
    # the largest error of the three coordinates stayed below 0.24), so 0.3 is ~6 standard errors.
    # (The earlier 1,500-draw version at α = 1, ε = 0.01 had a standard error of ~0.4 and passed
    # for lucky seeds only.)
    assert float(np.max(np.abs(mean - 1 / 1.01))) < 0.3


def test_readme_sampler_example_reaches_the_exact_posterior(capsys):
    """"The sampler"'s regression: its draws' means and sds are the exact posterior's."""
    import numpy as np

    block = re.findall(_PYTHON, _section("The sampler"), flags=re.S)[0]
    namespace: dict = {}
    exec(compile(block, "README.md[The sampler]", "exec"), namespace)
    capsys.readouterr()
    s = namespace["result"].summary()["params"]
    data = namespace["data"]
    stats = {k: np.asarray(s[k]) for k in ("mean", "sd", "mcse_mean", "ess_bulk")}
    _check_against_exact_regression_posterior({**stats, "x": data["x"], "y": data["y"]}, "The sampler")


def _package_modules() -> list[str]:
    """Every module of the package, found by walking it (a new module's examples run without an
    edit here); `__main__` is left out: importing it runs the demo."""
    walked = pkgutil.walk_packages(sghmc_jax.__path__, "sghmc_jax.")
    return ["sghmc_jax", *sorted(m.name for m in walked if m.name.rsplit(".", 1)[-1] != "__main__")]


MODULES = _package_modules()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    """Every `>>>` example of every module (doctest's finder: the module's own functions, classes
    and methods, not what it imports)."""
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (printed above)"


def test_docstring_examples_are_found_by_discovery():
    """The walk finds the modules that hold examples, the private ones and every functional face
    included (a hand list once left modules' examples unrun)."""
    finder = doctest.DocTestFinder()
    with_examples = {n for n in MODULES if any(t.examples for t in finder.find(importlib.import_module(n)))}
    faces = {f"sghmc_jax.sgmcmc.{rule}" for rule in kernels.rules()}
    assert faces | {"sghmc_jax.kernels", "sghmc_jax.transforms", "sghmc_jax._sampler.diagnose"} <= with_examples, with_examples
