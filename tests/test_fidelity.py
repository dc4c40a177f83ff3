"""The posterior-fidelity benchmark (benchmarks/fidelity.py, issue 20): its metrics against cases
computed by hand, and its pipeline end to end in fast mode on one task, against a tiny NUTS
reference made here. No benchmark figure is asserted: the fast mode measures nothing."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("blackjax")

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, BENCHMARKS)  # fidelity_reference imports fidelity by name
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fidelity = _load("fidelity")
fidelity_reference = _load("fidelity_reference")

P = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])
P_REF = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8]])


def test_agreement_by_hand():
    # argmax 0, 1, 1 against 0, 0, 1: two of three agree.
    assert fidelity.agreement(P, P_REF) == pytest.approx(2 / 3)
    assert fidelity.agreement(P, P) == 1.0


def test_total_variation_by_hand():
    # Σ|p − p_ref| per point: 0.6, 0.6, 0; half their mean is 0.2.
    assert fidelity.total_variation(P, P_REF) == pytest.approx(0.2)
    assert fidelity.total_variation(P_REF, P) == pytest.approx(0.2)
    assert fidelity.total_variation(P, P) == 0.0
    # Disjoint supports are at the maximum, 1.
    assert fidelity.total_variation(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == 1.0


def test_w2_equal_sizes_is_the_shift():
    a = np.array([0.0, 1.0, 5.0])
    assert fidelity.w2_1d(a, a + 2.0) == pytest.approx(2.0)
    assert fidelity.w2_1d(a[::-1], a) == 0.0  # order of the samples does not matter


def test_w2_unequal_sizes_by_hand():
    # Quantile functions: a = {0, 1} steps at 1/2; b = {0, 0.5, 1} steps at 1/3, 2/3. They differ
    # by 0.5 on [1/3, 1/2) and on [1/2, 2/3): W2² = 2 · (1/6) · 0.25 = 1/12.
    a, b = np.array([0.0, 1.0]), np.array([0.0, 0.5, 1.0])
    assert fidelity.w2_1d(a, b) == pytest.approx(math.sqrt(1 / 12))
    assert fidelity.w2_1d(b, a) == pytest.approx(math.sqrt(1 / 12))
    # Against a point mass at c: the root mean square distance to c.
    assert fidelity.w2_1d(np.array([1.0, 3.0]), np.array([2.0])) == pytest.approx(1.0)


def test_mean_w2_averages_test_points():
    samples = np.array([[0.0, 0.0], [1.0, 0.0]])  # (draws, points)
    ref = np.array([[0.0, 3.0], [1.0, 3.0]])
    assert fidelity.mean_w2(samples, ref) == pytest.approx(1.5)  # (0 + 3) / 2


def test_moment_errors_by_hand():
    draws = np.array([[0.0, 10.0], [2.0, 14.0]])  # mean (1, 12), sd with ddof 1 (√2, √8)
    out = fidelity.moment_errors(draws, ref_mean=np.array([0.0, 12.0]), ref_sd=np.array([1.0, 4.0]))
    assert out["max_mean_error_sd"] == pytest.approx(1.0)  # |1 − 0| / 1 and |12 − 12| / 4
    assert out["min_sd_ratio"] == pytest.approx(math.sqrt(8) / 4)
    assert out["max_sd_ratio"] == pytest.approx(math.sqrt(2))


def test_held_out_log_density_averages_probabilities_not_logs():
    task = fidelity.TASKS["digits_mlp"]
    per_draw = np.array([[[0.5, 0.5]], [[0.0, 1.0]]])  # two draws, one point, two classes
    assert fidelity.held_out_log_density(task, per_draw, np.array([1])) == pytest.approx(math.log(0.75))


def test_regression_comparison_is_the_shift_of_point_masses():
    task = fidelity.TASKS["diabetes_mlp"]
    means = np.array([0.0, 1.0, -2.0])
    per_draw = np.zeros((4, 3, 2))  # every draw predicts `means` with noise sd 0
    per_draw[..., 0] = means
    ref_draws = per_draw.copy()
    ref_draws[..., 0] += 0.25
    ref = {"per_draw": ref_draws.reshape(2, 2, 3, 2)}
    assert fidelity.compare(task, per_draw, None, ref, seed=0)["w2"] == pytest.approx(0.25)


def test_split_is_disjoint_and_standardised_on_train():
    split = fidelity.load_breast_cancer(seed=0)
    sizes = [len(split.x_train), len(split.x_val), len(split.x_test)]
    assert sum(sizes) == 569 and min(sizes) > 50, sizes
    assert np.all(split.x_train[:, 0] == 1.0)  # the intercept column
    np.testing.assert_allclose(split.x_train[:, 1:].mean(0), 0.0, atol=1e-5)
    rows = {r.tobytes() for r in split.x_train}
    assert not any(r.tobytes() in rows for r in split.x_test)


# Every task's data, from the packages alone (no download): sizes, classes, disjoint splits.
TASK_SHAPES = {  # name: (examples in all, features incl. intercept, classes or 0 for regression)
    "breast_cancer": (569, 31, 2),
    "pima": (532, 8, 2),
    "diabetes_mlp": (442, 10, 0),
    "digits_mlp": (1797, 64, 10),
    "mnist1d_mlp": (5000, 40, 10),
}


@pytest.mark.parametrize("name", sorted(TASK_SHAPES))
def test_every_task_loads_offline_with_its_sizes(name):
    total, features, classes = TASK_SHAPES[name]
    split = fidelity.TASKS[name].load(fidelity.TASKS[name].seed)
    parts = [(split.x_train, split.y_train), (split.x_val, split.y_val), (split.x_test, split.y_test)]
    assert sum(len(x) for x, _ in parts) == total and all(len(x) == len(y) for x, y in parts)
    assert all(x.shape[1] == features and x.dtype == np.float32 for x, _ in parts)
    if classes:
        assert set(np.unique(split.y_train)) == set(range(classes))
    else:
        assert abs(float(split.y_train.mean())) < 1e-5  # targets standardised on the train split
    assert np.all(np.isfinite(split.x_train)) and np.all(np.isfinite(split.x_test))


def test_pipeline_fast_mode_end_to_end(tmp_path):
    """A tiny reference (2 NUTS chains), then the CLI in fast mode with a sampler, the cyclical
    sampler and the ensemble over two seeds: the JSON has every metric, and every candidate spent
    the same budget up to one minibatch per chain."""
    task = fidelity.TASKS["breast_cancer"]
    settings = fidelity_reference.Settings(chains=2, warmup=30, draws=20, thin=2, max_doublings=5)
    meta = fidelity_reference.generate(task, settings, str(tmp_path))
    assert set(meta["floor"]) >= {"agreement", "tv", "max_mean_error_sd"}
    assert meta["diagnostics"]["max_rhat_coefficients"] > 0

    out = tmp_path / "results.json"
    candidates = ["sgld", "cyclical_sghmc", "blackjax_sghmc", "deep_ensemble"]
    fidelity.main(
        [
            "--fast",
            "--task",
            "breast_cancer",
            "--candidates",
            *candidates,
            "--seeds",
            "0",
            "1",
            "--references",
            str(tmp_path),
            "--out",
            str(out),
        ]
    )
    result = json.loads(out.read_text())["tasks"]["breast_cancer"]
    assert result["floor"] is not None and result["reference"]["settings"]["chains"] == 2
    assert result["tuned_by"] == "ksd"
    for name in candidates:
        # Within one step per chain of the budget (BlackJAX's SGHMC step is 10 gradients).
        inner = fidelity.BLACKJAX_SGHMC_STEPS if name == "blackjax_sghmc" else 1
        slack = fidelity.FAST_CHAINS * task.batch_size * inner / result["train"]
        scores = result["candidates"][name]["scores_by_lr"]
        assert all(set(v) == set(fidelity.TUNING_SCORES) for v in scores.values()), scores
        runs = result["candidates"][name]["runs"]
        assert [r["seed"] for r in runs] == [0, 1]
        for r in runs:
            assert 0.0 <= r["agreement"] <= 1.0 and 0.0 <= r["tv"] <= 1.0, (name, r)
            assert r["max_mean_error_sd"] >= 0 and r["min_sd_ratio"] <= r["max_sd_ratio"], (name, r)
            assert abs(r["epochs"] - fidelity.FAST_EPOCHS) <= slack, (name, r["epochs"])
            assert r["draws"] > 0, (name, r)
    assert "| `deep_ensemble` |" in fidelity.table(result)


def test_reference_moments_pool_the_chains():
    # Chain 1 draws {−1, 1} (mean 0, E x² = 1), chain 2 draws {1, 3} (mean 2, E x² = 5): pooled
    # mean 1, E x² = 3, sd √2; each half (one chain) has sd 1.
    ref = {
        "chain_mean": np.array([[0.0], [2.0]]),
        "chain_second_moment": np.array([[1.0], [5.0]]),
        "chain_probs": np.array([[[0.9, 0.1]], [[0.7, 0.3]]]),
    }
    mean, sd = fidelity.reference_moments(ref)
    assert mean == pytest.approx([1.0]) and sd == pytest.approx([math.sqrt(2)])
    floor = fidelity.floor(fidelity.TASKS["breast_cancer"], ref)
    assert floor["max_mean_error_sd"] == pytest.approx(2.0) and floor["max_sd_ratio"] == pytest.approx(1.0)
    assert floor["tv"] == pytest.approx(0.2) and floor["agreement"] == 1.0


def test_control_variate_budget_charges_the_set_up():
    """The L-BFGS set-up and the doubled cost of a CV step count against the budget: within it,
    the spent epochs match it up to one step per chain; a budget the set-up alone exceeds gives
    no draws (and says what the set-up cost)."""
    task = fidelity.TASKS["breast_cancer"]
    split = fidelity.task_data(task.name)
    cand = fidelity.CANDIDATES["sgld_cv"]
    approx = fidelity.run_sgmcmc(task, split, cand, lr=0.01, seed=0, epochs=40.0, chains=2)
    assert fidelity._finite_draws(approx) > 0
    assert abs(approx.epochs - 40.0) <= 2 * 2 * task.batch_size / len(split.x_train), approx.epochs
    _, evaluations = fidelity.find_mode(task, split)
    short = fidelity.run_sgmcmc(task, split, cand, lr=0.01, seed=0, epochs=evaluations / 2, chains=2)
    assert fidelity._finite_draws(short) == 0 and short.epochs == evaluations + 1


def test_prior_variances_are_the_priors_by_hand():
    mlp = fidelity.TASKS["digits_mlp"]  # weights N(0, 1/fan-in), biases N(0, 1)
    var = fidelity.prior_variances(mlp, 64)
    assert var["w1"].shape == (64, 50) and np.all(var["w1"] == np.float32(1 / 64))
    assert np.all(var["w2"] == np.float32(1 / 50)) and np.all(var["b1"] == 1.0) and np.all(var["b2"] == 1.0)
    assert "log_noise" not in var
    assert fidelity.prior_variances(fidelity.TASKS["diabetes_mlp"], 10)["log_noise"] == 1.0
    logistic = fidelity.prior_variances(fidelity.TASKS["pima"], 8)
    assert set(logistic) == {"w"} and np.all(logistic["w"] == 1.0)


def test_ksd_score_prefers_the_posterior_to_its_mode_and_to_a_wider_spread():
    """The tuning score on the stored NUTS reference of breast cancer (exact draws, up to MCMC
    error): those draws score better than the same number of copies of their mean (a run
    collapsed on the mode, which the held-out log density can prefer) and than the draws spread
    twice as wide about their mean. Margins: the exact draws' KSD² is about E k₀(x, x)/n ≈ 0.5
    here, a collapsed set's at least d = 31, a doubled spread's tens."""
    task = fidelity.TASKS["breast_cancer"]
    split = fidelity.task_data(task.name)
    ref = fidelity.load_reference(task)
    assert ref is not None
    draws = ref["draws"].reshape(-1, ref["draws"].shape[-1])[:: max(1, len(ref["draws"][0]) * 4 // 200)]
    mean = draws.mean(0)

    def score(w: np.ndarray) -> float:
        return fidelity.ksd_score(task, split, fidelity.Approximation({"w": w.astype(np.float32)}, 0.0, 0.0))

    exact = score(draws)
    assert exact < 0.5 * score(np.broadcast_to(mean, draws.shape).copy())
    assert exact < 0.5 * score(mean + 2.0 * (draws - mean))
    assert fidelity.tuning_score(task, split, fidelity.Approximation({}, 0.0, 0.0), "ksd") == -np.inf
    # A point estimate (Adam) is scored by k₀(x, x): lowest at the mode, where the score vanishes.
    assert score(mean[None]) < score(mean[None] + 0.5)


def test_blackjax_candidates_take_this_librarys_lr_units():
    """BlackJAX's SGLD at lr is the same dynamics as this library's SGLD at lr on the mean-form
    log posterior (step size lr / N): from the same starts, both runs' draws have the same spread
    (the mean sd over the coefficients) within 30%, and a 100x
    smaller lr is visibly narrower in both (its chains barely leave the start)."""
    task = fidelity.TASKS["pima"]
    split = fidelity.task_data(task.name)
    spread = {}
    for name in ("sgld", "blackjax_sgld"):
        for lr in (0.003, 0.3):
            approx = fidelity.run_candidate(task, split, fidelity.CANDIDATES[name], lr, seed=0, epochs=100.0)
            spread[name, lr] = float(np.mean(np.std(approx.draws["w"], axis=0)))
    for name in ("sgld", "blackjax_sgld"):
        assert spread[name, 0.003] < 0.6 * spread[name, 0.3], spread
    assert 0.7 < spread["sgld", 0.3] / spread["blackjax_sgld", 0.3] < 1.4, spread


def test_readme_tables_are_the_committed_results():
    """benchmarks/README.md's fidelity tables are exactly those `fidelity.py --tables` renders
    from the committed results (benchmarks/results/fidelity.json): no figure there is typed by
    hand, and a new run that changes the results must change the README with them."""
    with open(os.path.join(BENCHMARKS, "results", "fidelity.json")) as f:
        saved = json.load(f)
    with open(os.path.join(BENCHMARKS, "README.md")) as f:
        readme = f.read()
    assert not saved["fast"] and len(saved["seeds"]) >= 3, (saved["fast"], saved["seeds"])
    assert saved["tasks"], "no task in the committed results"
    for name, result in saved["tasks"].items():
        assert fidelity.table(result) in readme, f"benchmarks/README.md lacks {name}'s table as rendered from the results"


def test_grid_report_marks_each_scores_choice_once():
    """--grid-report: a row per lr of the grid, the KSD's choice marked K and the held-out
    density's V, once each (a short budget: the report's shape, not its figures)."""
    import dataclasses

    task = dataclasses.replace(fidelity.TASKS["pima"], epochs=4, chains=2)
    report = fidelity.grid_report(task, ["psgld"])
    rows = [line for line in report.splitlines() if line.startswith("| `psgld`")]
    assert len(rows) == len(fidelity.CANDIDATES["psgld"].grid)
    lr_cells = [row.split("|")[2] for row in rows]
    assert sum(" K" in c for c in lr_cells) == 1 and sum(" V" in c for c in lr_cells) == 1, lr_cells
    assert "agreement" in report.splitlines()[0] and "TV" in report.splitlines()[0]


# The top-level README's "How close to the posterior" figures: (task, candidate, metric).
README_FIGURES = [
    ("digits_mlp", "ubu", "tv"),
    ("digits_mlp", "deep_ensemble", "tv"),
    ("diabetes_mlp", "psghmc", "w2"),
    ("diabetes_mlp", "deep_ensemble", "w2"),
    ("mnist1d_mlp", "psgld", "tv"),
    ("mnist1d_mlp", "deep_ensemble", "tv"),
    ("mnist1d_mlp", "adam", "tv"),
    ("breast_cancer", "sgnht", "tv"),
    ("pima", "sgnht", "tv"),
    ("breast_cancer", "adam", "tv"),
    ("pima", "adam", "tv"),
    ("breast_cancer", "deep_ensemble", "tv"),
    ("pima", "deep_ensemble", "tv"),
]


def test_readme_headline_figures_are_the_committed_results():
    """Each figure the README's "How close to the posterior" states is the committed results'
    mean over seeds, to two significant digits; and the best sampler it names is the best."""
    with open(os.path.join(BENCHMARKS, "results", "fidelity.json")) as f:
        tasks = json.load(f)["tasks"]
    with open(os.path.join(os.path.dirname(BENCHMARKS), "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## How close to the posterior") :]
    section = " ".join(section[: section.index("\n## ")].split())

    def mean(task: str, cand: str, metric: str) -> float:
        return float(np.mean([r[metric] for r in tasks[task]["candidates"][cand]["runs"]]))

    for task, cand, metric in README_FIGURES:
        figure = f"{mean(task, cand, metric):#.2g}"
        assert figure in section, (task, cand, metric, figure)
    samplers = [c for c, v in tasks["digits_mlp"]["candidates"].items() if c not in ("adam", "deep_ensemble")]
    assert min(samplers, key=lambda c: mean("digits_mlp", c, "tv")) in ("ubu", "baoa", "sghmc", "sgnht")
    for task in ("breast_cancer", "pima"):
        samplers = [c for c in tasks[task]["candidates"] if c not in ("adam", "deep_ensemble")]
        assert min(samplers, key=lambda c: mean(task, c, "tv")) == "sgnht", task
