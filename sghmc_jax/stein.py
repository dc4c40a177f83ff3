r"""Kernel Stein discrepancy (KSD) with the inverse multiquadric (IMQ) kernel.

The KSD measures how far a set of draws x_1..x_n is from a target p that is known only through
its score s = ∇ log p: no normalising constant, no exact samples. It is the diagnostic for the
question R-hat and ESS cannot answer for SG-MCMC, whether the chains converge to the right
distribution: a biased sampler (too large a step, unmodelled gradient noise, a forgotten
temperature) mixes well to the wrong target, and the KSD sees it.

With the Langevin Stein operator and a base kernel k, the Stein kernel is

.. math::

    k_0(x, y) = s(x)^\top s(y)\, k(x, y) + s(x)^\top \nabla_y k(x, y) + s(y)^\top \nabla_x k(x, y)
                + \sum_i \partial_{x_i} \partial_{y_i} k(x, y),

and KSD²(q ‖ p) = E_{x, y ~ q} k₀(x, y), zero iff q = p (for the kernels here, under mild
conditions on p and q). Here k is the IMQ kernel
k(x, y) = (c² + ‖x − y‖²_Γ)^β, c > 0, −1 < β < 0, ‖r‖²_Γ = rᵀΓ⁻¹r with a diagonal Γ
(per-coordinate squared length scales). Gorham & Mackey prove that with this kernel the KSD detects
non-convergence (KSD → 0 implies weak convergence) for distantly dissipative targets, which the
Gaussian and Matérn kernels fail to do in d ≥ 3; their experiments use c = 1, β = −1/2, the
defaults here.

- `imq_stein_kernel`: k₀ for one pair of points.
- `ksd`: the V-statistic KSD or the U-statistic of KSD² over n draws, summed in blocks so memory
  stays O(block_size² + n·d) while the cost is O(n²·d); jit-compatible.
- `scores_from`: the scores ∇ log p at every draw of a pytree of draws, from a posteriors-style
  `log_posterior(params, batch) -> (value, aux)`.

**Noisy scores.** k₀ is linear in s(x) and separately in s(y). With minibatch scores whose
noise is independent across draws, every off-diagonal term keeps its expectation, so the
U-statistic stays unbiased; the V-statistic's diagonal gains c^{2β} Σ_i tr Cov(s̃(x_i)) / n², an
upward bias. Scores from ONE minibatch shared by all draws are the exact scores of another
target (the minibatch posterior) and bias both statistics; use full-data scores, or
independent minibatches per draw (`scores_from(..., per_draw_batches=True)`) with
`statistic="u"`.

References:
    Gorham, J. and Mackey, L. (2017). `Measuring Sample Quality with Kernels
    <https://arxiv.org/abs/1703.01717>`_. ICML 2017, PMLR 70.

    Liu, Q., Lee, J. D. and Jordan, M. I. (2016). `A Kernelized Stein Discrepancy for
    Goodness-of-fit Tests <https://arxiv.org/abs/1602.03253>`_. ICML 2016.

    Chwialkowski, K., Strathmann, H. and Gretton, A. (2016). `A Kernel Test of Goodness of Fit
    <https://arxiv.org/abs/1602.02964>`_. ICML 2016.

    Riabiz, M. et al. (2022). Optimal thinning of MCMC output. JRSS-B 84(4) (the preconditioned
    IMQ kernel and the median length scale).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.core  # Tracer: `import jax` alone does not bind the submodule for type checkers
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks
from sghmc_jax.types import ArrayTree, LogProbFn

__all__ = ["imq_stein_kernel", "ksd", "scores_from"]

_STATISTICS = ("v", "u")
# The median heuristic looks at this many draws at most (evenly spaced), so its cost stays
# O(1000²) whatever n: half a million pairwise distances pin the median down to well under 1%.
_MEDIAN_MAX_DRAWS = 1000
_C_RULE: _checks.Rule = ("c", lambda v: v > 0, "> 0")
_BETA_RULE: _checks.Rule = ("beta", lambda v: -1 < v < 0, "in (-1, 0)")
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32/bf16 passes for float32 products on accelerators


# --------------------------------------------------------------------------------------------
# The formula: the only place k₀ is written down. `imq_stein_kernel` and the blocked sums of
# `ksd` both call it, with the pair summaries computed directly or from Gram matrices.
# --------------------------------------------------------------------------------------------


def _k0(
    sxy: jax.Array,
    u: jax.Array,
    v: jax.Array,
    q: jax.Array,
    p: jax.Array,
    trace_a: jax.Array,
    c: jax.Array,
    beta: jax.Array,
) -> jax.Array:
    """k₀ of the preconditioned IMQ kernel from the summaries of a pair (x, y), r = x − y, A = Γ⁻¹:
    sxy = s(x)ᵀs(y), u = s(x)ᵀAr, v = s(y)ᵀAr, q = rᵀAr, p = ‖Ar‖², trace_a = tr A.
    Elementwise: any broadcastable shapes."""
    b = c * c + q
    kb = b**beta  # b^β
    k1 = kb / b  # b^(β−1)
    k2 = k1 / b  # b^(β−2)
    return sxy * kb - 2 * beta * k1 * (u - v) - 2 * beta * trace_a * k1 - 4 * beta * (beta - 1) * p * k2


def _compute_dtype() -> Any:
    """float64 when x64 is enabled, float32 otherwise."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _check_c_beta(c: Any, beta: Any) -> None:
    for name, value in (("c", c), ("beta", beta)):
        if callable(value):
            raise TypeError(f"`{name}` must be a real number, not a callable, got {value!r}")
    _checks.check_rules({"c": c, "beta": beta}, [_C_RULE, _BETA_RULE])


def _check_real(name: str, value: Any) -> tuple[int, ...]:
    """The shape of `value`, or a TypeError naming `name` unless it holds real numbers. Nothing
    is converted or moved: validation runs on the host, before anything compiles."""
    try:
        kind = getattr(value, "dtype", None)
        kind = np.asarray(value).dtype if kind is None else kind
        real = jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)
    except (TypeError, ValueError):
        kind, real = type(value).__name__, False
    if not real:
        raise TypeError(
            f"`{name}` must hold real numbers (a float or int dtype), got {kind} of shape {np.shape(value)}"
        )
    return tuple(np.shape(value))


def _check_positive(name: str, value: Any) -> None:
    """Raises unless every entry of `value` is finite and > 0 (None and traced values pass)."""
    if value is None or _is_traced(value):
        return
    arr = np.asarray(value)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        where = f" at index {tuple(int(i) for i in np.argwhere(bad)[0])}" if arr.ndim else ""
        first = float(arr[bad].flat[0])
        raise ValueError(f"`{name}` must be finite and > 0 (squared length scales), got {first!r}{where}")


# --------------------------------------------------------------------------------------------
# One pair of points
# --------------------------------------------------------------------------------------------


def imq_stein_kernel(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    score_x: jax.typing.ArrayLike,
    score_y: jax.typing.ArrayLike,
    *,
    c: jax.typing.ArrayLike = 1.0,
    beta: jax.typing.ArrayLike = -0.5,
    scale: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""The Stein kernel k₀(x, y) of the (preconditioned) IMQ kernel, for one pair of points.

    With r = x − y, A = Γ⁻¹ (Γ = diag(`scale`), the identity when `scale` is None),
    b = c² + rᵀAr and d the dimension:

    .. math::

        k_0(x, y) = s_x^\top s_y\, b^\beta - 2\beta b^{\beta-1} s_x^\top A r
                    + 2\beta b^{\beta-1} s_y^\top A r - 2\beta\, \mathrm{tr}(A)\, b^{\beta-1}
                    - 4\beta(\beta-1) \|A r\|^2 b^{\beta-2},

    the Langevin Stein operator applied to k(x, y) = b^β in both arguments (Gorham & Mackey's
    kernel with the preconditioning of Riabiz et al.). It is symmetric, and on the diagonal
    k₀(x, x) = ‖s_x‖² c^{2β} − 2β tr(A) c^{2β−2}. Computed in float64 when x64 is enabled,
    float32 otherwise; `jax.vmap` it for many pairs (`ksd` sums it over all pairs of draws).

    Args:
        x: a point, a flat vector of length d.
        y: a point, a flat vector of length d.
        score_x: s(x) = ∇ log p(x), a flat vector of length d.
        score_y: s(y) = ∇ log p(y), a flat vector of length d.
        c: the IMQ offset c > 0.
        beta: the IMQ exponent, −1 < β < 0.
        scale: Γ's diagonal, the squared length scale of each coordinate: a positive scalar or a
            vector of length d; None is the identity.

    Returns:
        k₀(x, y), a scalar array.

    Raises:
        TypeError: if an input is not real, or `scale` is a string (use `ksd` for "median").
        ValueError: if the points or scores are not flat vectors of one length, or `c`, `beta`
            or `scale` (when concrete) break their rules.

    Example:
        >>> import jax.numpy as jnp
        >>> from sghmc_jax.stein import imq_stein_kernel
        >>> x = jnp.array([1.0, 0.0])
        >>> imq_stein_kernel(x, x, -x, -x)  # ‖s‖²·1 + d: (1 + 2)
        Array(3., dtype=float32)

    References:
        Gorham & Mackey, `Measuring Sample Quality with Kernels
        <https://arxiv.org/abs/1703.01717>`_, ICML 2017.
        Liu, Lee & Jordan, `A Kernelized Stein Discrepancy for Goodness-of-fit Tests
        <https://arxiv.org/abs/1602.03253>`_, ICML 2016.
    """
    _check_c_beta(c, beta)
    named = {"x": x, "y": y, "score_x": score_x, "score_y": score_y}
    shapes = {name: _check_real(name, value) for name, value in named.items()}
    for name, shape in shapes.items():
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(
                f"`{name}` must be a flat vector (1-D, length >= 1), got shape {shape}; for "
                "many points use `ksd`, or `jax.vmap` this function"
            )
        if shape != shapes["x"]:
            raise ValueError(f"`{name}` must have the shape of `x`, {shapes['x']}, got shape {shape}")
    d = shapes["x"][0]
    if isinstance(scale, str):
        raise TypeError(
            f"`scale` must be None, a positive scalar or a vector of length {d} for one pair "
            f"(the median heuristic needs many draws: use `ksd`), got {scale!r}"
        )
    if scale is not None and _check_real("scale", scale) not in ((), (d,)):
        raise ValueError(
            f"`scale` must be None, a positive scalar or a vector of length d={d}, got shape {np.shape(scale)}"
        )
    _check_positive("scale", scale)
    return _pair(x, y, score_x, score_y, 1.0 if scale is None else scale, c, beta)


@jax.jit
def _pair(x: Any, y: Any, sx: Any, sy: Any, scale: Any, c: Any, beta: Any) -> jax.Array:
    dtype = _compute_dtype()
    x, y, sx, sy, scale, c, beta = (jnp.asarray(v, dtype) for v in (x, y, sx, sy, scale, c, beta))
    a = 1 / scale
    r = x - y
    ar = a * r
    trace_a = a * x.shape[0] if a.ndim == 0 else jnp.sum(a)
    return _k0(sx @ sy, sx @ ar, sy @ ar, r @ ar, ar @ ar, trace_a, c, beta)


# --------------------------------------------------------------------------------------------
# Draws as a matrix
# --------------------------------------------------------------------------------------------


def _check_draws(name: str, tree: ArrayTree) -> tuple[Any, list[tuple[int, ...]]]:
    """`(treedef, leaf shapes)` of a pytree of draws, every leaf real with one leading axis n."""
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    if not path_leaves:
        raise ValueError(f"`{name}` must hold at least one array, got an empty pytree {tree!r}")
    shapes: list[tuple[int, ...]] = []
    for path, leaf in path_leaves:
        label = f"{name}{jax.tree_util.keystr(path)}"
        shape = _check_real(label, leaf)
        if not shape:
            raise ValueError(
                f"every leaf of `{name}` must have a leading axis of draws (shape (n, ...)), got a scalar at `{label}`"
            )
        if shapes and shape[0] != shapes[0][0]:
            raise ValueError(
                f"every leaf of `{name}` must have the same leading axis (the number of draws), got "
                f"{shape[0]} at `{label}` and {shapes[0][0]} before it"
            )
        shapes.append(shape)
    return treedef, shapes


def _scale_kind(scale: Any, treedef: Any, shapes: list[tuple[int, ...]], d: int) -> str:
    """Validates `ksd`'s `scale` and says how to read it: "identity", "median", "array" (a
    scalar or a length-d vector), "leaf" (one array leaf's draw shape) or "tree"."""
    if scale is None:
        return "identity"
    if isinstance(scale, str):
        if scale != "median":
            raise ValueError(
                f"`scale` must be None, 'median', a positive scalar, a vector of length d={d} or a "
                f"pytree like one draw, got the string {scale!r}"
            )
        return "median"
    rule = (
        f"`scale` must be None, 'median', a positive scalar, a vector of length d={d}, or a pytree "
        "like one draw (each leaf of the draw's shape, or a scalar)"
    )
    if isinstance(scale, (int, float, np.ndarray, np.number, jax.Array)) and not isinstance(scale, bool):
        shape = _check_real("scale", scale)
        _check_positive("scale", scale)
        if shape in ((), (d,)):
            return "array"
        if len(shapes) == 1 and shape == shapes[0][1:]:
            return "leaf"
        raise ValueError(f"{rule}, got an array of shape {shape}")
    leaves, scale_def = jax.tree_util.tree_flatten(scale)
    if scale_def != treedef:
        raise ValueError(f"{rule}; its structure {scale_def} differs from the draws' {treedef}")
    for leaf, shape in zip(leaves, shapes, strict=True):
        leaf_shape = _check_real("scale", leaf)
        if leaf_shape not in ((), shape[1:]):
            raise ValueError(f"{rule}; a leaf of shape {leaf_shape} stands for draws of shape {shape[1:]}")
        _check_positive("scale", leaf)
    return "tree"


def _as_matrix(tree: ArrayTree, dtype: Any) -> jax.Array:
    """Each draw as one row: the leaves reshaped to (n, -1) and concatenated in tree order."""
    leaves = [jnp.asarray(leaf, dtype) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)


def _inverse_scale(scale: Any, kind: str, x: jax.Array, draws: ArrayTree) -> tuple[jax.Array, jax.Array]:
    """(A = Γ⁻¹ of shape () or (d,), ℓ² of the median heuristic or NaN) inside the compiled ksd."""
    dtype = x.dtype
    nan = jnp.full((), jnp.nan, dtype)
    if kind == "identity":
        return jnp.ones((), dtype), nan
    if kind == "median":
        n = x.shape[0]
        # Evenly spaced rather than random: deterministic, needs no key, and thins a chain's
        # autocorrelated draws the way a user would.
        index = np.unique(np.round(np.linspace(0, n - 1, min(n, _MEDIAN_MAX_DRAWS))).astype(np.int64))
        ell2 = _median_sq_distance(x[index])
        return 1 / ell2, ell2
    if kind == "array":
        return 1 / jnp.asarray(scale, dtype), nan
    if kind == "leaf":
        return 1 / jnp.asarray(scale, dtype).reshape(-1), nan
    leaves, draw_leaves = jax.tree_util.tree_leaves(scale), jax.tree_util.tree_leaves(draws)
    parts = [
        jnp.broadcast_to(jnp.asarray(leaf, dtype), jnp.shape(draw)[1:]).reshape(-1)
        for leaf, draw in zip(leaves, draw_leaves, strict=True)
    ]
    return 1 / jnp.concatenate(parts), nan


@jax.jit
def _median_sq_distance(x: jax.Array) -> jax.Array:
    m = x.shape[0]
    x = x - jnp.mean(x, axis=0)
    sq = jnp.sum(x * x, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * jnp.matmul(x, x.T, precision=_HIGHEST), 0)
    # The m(m−1)/2 pairs i < j sort first and the rest (+inf) after; a mask from iotas rather
    # than gathered triangle indices, which XLA would embed as a constant and compile slowly.
    rows = jax.lax.broadcasted_iota(jnp.int32, (m, m), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (m, m), 1)
    ordered = jnp.sort(jnp.where(rows < cols, d2, jnp.inf).ravel())
    pairs = m * (m - 1) // 2
    return ((jnp.sqrt(ordered[(pairs - 1) // 2]) + jnp.sqrt(ordered[pairs // 2])) / 2) ** 2


# --------------------------------------------------------------------------------------------
# The blocked double sum
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("block_size",))
def _stein_sums(
    x: jax.Array, s: jax.Array, a: jax.Array, c: Any, beta: Any, block_size: int
) -> tuple[jax.Array, jax.Array]:
    """(KSD_V, U-statistic of KSD²) over the rows of x (n, d) and s (n, d), from
    Σ_{i≠j} k₀(x_i, x_j) and Σ_i k₀(x_i, x_i); both come almost free with the double sum.

    The n×n matrix is never formed: the upper triangle of blocks of `block_size` rows and
    columns is mapped over (`lax.map`, one block at a time; an off-diagonal block counts twice,
    k₀ being symmetric), and each block's summaries come from Gram matrices (GEMMs, O(B² + B·d)
    memory). Each block is summed row by row, then the blocks' sums are summed, so no single
    accumulator takes n² terms.
    """
    n, d = x.shape
    c, beta = jnp.asarray(c, x.dtype), jnp.asarray(beta, x.dtype)
    # k₀ depends on the draws only through x − y: centring first keeps the expansion
    # ‖x − y‖² = ‖x‖² + ‖y‖² − 2xᵀy accurate for draws far from the origin.
    x = x - jnp.mean(x, axis=0)
    size = min(block_size, n)
    blocks = -(-n // size)
    pad = blocks * size - n
    x = jnp.pad(x, ((0, pad), (0, 0)))
    s = jnp.pad(s, ((0, pad), (0, 0)))
    real = jnp.arange(blocks * size) < n
    isotropic = a.ndim == 0
    trace_a = a * d if isotropic else jnp.sum(a)
    ax = a * x
    q_self = jnp.sum(ax * x, axis=1)  # x_iᵀ A x_i
    u_self = jnp.sum(ax * s, axis=1)  # s_iᵀ A x_i
    p_self = q_self if isotropic else jnp.sum(ax * ax, axis=1)  # ‖A x_i‖² (unused if isotropic)
    eye = jnp.eye(size, dtype=bool)

    def gram(left: jax.Array, right: jax.Array) -> jax.Array:
        return jnp.matmul(left, right.T, precision=_HIGHEST)

    def block(ij: tuple[jax.Array, jax.Array]) -> jax.Array:
        i, j = ij

        def rows(arr: jax.Array, k: jax.Array) -> jax.Array:
            return jax.lax.dynamic_slice_in_dim(arr, k * size, size)

        xi, si, axi, qi, ui, pi, ri = (rows(t, i) for t in (x, s, ax, q_self, u_self, p_self, real))
        sj, axj, qj, uj, pj, rj = (rows(t, j) for t in (s, ax, q_self, u_self, p_self, real))
        q = jnp.maximum(qi[:, None] + qj[None, :] - 2 * gram(xi, axj), 0)  # rᵀAr
        if isotropic:
            p = a * q  # ‖Ar‖² = a·rᵀAr
        else:
            p = jnp.maximum(pi[:, None] + pj[None, :] - 2 * gram(axi, axj), 0)
        u = ui[:, None] - gram(si, axj)  # s_iᵀA(x_i − x_j)
        v = gram(axi, sj) - uj[None, :]  # s_jᵀA(x_i − x_j)
        h = _k0(gram(si, sj), u, v, q, p, trace_a, c, beta)
        keep = ri[:, None] & rj[None, :] & ~(eye & (i == j))
        total = jnp.sum(jnp.sum(jnp.where(keep, h, 0), axis=1))
        return jnp.where(i == j, 1, 2) * total

    upper_i, upper_j = np.triu_indices(blocks)
    off_diagonal = jnp.sum(jax.lax.map(block, (jnp.asarray(upper_i), jnp.asarray(upper_j))))
    zero = jnp.zeros((), x.dtype)
    diagonal_terms = _k0(jnp.sum(s * s, axis=1), zero, zero, zero, zero, trace_a, c, beta)  # k₀(x_i, x_i)
    diagonal = jnp.sum(jnp.where(real, diagonal_terms, 0))
    v = jnp.sqrt(jnp.maximum((off_diagonal + diagonal) / (n * n), 0))
    return v, off_diagonal / (n * (n - 1))


def ksd(
    draws: ArrayTree,
    scores: ArrayTree,
    *,
    c: jax.typing.ArrayLike = 1.0,
    beta: jax.typing.ArrayLike = -0.5,
    scale: ArrayTree | str | None = None,
    statistic: str = "v",
    block_size: int = 1024,
) -> jax.Array:
    r"""Kernel Stein discrepancy of draws: KSD_V (`statistic="v"`) or the U-statistic of KSD² ("u").

    `statistic="v"` returns KSD_V, the square root of the V-statistic of KSD²; `statistic="u"`
    returns the U-statistic of KSD² itself, not square-rooted. With H_ij = k₀(x_i, x_j) the IMQ
    Stein kernel (see `imq_stein_kernel`), b = c² + rᵀΓ⁻¹r:

    .. math::

        \mathrm{KSD}_V = \Big(\frac{1}{n^2} \sum_{i, j} H_{ij}\Big)^{1/2},
        \qquad
        \mathrm{KSD}^2_U = \frac{1}{n(n-1)} \sum_{i \ne j} H_{ij}.

    The V-statistic of KSD² (the mean of all n² entries of H, diagonal included) is >= 0, k₀
    being positive definite, and biased upward: under exact independent draws from the target
    E KSD_V² = E k₀(x, x)/n, e.g. 2d/n for the target N(0, I) at c = 1, β = −1/2, Γ = I, so
    KSD_V shrinks like 1/√n rather than vanishing. The U-statistic (the mean of the n(n − 1)
    off-diagonal entries) is unbiased for KSD²(q ‖ p) and may be negative; under the target its
    mean is 0. To compare samplers use the same n (or the U-statistic); to test, compare with the
    values reached by exact draws of the same size.

    **Noisy scores.** With unbiased stochastic scores whose noise is independent across draws,
    the U-statistic stays unbiased and the V-statistic's KSD² gains c^{2β} Σ_i tr Cov(s̃(x_i)) / n²,
    whatever Γ (the score term of k₀(x, x) is ‖s(x)‖² c^{2β}). Scores from one shared minibatch
    are the exact scores of a different target and bias both.

    **Scale.** The IMQ kernel is not scale-free: with parameters far from unit scale the kernel
    sees every pair as either identical or far apart, and the KSD loses power. `scale="median"`
    sets Γ = ℓ²I with ℓ the median pairwise Euclidean distance among at most 1000 evenly spaced
    draws (all of them when n <= 1000); a vector or pytree sets per-coordinate squared lengths
    (e.g. the posterior variances). A statistic computed with one scale is comparable only with
    statistics computed with the same scale: fix it (e.g. from a reference run) when comparing
    runs, since the median changes with the draws.

    Cost O(n²·d) flops in GEMMs, memory O(block_size² + n·d): n×n is never formed. Computed in
    float64 when x64 is enabled, float32 otherwise. Works under `jax.jit` and `jax.vmap` (with
    `scale="median"` under a trace, constant draws give NaN instead of an error).

    Args:
        draws: the draws x_1..x_n: an array of shape (n, d), or a pytree whose leaves have a
            leading axis n (e.g. `SampleResult.samples` of one chain); each draw is flattened
            into a vector (leaves in tree order, each raveled).
        scores: ∇ log p at each draw, with the structure and shapes of `draws` (`scores_from`
            computes them from a log posterior).
        c: the IMQ offset c > 0.
        beta: the IMQ exponent, −1 < β < 0.
        scale: Γ's diagonal (squared length scales): None (identity), "median", a positive scalar,
            a vector of length d, or a pytree like one draw (each leaf a scalar or of the draw's
            leaf shape).
        statistic: "v" for KSD_V (the square root of the V-statistic), "u" for the U-statistic
            of KSD².
        block_size: rows and columns of each block of the n×n sum (a Python int >= 1); memory
            grows like its square. The result does not depend on it beyond rounding.

    Returns:
        A scalar array: for `statistic="v"`, KSD_V = √(V-statistic of KSD²) >= 0 (a discrepancy,
        in the units of the KSD); for `statistic="u"`, the U-statistic of KSD² itself (a squared
        discrepancy, possibly negative: compare it with 0, never take its square root).

    Raises:
        TypeError: if draws, scores or scale hold non-real data, or `statistic` or `block_size`
            have the wrong type.
        ValueError: if scores do not match draws, n < 2, or an argument breaks its rule.

    Example:
        >>> import jax
        >>> from sghmc_jax.stein import ksd
        >>> x = jax.random.normal(jax.random.key(0), (300, 3))  # draws from N(0, I)
        >>> good = ksd(x, -x)  # the scores of N(0, I) are −x
        >>> bad = ksd(x + 0.5, -(x + 0.5))  # draws from N(0.5, I), same target
        >>> bool(bad > 3 * good)
        True
        >>> bool(abs(ksd(x, -x, statistic="u")) < 0.02)  # KSD², unbiased: 0 for exact draws
        True
        >>> params = {"w": x[:, :2], "b": x[:, 2]}  # a pytree of draws, leading axis n = 300
        >>> bool(jax.numpy.isclose(ksd(params, jax.tree.map(lambda p: -p, params)), good))
        True

    References:
        Gorham & Mackey, `Measuring Sample Quality with Kernels
        <https://arxiv.org/abs/1703.01717>`_, ICML 2017.
        Liu, Lee & Jordan, `A Kernelized Stein Discrepancy for Goodness-of-fit Tests
        <https://arxiv.org/abs/1602.03253>`_, ICML 2016.
    """
    if not isinstance(statistic, str):
        raise TypeError(f"`statistic` must be the string 'v' or 'u', got {type(statistic).__name__}: {statistic!r}")
    if statistic not in _STATISTICS:
        raise ValueError(f"`statistic` must be 'v' (V-statistic KSD) or 'u' (U-statistic of KSD²), got {statistic!r}")
    block_size = _checks.check_int("block_size", block_size, 1)
    _check_c_beta(c, beta)
    treedef, shapes = _check_draws("draws", draws)
    score_def, score_shapes = _check_draws("scores", scores)
    if score_def != treedef:
        raise ValueError(f"`scores` must have the structure of `draws`, {treedef}, got {score_def}")
    for shape, score_shape in zip(shapes, score_shapes, strict=True):
        if shape != score_shape:
            raise ValueError(
                f"`scores` must have the shapes of `draws`, got a leaf of shape {score_shape} where `draws` has {shape}"
            )
    n, d = shapes[0][0], sum(math.prod(shape[1:]) for shape in shapes)
    if n < 2:
        raise ValueError(f"`draws` must hold n >= 2 draws (the leading axis), got n={n}")
    if d < 1:
        raise ValueError(f"`draws` must have at least one coordinate per draw, got d={d}")
    kind = _scale_kind(scale, treedef, shapes, d)
    x, s, a, ell2 = _prepare(draws, scores, None if kind in ("identity", "median") else scale, kind)
    if kind == "median" and not _is_traced(ell2):
        ell2 = float(ell2)
        if not (math.isfinite(ell2) and ell2 > 0):
            raise ValueError(
                f"`scale`='median' needs a median pairwise distance > 0 between the draws, got "
                f"{ell2!r} (more than half of the pairs of draws are identical, or some draws are not "
                "finite); pass `scale` explicitly"
            )
    v, u = _stein_sums(x, s, a, c, beta, block_size)
    return v if statistic == "v" else u


@functools.partial(jax.jit, static_argnames=("kind",))
def _prepare(
    draws: ArrayTree, scores: ArrayTree, scale: Any, kind: str
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(draws (n, d), scores (n, d), A = Γ⁻¹ of shape () or (d,), ℓ² of the median heuristic or
    NaN), in the compute dtype. Compiled apart from the sums, which every pytree structure and
    every kind of scale with the same (n, d) then shares."""
    dtype = _compute_dtype()
    x, s = _as_matrix(draws, dtype), _as_matrix(scores, dtype)
    a, ell2 = _inverse_scale(scale, kind, x, draws)
    return x, s, a, ell2


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def scores_from(
    log_posterior: LogProbFn,
    draws: ArrayTree,
    batch: Any,
    *,
    temperature: jax.typing.ArrayLike | None = None,
    per_draw_batches: bool = False,
    chunk_size: int = 64,
) -> ArrayTree:
    r"""The scores ∇_θ log p_T(θ) at every draw, from a posteriors-style log posterior.

    .. math::

        s(\theta_i) = \frac{1}{T} \nabla_\theta\, \mathrm{value}(\theta_i, \mathrm{batch}),
        \qquad (\mathrm{value}, \mathrm{aux}) = \mathrm{log\_posterior}(\theta_i, \mathrm{batch}),

    the score of the distribution a sampler at temperature T targets, p_T ∝ exp(value / T).
    Pass the whole data set as `batch` for full-data scores; for control-variate scores pass a
    log posterior whose gradient is the control-variate estimate. Draws are mapped over in
    chunks of `chunk_size` (`lax.map` with vmapped chunks), so memory is that of `chunk_size`
    gradients at once. Compiled once per `log_posterior` (by identity), `chunk_size` and shapes:
    define the log posterior once, not inline in the call.

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)` with a scalar value.
        draws: a pytree of draws whose leaves have a leading axis n (one chain's samples).
        batch: the data given to every evaluation (the whole data set for exact scores), or,
            with `per_draw_batches=True`, a pytree whose leaves have a leading axis n, batch i
            going with draw i (independent minibatches keep `ksd(..., statistic="u")` unbiased).
        temperature: T > 0 the score is divided by. None takes `log_posterior.temperature` when
            it has one (a `ScaledLogPosterior`: so `form="mean"` gives the scores of the
            posterior, not of its 1/N-scaled value), else 1.
        per_draw_batches: whether `batch` holds one batch per draw along a leading axis.
        chunk_size: draws evaluated together (a Python int >= 1).

    Returns:
        A pytree like `draws`: the score at every draw, in the dtypes of the gradients.

    Raises:
        TypeError: if `log_posterior` is not callable or does not return `(scalar, aux)`, a
            leaf of `draws` is not floating-point, `temperature` is a schedule, or
            `chunk_size` is not an int.
        ValueError: if the draws (or per-draw batches) lack a common leading axis, or
            `temperature` or `chunk_size` break their rules.

    Example:
        >>> import jax.numpy as jnp
        >>> from sghmc_jax.stein import ksd, scores_from
        >>> log_post = lambda w, batch: (-0.5 * jnp.sum((w - batch) ** 2), None)  # N(batch, I)
        >>> draws = jnp.array([[0.0, 3.0], [2.0, -1.0], [4.0, 0.5]])  # 3 draws of 2 coordinates
        >>> scores_from(log_post, draws, jnp.ones(2))  # batch − w
        Array([[ 1. , -2. ],
               [-1. ,  2. ],
               [-3. ,  0.5]], dtype=float32)
        >>> round(float(ksd(draws, scores_from(log_post, draws, jnp.ones(2)))), 3)  # KSD_V
        1.593

    References:
        Gorham & Mackey, `Measuring Sample Quality with Kernels
        <https://arxiv.org/abs/1703.01717>`_, ICML 2017.
    """
    if not callable(log_posterior):
        raise TypeError(
            f"`log_posterior` must be a callable `log_posterior(params, batch) -> (value, aux)`, "
            f"got {type(log_posterior).__name__}: {log_posterior!r}"
        )
    if not isinstance(per_draw_batches, bool):
        raise TypeError(f"`per_draw_batches` must be a bool, got {per_draw_batches!r}")
    chunk_size = _checks.check_int("chunk_size", chunk_size, 1)
    if temperature is None:
        temperature = getattr(log_posterior, "temperature", 1.0)
    if callable(temperature):
        raise TypeError(
            f"`temperature` must be a real number (the sampler's temperature when the draws were "
            f"made), not a schedule, got {temperature!r}"
        )
    _checks.check_rules({"temperature": temperature}, [("temperature", lambda v: v > 0, "> 0")])
    n = _leading_axis("draws", draws)
    _checks.check_float_tree("draws", draws)  # gradients are taken with respect to them
    if per_draw_batches:
        n_batch = _leading_axis("batch", batch)
        if n_batch != n:
            raise ValueError(
                f"`batch` must hold one batch per draw with per_draw_batches=True: a leading axis of "
                f"n={n}, got {n_batch}"
            )

    # One draw's shapes (no slicing: nothing runs before the checks pass).
    def first(tree: Any) -> Any:
        return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(jnp.shape(leaf)[1:], jnp.result_type(leaf)), tree)

    _checks.check_log_posterior_output(
        jax.eval_shape(log_posterior, first(draws), first(batch) if per_draw_batches else batch)
    )
    try:
        hash(log_posterior)
    except TypeError:  # an unhashable callable cannot key the compilation cache: compile afresh
        scores = jax.jit(functools.partial(_scores_impl, log_posterior), static_argnums=(3, 4))
        return scores(draws, batch, temperature, per_draw_batches, min(chunk_size, n))
    return _scores(log_posterior, draws, batch, temperature, per_draw_batches, min(chunk_size, n))


def _leading_axis(name: str, tree: ArrayTree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array with a leading axis n, got {tree!r}")
    sizes = {jnp.shape(leaf)[0] for leaf in leaves if jnp.ndim(leaf)}
    if any(jnp.ndim(leaf) == 0 for leaf in leaves) or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"every leaf of `{name}` must have the same leading axis n >= 1 (one entry per draw), "
            f"got leaves of shapes {[jnp.shape(leaf) for leaf in leaves]}"
        )
    return sizes.pop()


def _scores_impl(
    log_posterior: Callable[..., Any],
    draws: ArrayTree,
    batch: Any,
    temperature: jax.Array,
    per_draw_batches: bool,
    chunk_size: int,
) -> ArrayTree:
    def value(params: ArrayTree, data: Any) -> jax.Array:
        return log_posterior(params, data)[0]

    if per_draw_batches:
        grads = jax.lax.map(lambda pair: jax.grad(value)(*pair), (draws, batch), batch_size=chunk_size)
    else:
        grads = jax.lax.map(lambda params: jax.grad(value)(params, batch), draws, batch_size=chunk_size)
    return jax.tree.map(lambda g: (g / temperature).astype(g.dtype), grads)


_scores = jax.jit(_scores_impl, static_argnames=("log_posterior", "per_draw_batches", "chunk_size"))
