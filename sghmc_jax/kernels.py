"""The update maths: pure functions on pytrees, the only place each algorithm's rule lives.

Every face of the library (the optax transforms, the posteriors-style functional API, the
sampler) calls these functions, so given the same keys they produce bit-identical chains.

Arithmetic runs in at least float32 (bf16/f16 leaves are promoted for the update and stored back
in their own dtype); each leaf keeps its dtype. Noise comes from one step key through a fixed,
documented layout (`normal_like`): a threefry2x32 hash of each element's flat position turned into
an exact normal, generated inside the update's fused loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _checks
from sghmc_jax.types import ArrayTree

__all__ = ["normal_like", "init_momenta", "resolve_momenta", "sghmc_step", "split_key"]


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the update is computed in: the leaf's, but never below float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _no_fma(x: Any) -> Any:
    return jax.lax.optimization_barrier(x)


# ---------------------------------------------------------------------------------------------
# Gaussian noise: threefry2x32 counter hashing + an exact bits -> normal transform.
#
# jax.random.normal costs ~30x an SGD-momentum update on CPU because XLA:CPU lowers threefry as
# a rolled while loop that cannot fuse with the update (and the partitionable layout hashes every
# element twice). Here the same hash is written out in plain uint32 ops so it fuses into the
# update's loop, and each 64-bit hash output becomes one normal by a "half Box-Muller" transform.
# See benchmarks/README.md for the measurements behind every choice below.
# ---------------------------------------------------------------------------------------------

_U32 = jnp.uint32
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
# cos(pi/2 * v) = sum_k _COS[k] * (v*v)**k on [0, 1], a degree-5 Chebyshev fit: max error 7e-10,
# well below float32's resolution (evaluated in float32 the error is ~1 ulp, 1.3e-7).
_COS_HALF_PI = (
    0.9999999998457044,
    -1.233700538086723,
    0.25366935703338306,
    -0.020862795129400275,
    0.0009178587303443954,
    -2.388307233643584e-05,
)
# Leaves smaller than _SMALL_LEAF share one generator per "bin" of consecutive leaves holding at
# most _BIN_ELEMENTS elements (see _small_leaf_noise); larger leaves get their own generator fused
# into their update.
_SMALL_LEAF = 1 << 20
_BIN_ELEMENTS = 1 << 20
_MAX_LEAF_ELEMENTS = (1 << 32) - 1


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << _U32(r)) | (x >> _U32(32 - r))


def _threefry2x32(
    k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), bit-identical to JAX's own hash.

    Written in elementwise uint32 ops, so XLA fuses it into its consumer, unlike JAX's CPU
    lowering (a rolled loop); `tests/test_noise.py` checks it against
    `jax.extend.random.threefry_2x32`.
    """
    ks = (k0, k1, k0 ^ k1 ^ _U32(0x1BD11BDA))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r)
            x1 = x0 ^ x1
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + _U32(i + 1)
    return x0, x1


def _normal_from_bits(b0: jax.Array, b1: jax.Array, dtype: Any) -> jax.Array:
    r"""One exact N(0, 1) draw from 64 uniform bits: X = S·sqrt(−2 ln U)·cos(πV/2).

    With U ~ U(0, 1), V ~ U(0, 1) and a random sign S independent, X is exactly standard
    normal: (R, Θ) = (sqrt(−2 ln U), 2πV') is the polar form of a standard bivariate normal
    (Box & Muller 1958), so R cos Θ ~ N(0, 1), and cos Θ has the law of S·cos(πV/2). Only the
    cosine half of Box–Muller is kept so that each element needs its own 64 bits and nothing
    else, which keeps generation elementwise (fusable, partitionable).

    U = (b0 + ½)·2⁻³² from all 32 bits of `b0` (never 0, so no infinities; the tail of R is
    exact down to P(R > r) = 2⁻³³, i.e. |X| up to 6.8σ, where N(0, 1) has mass 1.1e-11 beyond);
    S is the top bit of `b1` and V its other 31 bits.
    """
    f = jnp.float64 if dtype == jnp.float64 else jnp.float32
    u = (b0.astype(f) + f(0.5)) * f(2.0**-32)
    radius = jnp.sqrt(f(-2.0) * jnp.log(u))
    v = (b1 & _U32(0x7FFFFFFF)).astype(f) * f(2.0**-31)
    if f == jnp.float64:
        cos = jnp.cos(f(jnp.pi / 2) * v)
    else:
        w = v * v
        cos = jnp.full_like(w, _COS_HALF_PI[-1])
        for c in _COS_HALF_PI[-2::-1]:
            cos = cos * w + f(c)
    x = radius * cos
    return jnp.where(b1 >= _U32(0x80000000), -x, x)


def _noise_dtype(dtype: Any) -> Any:
    """Noise is generated in float64 for float64 leaves and in float32 for every other float."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


# Counter words reserved for deriving the noise key from a threefry key, so that the noise never
# reuses a hash input that jax.random would use for the same key ("SGHN" in ASCII, then 0).
_KEY_DOMAIN = (0x5347484E, 0)


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two 32-bit words that key every element's hash, drawn from the step key.

    For threefry keys (JAX's default) they are one threefry2x32 hash of the key under a reserved
    counter, computed inline: `jax.random.bits` would cost a rolled loop per step on CPU. Any
    other implementation (rbg, unsafe_rbg, philox, ...) goes through `jax.random.bits`.
    """
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if str(jax.random.key_impl(key)) == "threefry2x32":
        data = jax.random.key_data(key)
        return _threefry2x32(data[0], data[1], _U32(_KEY_DOMAIN[0]), _U32(_KEY_DOMAIN[1]))
    words = jax.random.bits(key, (2,), jnp.uint32)
    return words[0], words[1]


def split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`jax.random.split(key)` as two keys, bit for bit, without JAX's CPU loop for threefry.

    For threefry keys JAX's CPU lowering of the hash is a rolled while loop, which costs ~50 µs
    per call on CPU, a quarter of a small model's whole training step; the same two hashes
    written inline cost nothing measurable. Other key implementations use `jax.random.split`.
    """
    if str(jax.random.key_impl(key)) != "threefry2x32":
        pair = jax.random.split(key)
        return pair[0], pair[1]
    data = jax.random.key_data(key)
    k0, k1 = data[..., 0], data[..., 1]
    zero, one = jnp.zeros_like(k0), jnp.ones_like(k0)
    if jax.config.jax_threefry_partitionable:
        # split(key)[i] = threefry2x32(key, (0, i)).
        a = _threefry2x32(k0, k1, zero, zero)
        b = _threefry2x32(k0, k1, zero, one)
        words = (a, b)
    else:
        # Original layout: hash counters (0, 2) and (1, 3); key i = (x0[i], x1[i]) read row-major
        # from the concatenation [x0(0), x0(1), x1(0), x1(1)].
        x0_0, x1_0 = _threefry2x32(k0, k1, zero, one + one)
        x0_1, x1_1 = _threefry2x32(k0, k1, one, one + one + one)
        words = ((x0_0, x0_1), (x1_0, x1_1))
    impl = jax.random.key_impl(key)
    return tuple(jax.random.wrap_key_data(jnp.stack(w, axis=-1), impl=impl) for w in words)  # type: ignore[return-value]


def _leaf_noise(k0: jax.Array, k1: jax.Array, offset: int, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """Noise for one leaf whose first element has flat counter `offset` (a Python int).

    Elementwise on an iota of the leaf's own shape, so XLA fuses it into the update and the
    SPMD partitioner can shard it like the leaf (no gather, each device hashes its own slice).
    """
    size = math.prod(shape)
    lo0, hi0 = offset & 0xFFFFFFFF, offset >> 32
    index = jax.lax.iota(_U32, size).reshape(shape) if shape else jnp.zeros((), _U32)
    lo = index + _U32(lo0)
    if lo0 + size > 1 << 32:  # the low word wraps inside this leaf: carry into the high word
        hi = _U32(hi0) + (lo < _U32(lo0)).astype(_U32)
    else:
        hi = jnp.full(shape, hi0, _U32)
    return _normal_from_bits(*_threefry2x32(k0, k1, hi, lo), dtype)


def _opaque_zero(k0: jax.Array, k1: jax.Array) -> jax.Array:
    # a ^ b == (a | b) - (a & b) for all a, b, which XLA's simplifier does not know: a zero it
    # cannot fold, so the conditional below stays a real one.
    return (k0 ^ k1) - ((k0 | k1) - (k0 & k1))


def _small_leaf_noise(
    k0: jax.Array,
    k1: jax.Array,
    token: jax.Array,
    start: int,
    members: list[tuple[int, tuple[int, ...]]],
    padded: int,
    dtype: Any,
) -> list[jax.Array]:
    """Noise for consecutive small leaves from ONE generator over their shared counter range.

    Why: XLA:CPU compiles every distinct kernel separately (~30-100 ms each) but reuses the
    code of identical kernels, and a per-leaf generator is ~150 HLO ops: a 200-leaf model with a
    generator per leaf took ~20 s to compile. Here the generator runs once per bin (a flat array
    of `padded` elements) inside a `lax.cond` whose predicate XLA cannot fold, which (1) keeps
    XLA from cloning the generator into each leaf's update, and (2) turns the leaves' slice
    offsets and the bin's start into runtime values, so the update kernels of same-shaped leaves
    (and the generators of equal bins) are identical and compiled once. `token` is an opaque
    zero computed from the previous bin's results: it orders the bins so that at most one bin of
    noise is alive at a time. The numbers are exactly those of `_leaf_noise` at the same
    counters (the layout does not depend on this choice).
    """
    local = [o - start for o, _ in members]
    # The bin's start goes in as a runtime value (+ an opaque zero) rather than a constant, which
    # XLA would sink into the branch and bake into the generator, one distinct kernel per bin.
    zero = _opaque_zero(k0, k1) + token
    operands = (
        jnp.asarray(start >> 32, _U32) + zero,
        jnp.asarray(start & 0xFFFFFFFF, _U32) ^ zero,  # not "+": XLA would merge hi and lo at 0
        k0,
        k1,
        tuple(jnp.asarray(o, jnp.int32) for o in local),
    )

    def generate(hi: jax.Array, lo: jax.Array, k0: jax.Array, k1: jax.Array, offsets: tuple) -> tuple:
        counter_lo = lo + jax.lax.iota(_U32, padded)
        counter_hi = hi + (counter_lo < lo).astype(_U32)  # carry when the low word wraps
        return _normal_from_bits(*_threefry2x32(k0, k1, counter_hi, counter_lo), dtype), offsets

    def never(hi: jax.Array, lo: jax.Array, k0: jax.Array, k1: jax.Array, offsets: tuple) -> tuple:
        return jnp.zeros((padded,), dtype), tuple(o + 1 for o in offsets)

    flat, offsets = jax.lax.cond(zero == 0, generate, never, *operands)
    return [
        jax.lax.dynamic_slice(flat, (o,), (math.prod(shape),)).reshape(shape)
        for o, (_, shape) in zip(offsets, members)
    ]


def _token(k0: jax.Array, results: list[Any]) -> jax.Array:
    """An opaque zero that depends on one element of every array in `results`."""
    token = jnp.zeros((), _U32)
    for x in jax.tree.leaves(results):
        first = jnp.ravel(x)[0].astype(jnp.float32)
        token = token + _opaque_zero(jax.lax.bitcast_convert_type(first, _U32), k0)
    return token


def _map_with_noise(key: jax.Array, leaves: list[jax.Array], fn: Callable[[int, jax.Array], Any]) -> list[Any]:
    """`[fn(i, noise_i) for each leaf i]`, with noise_i ~ N(0, 1) in the leaf's noise dtype.

    Layout (documented in `normal_like`): element j (row-major) of leaf i gets counter
    c = (sizes of leaves 0..i−1) + j, and its value is `_normal_from_bits(threefry2x32(K, c))`
    with K two 32-bit words drawn from `key`. Leaves of at least `_SMALL_LEAF` elements get a
    generator fused into `fn`'s kernel (`_leaf_noise`: no temporaries, partitionable); runs of
    smaller leaves share one per bin of at most `_BIN_ELEMENTS` (`_small_leaf_noise`: one
    compiled generator, at most one bin of noise in memory); both give the same numbers.
    """
    k0, k1 = _key_words(key)
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    for size, x in zip(sizes, leaves):
        if size > _MAX_LEAF_ELEMENTS:
            raise ValueError(
                f"noise generation supports leaves of at most 2**32 - 1 elements, got a leaf of "
                f"shape {jnp.shape(x)} ({size} elements); split it into smaller leaves"
            )
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    dtypes = [_noise_dtype(jnp.result_type(x)) for x in leaves]
    results: list[Any] = [None] * len(leaves)
    done = [False] * len(leaves)

    # Runs of consecutive small leaves of one noise dtype, cut into bins of <= _BIN_ELEMENTS.
    bins: list[list[int]] = []
    for i, size in enumerate(sizes):
        if size >= _SMALL_LEAF or size == 0:
            continue
        last = bins[-1] if bins else None
        if (
            last is not None
            and last[-1] == i - 1
            and dtypes[last[0]] == dtypes[i]
            and sum(sizes[j] for j in last) + size <= _BIN_ELEMENTS
        ):
            last.append(i)
        else:
            bins.append([i])
    token = jnp.zeros((), _U32)
    for members in bins:
        fill = sum(sizes[j] for j in members)
        # Bins padded to a multiple of 2^16 mostly share one size, so one compiled generator
        # (<= 6% extra work for full bins); a lone bin needs no padding.
        padded = -(-fill // (1 << 16)) * (1 << 16) if len(bins) > 1 else fill
        noise = _small_leaf_noise(
            k0, k1, token, offsets[members[0]], [(offsets[j], jnp.shape(leaves[j])) for j in members],
            padded, dtypes[members[0]],
        )
        for j, xi in zip(members, noise):
            results[j], done[j] = fn(j, xi), True
        if len(bins) > 1:
            # The next bin waits for this bin's last leaf, so (with XLA's memory-aware
            # scheduler) one bin of noise is alive at a time; one leaf keeps tracing cheap.
            token = _token(k0, results[members[-1]])
    for i, x in enumerate(leaves):
        if not done[i]:
            xi = (
                jnp.zeros(jnp.shape(x), dtypes[i])
                if sizes[i] == 0
                else _leaf_noise(k0, k1, offsets[i], jnp.shape(x), dtypes[i])
            )
            results[i] = fn(i, xi)
    return results


def _normal_like(key: jax.Array, tree: ArrayTree) -> ArrayTree:
    leaves, treedef = jax.tree.flatten(tree)
    noise = _map_with_noise(key, leaves, lambda i, xi: xi.astype(jnp.result_type(leaves[i])))
    return jax.tree.unflatten(treedef, noise)


# Jitted so that eager callers (e.g. drawing initial momenta) run the generator as one fused
# kernel instead of op by op with a full-size temporary per hash round; inside a trace it inlines.
_normal_like_jit = jax.jit(_normal_like)


def normal_like(key: jax.Array, tree: ArrayTree) -> ArrayTree:
    """Standard normal noise shaped like `tree`, in each leaf's dtype.

    The layout is fixed and reproducible from the key: flatten `tree` (JAX's leaf order) and
    number every element of every leaf consecutively, c = 0, 1, 2, ... (row-major within a
    leaf); element c is `S·sqrt(−2 ln U)·cos(πV/2)` computed from the 64-bit threefry2x32 hash
    of c under two key words drawn from `key` (U from the first 32 bits, the sign S and V from
    the second). The key words are threefry2x32(key, (0x5347484E, 0)) for threefry keys and
    `jax.random.bits(key, (2,), uint32)` for other implementations. So no two elements anywhere in the tree share a hash input, leaves of the same
    shape never share noise, and the value at an element depends only on the key and its flat
    position. Noise is computed in float32 (float64 for float64 leaves) and rounded to the
    leaf's dtype.

    Args:
        key: a PRNG key of any implementation (threefry, rbg, unsafe_rbg, ...).
        tree: a pytree of floating-point arrays.

    Returns:
        A pytree like `tree` of independent N(0, 1) draws.

    References:
        Salmon, Moraes, Dror & Shaw, `Parallel random numbers: as easy as 1, 2, 3
        <https://doi.org/10.1145/2063384.2063405>`_, SC 2011 (threefry);
        Box & Muller, `A note on the generation of random normal deviates
        <https://doi.org/10.1214/aoms/1177706645>`_, 1958.
    """
    return _normal_like_jit(key, tree)


def init_momenta(
    key: jax.Array, params: ArrayTree, sigma: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> ArrayTree:
    """Draws momenta from the target's momentum marginal, N(0, sigma² · temperature).

    This is the stationary distribution of the momenta under p_T(θ, m), so a chain started from a
    posterior draw of θ starts in equilibrium. It is N(0, 1) at sigma = temperature = 1 (what
    posteriors draws) and zero at temperature 0.

    Args:
        key: a typed PRNG key.
        params: the pytree of parameters the momenta belong to.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        Momenta shaped and typed like `params`.
    """
    scale = jnp.asarray(sigma) * jnp.sqrt(jnp.asarray(temperature))

    def leaf(p: jax.Array, xi: jax.Array) -> jax.Array:
        cdt = _compute_dtype(p.dtype)
        return (scale.astype(cdt) * xi.astype(cdt)).astype(p.dtype)

    params = jax.tree.map(jnp.asarray, params)
    return jax.tree.map(leaf, params, normal_like(key, params))


def resolve_momenta(
    momenta: ArrayTree | float | None,
    params: ArrayTree,
    key: jax.Array | None,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> ArrayTree:
    """Initial momenta: drawn from N(0, σ²T) when None, filled when a scalar, checked when a tree."""
    if momenta is None:
        if key is None:
            raise TypeError(
                "`key` is required to draw the initial momenta (momenta=None); pass a key, or "
                "momenta=0.0 (or a pytree) to start from given momenta"
            )
        return init_momenta(key, params, sigma, temperature)
    if isinstance(momenta, (int, float)) or (hasattr(momenta, "shape") and momenta.shape == ()):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), momenta, jnp.result_type(p)), params)
    _checks.check_tree_like("momenta", momenta, "params", params)
    return jax.tree.map(lambda m, p: jnp.asarray(m, jnp.result_type(p)), momenta, params)


def sghmc_step(
    momenta: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One SGHMC step (Chen et al. 2014, Algorithm 2 order): momentum first, then position.

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1}

    with g_t = ∇ log p(θ_t) and ξ_t ~ N(0, I). The position moves with the NEW momentum
    (semi-implicit Euler), which is stable for any α >= 0 up to ε·sqrt(curvature)/σ ≈ 2; the
    simultaneous form θ_{t+1} = θ_t + ε σ⁻² m_t diverges whenever ε·curvature > α.
    It targets p_T(θ, m) ∝ exp((log p(θ) − mᵀm / (2σ²)) / T).

    No Python branching on hyperparameter values, so they may be traced. The rule
    2α − εβT >= 0 is checked by the faces when values are concrete; a traced value that breaks it
    makes the noise scale (and so the momenta) NaN rather than silently wrong.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior (not of a loss) at θ_t.
        key: a typed PRNG key for this step, used once (noise layout: see `normal_like`).
        lr: step size ε > 0.
        alpha: friction α >= 0.
        beta: gradient-noise variance estimate β >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta)`: θ_{t+1} − θ_t = ε σ⁻² m_{t+1} and m_{t+1}, both in the
        momenta's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sghmc_step
        >>> inc, m = sghmc_step(jnp.zeros(2), jnp.ones(2), jax.random.key(0), 0.1, 0.01, 0.0,
        ...                     1.0, 0.0)
        >>> inc
        Array([0.01, 0.01], dtype=float32)

    References:
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """
    lr = jnp.asarray(lr)
    alpha = jnp.asarray(alpha)
    beta = jnp.asarray(beta)
    sigma = jnp.asarray(sigma)
    temperature = jnp.asarray(temperature)
    drift = lr / (sigma * sigma)
    friction, beta_term = drift * alpha, lr * beta * temperature
    if any(isinstance(x, jax.core.Tracer) for x in (lr, alpha, beta, sigma, temperature)):
        # JAX computes concrete hyperparameters eagerly (each product rounded), traced ones
        # inside XLA, which may contract a product and a sum into one FMA; the barrier keeps the
        # products rounded so that faces given the same numbers agree bit for bit. Concrete
        # values skip it: it costs a separate kernel per step (~10 µs on CPU).
        friction, beta_term = _no_fma((friction, beta_term))
    decay = 1 - friction
    noise_var = lr * temperature * (2 * alpha - beta_term)
    noise_std = jnp.sqrt(noise_var)
    treedef = jax.tree.structure(momenta)
    momenta_leaves = jax.tree.leaves(momenta)
    grad_leaves = treedef.flatten_up_to(grad_log_posterior)

    coefficients: dict[Any, tuple[jax.Array, ...]] = {}  # per compute dtype: fewer ops to trace

    def leaf(i: int, xi: jax.Array) -> tuple[jax.Array, jax.Array]:
        m, g = momenta_leaves[i], grad_leaves[i]
        cdt = _compute_dtype(m.dtype)
        if cdt not in coefficients:
            coefficients[cdt] = tuple(c.astype(cdt) for c in (decay, lr, noise_std, drift))
        c_decay, c_lr, c_std, c_drift = coefficients[cdt]
        m_new = (c_decay * m.astype(cdt) + c_lr * g.astype(cdt) + c_std * xi.astype(cdt)).astype(m.dtype)
        increment = (c_drift * m_new.astype(cdt)).astype(m.dtype)
        return increment, m_new

    # Noise in float32 (float64 for float64 leaves), never rounded to bf16/f16 before use: the
    # update is computed in at least float32 anyway, and the generator fuses into it.
    pairs = _map_with_noise(key, momenta_leaves, leaf)
    increment = jax.tree.unflatten(treedef, [inc for inc, _ in pairs])
    new_momenta = jax.tree.unflatten(treedef, [m for _, m in pairs])
    return increment, new_momenta
