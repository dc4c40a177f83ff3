"""The update maths: pure functions on pytrees, the only place each algorithm's rule lives.

Every face of the library (the optax transforms, the posteriors-style functional API, the
sampler) calls these functions, so given the same keys and gradients they produce bit-identical
chains (hyperparameters go through `_runtime`; see there for what it does and does not
guarantee).

Arithmetic runs in at least float32 (bf16/f16 leaves are promoted for the update and stored back
in their own dtype); each leaf keeps its dtype. Noise comes from one step key through a fixed,
documented layout (`normal_like`): a threefry2x32 hash of each element's flat position turned into
an exact normal, generated inside the update's fused loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _checks
from sghmc_jax.types import ArrayTree

__all__ = [
    "normal_like",
    "split_key",
    "init_momenta",
    "resolve_momenta",
    "resolve_preconditioner",
    "resolve_xi",
    "sghmc_step",
    "sgld_step",
    "sgnht_step",
    "baoa_step",
    "psgld_step",
    "psghmc_step",
]


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the update is computed in: the leaf's, but never below float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _cast(x: jax.Array, dtype: Any) -> jax.Array:
    """`x.astype(dtype)`, but no operation at all when `x` already has that dtype."""
    return x if x.dtype == dtype else jax.lax.convert_element_type(x, dtype)


def _times(c: jax.Array, x: jax.Array) -> jax.Array:
    """Scalar `c` times array `x` (same dtype) as two lax operations, without jnp's dispatch."""
    return jax.lax.mul(jax.lax.broadcast_in_dim(c, x.shape, ()), x)


def _no_fma(x: Any) -> Any:
    return jax.lax.optimization_barrier(x)


def _runtime(*hyperparameters: jax.typing.ArrayLike) -> tuple[jax.Array, ...]:
    """Hyperparameters as values computed on the device, whether constants or traced.

    Hyperparameters arrive as compile-time constants (Python floats closed over by an optax face)
    or as traced arguments (the functional faces, `inject_hyperparams`). XLA constant-folds
    arithmetic on the former on the host and runs it on the device for the latter, and a GPU's
    arithmetic can round differently from the host's, so the faces could drift apart by an ulp.
    Behind this barrier the kernels derive their coefficients from the barrier's outputs the same
    way for both. XLA:CPU removes barriers before fusion (the compiled HLO shows the constants
    folded into the update), which is harmless there: its code rounds like the host's constant
    folder, and the face tests check the faces bit for bit. It costs a few scalar operations.
    """
    return jax.lax.optimization_barrier(tuple(jnp.asarray(v) for v in hyperparameters))


def _opaque(*coefficients: jax.Array) -> tuple[jax.Array, ...]:
    """Derived scalar coefficients kept opaque, so XLA does not rewrite the leaf arithmetic around
    them (reassociate a product, turn a division into a multiplication) differently for
    different programs; with `_runtime` on the inputs this keeps the faces bit-identical.
    """
    return jax.lax.optimization_barrier(coefficients)


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
# most _BIN_ELEMENTS elements, or 1/_MAX_BINS of all small leaves' elements when that is more
# (see _small_leaf_noise); larger leaves get their own generator fused into their update. Each
# bin costs ~20 ms of compile on CPU, so _MAX_BINS caps that cost for large models, while one bin
# of noise stays below 1/(3·_MAX_BINS) of params + momenta + gradients.
_SMALL_LEAF = 1 << 20
_BIN_ELEMENTS = 1 << 20
_MAX_BINS = 16
# On accelerators (GPU, TPU) a tree with at most this many small leaves fuses a generator into
# every leaf's update instead: there the bins' conditionals cost more per step than they save
# (H200: MLP step 1.12x the optax floor fused, 1.39-1.51x binned), while compiling a fused
# generator per leaf costs ~0.25 s each (200 leaves: 53 s against 3.6 s binned), so larger trees
# keep the bins. The CPU always bins (benchmarks/README.md).
_FUSED_ON_ACCELERATORS = 16
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


@jax.custom_batching.custom_vmap
def _unbatched(x: jax.Array) -> jax.Array:
    """`x` itself; under `vmap`, its first element, unbatched.

    For the opaque zeros that order the bins: they must not be batched, or a `vmap` over chains
    (whose keys differ) turns every bin's conditional into a select of both branches and its
    slices into gathers, which tripled compile time. Any one chain's zero is as good as another.
    """
    return x


@_unbatched.def_vmap
def _unbatched_vmap(axis_size: int, in_batched: list[bool], x: jax.Array) -> tuple[jax.Array, bool]:
    del axis_size
    return (x[0] if in_batched[0] else x), False


@functools.lru_cache(maxsize=64)
def _bin_branches(padded: int, dtype: Any) -> tuple[Callable, Callable]:
    """The two branches of a bin's conditional: one pair of function objects per (size, dtype),
    so that JAX traces the generator once however many bins of that size a tree has."""

    def generate(hi: jax.Array, lo: jax.Array, k0: jax.Array, k1: jax.Array, offsets: tuple) -> tuple:
        counter_lo = lo + jax.lax.iota(_U32, padded)
        counter_hi = hi + (counter_lo < lo).astype(_U32)  # carry when the low word wraps
        return _normal_from_bits(*_threefry2x32(k0, k1, counter_hi, counter_lo), dtype), offsets

    def never(hi: jax.Array, lo: jax.Array, k0: jax.Array, k1: jax.Array, offsets: tuple) -> tuple:
        return jnp.zeros((padded,), dtype), tuple(o + 1 for o in offsets)

    return generate, never


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
    zero = _opaque_zero(_unbatched(k0), _unbatched(k1)) + _unbatched(token)
    operands = (
        jnp.asarray(start >> 32, _U32) + zero,
        jnp.asarray(start & 0xFFFFFFFF, _U32) ^ zero,  # not "+": XLA would merge hi and lo at 0
        k0,
        k1,
        tuple(jnp.asarray(o, _U32) for o in local),
    )

    generate, never = _bin_branches(padded, jnp.dtype(dtype))
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
    smaller leaves share one per bin of at most `_BIN_ELEMENTS` elements, or 1/`_MAX_BINS` of
    them all (`_small_leaf_noise`: one compiled generator, at most one bin of noise in memory;
    greedy packing of whole leaves keeps the count below 2·`_MAX_BINS` + 1), except on
    accelerators when there are at most `_FUSED_ON_ACCELERATORS` small leaves (see there).
    Every path gives the same numbers.
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

    def fused(i: int) -> Any:
        if sizes[i] == 0:
            return fn(i, jnp.zeros(jnp.shape(leaves[i]), dtypes[i]))
        return fn(i, _leaf_noise(k0, k1, offsets[i], jnp.shape(leaves[i]), dtypes[i]))

    # Runs of consecutive small leaves of one noise dtype, cut into bins of <= capacity elements.
    capacity = max(_BIN_ELEMENTS, -(-sum(n for n in sizes if n < _SMALL_LEAF) // _MAX_BINS))
    bins: list[list[int]] = []
    for i, size in enumerate(sizes):
        if size >= _SMALL_LEAF or size == 0:
            continue
        last = bins[-1] if bins else None
        if (
            last is not None
            and last[-1] == i - 1
            and dtypes[last[0]] == dtypes[i]
            and sum(sizes[j] for j in last) + size <= capacity
        ):
            last.append(i)
        else:
            bins.append([i])
    binned = [j for members in bins for j in members]
    in_bins = set(binned)
    results: list[Any] = [None if i in in_bins else fused(i) for i in range(len(leaves))]
    if not bins:
        return results

    def small_leaves_binned() -> list[Any]:
        out = []
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
            out.extend(fn(j, xi) for j, xi in zip(members, noise))
            if len(bins) > 1:
                # The next bin waits for this bin's last leaf, so (with XLA's memory-aware
                # scheduler) one bin of noise is alive at a time; one leaf keeps tracing cheap.
                token = _token(k0, out[-1])
        return out

    if len(binned) <= _FUSED_ON_ACCELERATORS:
        small = jax.lax.platform_dependent(
            cpu=small_leaves_binned, default=lambda: [fused(j) for j in binned]
        )
    else:
        small = small_leaves_binned()
    for j, r in zip(binned, small):
        results[j] = r
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
    _checks.check_initial_momenta(momenta)
    if isinstance(momenta, (int, float)) or (hasattr(momenta, "shape") and momenta.shape == ()):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), momenta, jnp.result_type(p)), params)
    _checks.check_tree_like("momenta", momenta, "params", params)
    # A copy: the state owns its buffers (a donated update must not delete the caller's arrays).
    return jax.tree.map(lambda m, p: jnp.array(m, jnp.result_type(p), copy=True), momenta, params)


def resolve_preconditioner(initial_scale: ArrayTree | float, params: ArrayTree) -> ArrayTree:
    """The initial RMS accumulator V: filled when a scalar, checked and cast when a tree."""
    if _checks.is_scalar_like(initial_scale):
        return jax.tree.map(
            lambda p: jnp.full(jnp.shape(p), initial_scale, jnp.result_type(p)), params
        )
    _checks.check_tree_like("initial_scale", initial_scale, "params", params)
    return jax.tree.map(
        lambda v, p: jnp.array(v, jnp.result_type(p), copy=True), initial_scale, params
    )


def resolve_xi(
    xi: jax.typing.ArrayLike | None, alpha: jax.typing.ArrayLike, params: ArrayTree
) -> jax.Array:
    """The initial SGNHT thermostat: `alpha` when None, a scalar in the params' highest dtype
    (at least float32)."""
    dtype = jnp.promote_types(
        jnp.result_type(*[jnp.result_type(p) for p in jax.tree.leaves(params)]), jnp.float32
    )
    return jnp.asarray(alpha if xi is None else xi, dtype)


def _leaves(treedef: Any, *trees: ArrayTree) -> list[tuple[jax.Array, ...]]:
    """Per-leaf tuples of the trees' leaves, in `treedef`'s order (the first tree's structure)."""
    return list(zip(*(treedef.flatten_up_to(t) for t in trees)))


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
    lr, alpha, beta, sigma, temperature = _runtime(lr, alpha, beta, sigma, temperature)
    drift = lr / (sigma * sigma)
    decay = 1 - _no_fma(drift * alpha)
    noise_var = lr * temperature * (2 * alpha - _no_fma(lr * beta * temperature))
    noise_std = jnp.sqrt(noise_var)
    treedef = jax.tree.structure(momenta)
    momenta_leaves = jax.tree.leaves(momenta)
    grad_leaves = treedef.flatten_up_to(grad_log_posterior)

    # Once per compute dtype (here, not inside `leaf`, which may be traced inside a conditional),
    # and lax rather than jnp operators in the per-leaf code: fewer operations to trace and
    # compile for many-leaf models (see benchmarks/README.md).
    coefficients = {
        cdt: tuple(_cast(c, cdt) for c in (decay, lr, noise_std, drift))
        for cdt in dict.fromkeys(_compute_dtype(m.dtype) for m in momenta_leaves)
    }

    def leaf(i: int, xi: jax.Array) -> tuple[jax.Array, jax.Array]:
        m, g = momenta_leaves[i], grad_leaves[i]
        cdt = _compute_dtype(m.dtype)
        c_decay, c_lr, c_std, c_drift = coefficients[cdt]
        kept = jax.lax.add(_times(c_decay, _cast(m, cdt)), _times(c_lr, _cast(g, cdt)))
        m_new = _cast(jax.lax.add(kept, _times(c_std, _cast(xi, cdt))), m.dtype)
        increment = _cast(_times(c_drift, _cast(m_new, cdt)), m.dtype)
        return increment, m_new

    # Noise in float32 (float64 for float64 leaves), never rounded to bf16/f16 before use: the
    # update is computed in at least float32 anyway, and the generator fuses into it.
    pairs = _map_with_noise(key, momenta_leaves, leaf)
    increment = jax.tree.unflatten(treedef, [inc for inc, _ in pairs])
    new_momenta = jax.tree.unflatten(treedef, [m for _, m in pairs])
    return increment, new_momenta


def sgld_step(
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> ArrayTree:
    r"""One SGLD step (Welling & Teh 2011) in posteriors' parameterisation.

    .. math::

        \theta_{t+1} = \theta_t + \epsilon g_t + \sqrt{\epsilon T (2 - \epsilon \beta T)}\, \xi_t

    with g_t = ∇ log p(θ_t) and ξ_t ~ N(0, I). It targets p_T(θ) ∝ exp(log p(θ) / T) as ε → 0;
    at T = 0 it is gradient ascent with step ε. β >= 0 estimates the gradient noise's variance
    (in units where the injected variance is reduced by ε²βT²); needs 2 − εβT >= 0.

    Args:
        grad_log_posterior: g_t, the gradient of the log posterior (not of a loss) at θ_t.
        key: a typed PRNG key for this step, used once (split into one key per leaf).
        lr: step size ε > 0.
        beta: gradient-noise variance estimate β >= 0.
        temperature: temperature T >= 0.

    Returns:
        θ_{t+1} − θ_t, in the gradient's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sgld_step
        >>> sgld_step(jnp.ones(2), jax.random.key(0), 0.1, 0.0, 0.0)
        Array([0.1, 0.1], dtype=float32)

    References:
        Welling & Teh, `Bayesian Learning via Stochastic Gradient Langevin Dynamics
        <https://www.stats.ox.ac.uk/~teh/research/compstats/WelTeh2011a.pdf>`_, ICML 2011.
    """
    lr, beta, temperature = _runtime(lr, beta, temperature)
    # Barriers: see sghmc_step and _opaque (a traced and a constant hyperparameter must round
    # alike).
    noise_std = jnp.sqrt(lr * temperature * (2 - _no_fma(lr * beta * temperature)))
    lr, noise_std = _opaque(lr, noise_std)
    noise = normal_like(key, grad_log_posterior)

    def leaf(g: jax.Array, xi: jax.Array) -> jax.Array:
        cdt = _compute_dtype(g.dtype)
        return (lr.astype(cdt) * g.astype(cdt) + noise_std.astype(cdt) * xi.astype(cdt)).astype(g.dtype)

    return jax.tree.map(leaf, grad_log_posterior, noise)


def sgnht_step(
    momenta: ArrayTree,
    xi: jax.typing.ArrayLike,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree, jax.Array]:
    r"""One SGNHT step (Ding et al. 2014): SGHMC whose friction ξ is a thermostat.

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \xi_t m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \zeta_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1} \\
        \xi_{t+1} &= \xi_t + \epsilon \left(\frac{m_{t+1}^\top m_{t+1}}{\sigma^2 d} - T\right)

    with g_t = ∇ log p(θ_t), ζ_t ~ N(0, I) and d the total number of parameters. The order is
    Ding et al.'s Algorithm 1 and our SGHMC's: momentum, then position and thermostat with the
    NEW momentum (posteriors moves both with the old one, the unstable simultaneous form).
    Its continuous limit leaves p_T(θ, m, ξ) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T) · N(ξ; α, σ²T/d)
    invariant; α sets the injected noise, ξ the friction actually applied. Since
    ξ_N − ξ_0 = ε Σ_t (K_{t+1} − T), the time average of the kinetic temperature
    K = mᵀm/(σ²d) is exactly T + (ξ_N − ξ_0)/(εN): the thermostat absorbs noise it was not told
    about (unmodelled gradient noise) by raising ξ, at the price of a first-order bias in θ.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        xi: the thermostat ξ_t, a scalar (any sign).
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: α >= 0, the friction whose noise is injected (and ξ's stationary mean).
        beta: gradient-noise variance estimate β >= 0; needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta, new_xi)`: ε σ⁻² m_{t+1} and m_{t+1} in the momenta's
        dtypes, ξ_{t+1} in ξ's dtype (at least float32).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sgnht_step
        >>> inc, m, xi = sgnht_step(jnp.zeros(2), 0.5, jnp.ones(2), jax.random.key(0), 0.1, 0.5,
        ...                         0.0, 1.0, 0.0)
        >>> inc, xi
        (Array([0.01, 0.01], dtype=float32), Array(0.501, dtype=float32))

    References:
        Ding, Fang, Babbush, Chen, Skeel & Neven, `Bayesian Sampling Using Stochastic Gradient
        Thermostats <https://proceedings.neurips.cc/paper/2014/file/21fe5b8ba755eeaece7a450849876228-Paper.pdf>`_,
        NeurIPS 2014.
    """
    lr, alpha, beta, sigma, temperature = _runtime(lr, alpha, beta, sigma, temperature)
    xi = jnp.asarray(xi)
    xdt = _compute_dtype(xi.dtype)
    drift = lr / (sigma * sigma)
    decay = 1 - _no_fma(drift * xi)
    noise_std = jnp.sqrt(lr * temperature * (2 * alpha - _no_fma(lr * beta * temperature)))
    lr, drift, decay, noise_std = _opaque(lr, drift, decay, noise_std)
    noise = normal_like(key, momenta)

    def leaf(m: jax.Array, g: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        cdt = _compute_dtype(m.dtype)
        m_new = (
            decay.astype(cdt) * m.astype(cdt)
            + lr.astype(cdt) * g.astype(cdt)
            + noise_std.astype(cdt) * z.astype(cdt)
        ).astype(m.dtype)
        increment = (drift.astype(cdt) * m_new.astype(cdt)).astype(m.dtype)
        return increment, m_new

    treedef = jax.tree.structure(momenta)
    pairs = [leaf(*ls) for ls in _leaves(treedef, momenta, grad_log_posterior, noise)]
    new_momenta = [m for _, m in pairs]
    # The kinetic temperature of the momenta as stored, so users recomputing it from the state
    # see exactly what drove the thermostat.
    dim = sum(m.size for m in new_momenta)
    sumsq = sum(jnp.sum(jnp.square(m.astype(xdt))) for m in new_momenta)
    # The barrier keeps XLA from turning the division by a constant into a multiplication by
    # its reciprocal (what it may do when σ is a Python float but not when it is traced).
    kinetic = sumsq / _no_fma(sigma.astype(xdt) * sigma.astype(xdt) * dim)
    new_xi = (xi.astype(xdt) + _no_fma(lr.astype(xdt) * (kinetic - temperature.astype(xdt)))).astype(
        xi.dtype
    )
    increment = jax.tree.unflatten(treedef, [inc for inc, _ in pairs])
    return increment, jax.tree.unflatten(treedef, new_momenta), new_xi


def baoa_step(
    momenta: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One BAOA step (Leimkuhler & Matthews): kick, half drift, exact friction, half drift.

    .. math::

        m' &= m_t + \epsilon g_t && \text{(B)} \\
        \theta' &= \theta_t + \tfrac{\epsilon}{2} \sigma^{-2} m' && \text{(A)} \\
        m_{t+1} &= e^{-\gamma \epsilon} m' + \sigma \sqrt{T (1 - e^{-2 \gamma \epsilon})}\, \xi_t
            && \text{(O)} \\
        \theta_{t+1} &= \theta' + \tfrac{\epsilon}{2} \sigma^{-2} m_{t+1} && \text{(A)}

    with g_t = ∇ log p(θ_t), γ = α/σ² and ξ_t ~ N(0, I). The gradient is taken once, at θ_t
    (the B step opens the step), so one optax update per gradient is exactly one BAOA step.
    O solves the friction-and-noise part dm = −γ m dt + σ√(2γT) dW exactly, so the step is
    stable for any friction α >= 0 (at α → ∞ it redraws m ~ N(0, σ²T)) and noise-free at
    T = 0. It is BAOAB with the trailing half kick merged into the next step's kick; on Gaussian
    targets its stationary θ law is exact for every stable step size (ε·sqrt(curvature)/σ < 2).

    Args:
        momenta: current momenta m_t, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: friction α >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta)`: θ_{t+1} − θ_t = ε σ⁻² (m' + m_{t+1}) / 2 and m_{t+1},
        in the momenta's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import baoa_step
        >>> inc, m = baoa_step(jnp.zeros(2), jnp.ones(2), jax.random.key(0), 0.1, 0.0, 1.0, 0.0)
        >>> inc
        Array([0.01, 0.01], dtype=float32)

    References:
        Leimkuhler & Matthews, `Rational Construction of Stochastic Numerical Methods for
        Molecular Sampling <https://arxiv.org/abs/1203.5428>`_, AMRX 2013; and
        `Molecular Dynamics <https://doi.org/10.1007/978-3-319-16375-8>`_, Springer 2015.
    """
    lr, alpha, sigma, temperature = _runtime(lr, alpha, sigma, temperature)
    half_drift = lr / (2 * sigma * sigma)
    gamma_lr = lr * alpha / (sigma * sigma)
    decay = jnp.exp(-gamma_lr)
    # expm1: 1 − e^{−2γε} keeps its digits when γε is small (α = 0.01 is the default).
    noise_std = sigma * jnp.sqrt(temperature * -jnp.expm1(-2 * gamma_lr))
    lr, half_drift, decay, noise_std = _opaque(lr, half_drift, decay, noise_std)
    noise = normal_like(key, momenta)

    def leaf(m: jax.Array, g: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        cdt = _compute_dtype(m.dtype)
        m_kick = m.astype(cdt) + lr.astype(cdt) * g.astype(cdt)
        m_new = (decay.astype(cdt) * m_kick + noise_std.astype(cdt) * z.astype(cdt)).astype(m.dtype)
        increment = (half_drift.astype(cdt) * (m_kick + m_new.astype(cdt))).astype(m.dtype)
        return increment, m_new

    treedef = jax.tree.structure(momenta)
    pairs = [leaf(*ls) for ls in _leaves(treedef, momenta, grad_log_posterior, noise)]
    increment = jax.tree.unflatten(treedef, [inc for inc, _ in pairs])
    return increment, jax.tree.unflatten(treedef, [m for _, m in pairs])


def _rms_preconditioner(
    v: jax.Array, g: jax.Array, decay: jax.Array, eps: jax.Array, cdt: Any
) -> tuple[jax.Array, jax.Array]:
    """V ← ρV + (1 − ρ)g² (stored in V's dtype) and G = 1/(λ + √V) from the stored V."""
    g = g.astype(cdt)
    decay = decay.astype(cdt)
    v_new = (decay * v.astype(cdt) + (1 - decay) * g * g).astype(v.dtype)
    precond = 1 / (eps.astype(cdt) + jnp.sqrt(v_new.astype(cdt)))
    return v_new, precond


def psgld_step(
    v: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    decay: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One pSGLD step (Li et al. 2016): SGLD with RMSprop's diagonal preconditioner.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t \odot g_t \\
        G_{t+1} &= \mathrm{diag}\big(1 / (\lambda + \sqrt{V_{t+1}})\big) \\
        \theta_{t+1} &= \theta_t + \epsilon G_{t+1} g_t
                        + \sqrt{2 \epsilon T G_{t+1}}\, \xi_t

    with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I); ρ = `decay`, λ = `eps`. This is Li et al.'s
    Algorithm 1 in posteriors' SGLD units (their ε is our 2ε). Li et al.'s correction term
    ε Γ(θ), Γ_i = Σ_j ∂G_ij/∂θ_j, is DROPPED, as in their experiments and in common
    implementations: V is a running average of past gradients, not a function of θ, and the
    term is small when ρ is close to 1; dropping it leaves a bias while V adapts. With a frozen
    preconditioner (ρ = 1: V stays as it is) Γ = 0 and the scheme is exactly preconditioned
    SGLD, whose stationary law tends to p_T as ε → 0 — so freeze V after burn-in (a `decay`
    schedule that ends at 1) to sample without that bias.

    Args:
        v: the running mean V_t of squared gradients, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        decay: ρ in [0, 1]; 1 freezes V.
        eps: λ > 0, which bounds G by 1/λ.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_v)`, in the gradient's and V's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import psgld_step
        >>> inc, v = psgld_step(jnp.full(2, 4.0), jnp.ones(2), jax.random.key(0), 0.1, 1.0, 0.0,
        ...                     0.0)
        >>> inc  # ε g / (λ + √V) = 0.1 / 2
        Array([0.05, 0.05], dtype=float32)

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
    """
    lr, temperature = _runtime(lr, temperature)
    noise_std = jnp.sqrt(2 * lr * temperature)
    lr, decay, eps, noise_std = _opaque(lr, jnp.asarray(decay), jnp.asarray(eps), noise_std)
    noise = normal_like(key, grad_log_posterior)

    def leaf(v: jax.Array, g: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        cdt = _compute_dtype(g.dtype)
        v_new, precond = _rms_preconditioner(v, g, decay, eps, cdt)
        increment = (
            lr.astype(cdt) * precond * g.astype(cdt)
            + noise_std.astype(cdt) * jnp.sqrt(precond) * z.astype(cdt)
        ).astype(g.dtype)
        return increment, v_new

    treedef = jax.tree.structure(v)
    pairs = [leaf(*ls) for ls in _leaves(treedef, v, grad_log_posterior, noise)]
    increment = jax.tree.unflatten(treedef, [inc for inc, _ in pairs])
    return increment, jax.tree.unflatten(treedef, [v for _, v in pairs])


def psghmc_step(
    momenta: ArrayTree,
    v: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
    decay: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree, ArrayTree]:
    r"""One preconditioned SGHMC step: SGHMC with pSGLD's preconditioner on kick and drift.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t \odot g_t, \qquad
        S_{t+1} = \mathrm{diag}\big((\lambda + \sqrt{V_{t+1}})^{-1/2}\big) \\
        m_{t+1} &= m_t + \epsilon S_{t+1} g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{2 \epsilon \alpha T}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} S_{t+1} m_{t+1}

    with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I), S = G^{1/2} for pSGLD's G. This is the complete
    recipe of Ma et al. (2015) with the antisymmetric part Q = [[0, −S], [S, 0]]: the momenta
    keep their target N(0, σ²T) and friction/noise are SGHMC's, so for a FROZEN preconditioner
    (ρ = 1) the step is exactly SGHMC in the coordinates φ = S⁻¹θ (same stability rule, with
    the curvature of S A S), and its overdamped limit is pSGLD. As for pSGLD the correction
    term (here ε ∂S_ii/∂θ_i in the momentum) is dropped: it vanishes for a frozen S and is small
    for ρ near 1. There is no β: the preconditioned gradient's noise changes with V each step.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        v: the running mean V_t of squared gradients, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: friction α >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.
        decay: ρ in [0, 1]; 1 freezes V.
        eps: λ > 0.

    Returns:
        `(params_increment, new_momenta, new_v)`, in the momenta's and V's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import psghmc_step
        >>> inc, m, v = psghmc_step(jnp.zeros(2), jnp.full(2, 16.0), jnp.ones(2),
        ...                         jax.random.key(0), 0.1, 0.0, 1.0, 0.0, 1.0, 0.0)
        >>> m, inc  # S = 1/2: m = ε S g, θ += ε S m
        (Array([0.05, 0.05], dtype=float32), Array([0.0025, 0.0025], dtype=float32))

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
        Ma, Chen & Fox, `A Complete Recipe for Stochastic Gradient MCMC
        <https://arxiv.org/abs/1506.04696>`_, NeurIPS 2015.
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """
    lr, alpha, sigma, temperature, decay, eps = _runtime(lr, alpha, sigma, temperature, decay, eps)
    drift = lr / (sigma * sigma)
    m_decay = 1 - _no_fma(drift * alpha)
    noise_std = jnp.sqrt(2 * lr * alpha * temperature)
    lr, drift, m_decay, noise_std, decay, eps = _opaque(lr, drift, m_decay, noise_std, decay, eps)
    noise = normal_like(key, momenta)

    def leaf(
        m: jax.Array, v: jax.Array, g: jax.Array, z: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        cdt = _compute_dtype(m.dtype)
        v_new, precond = _rms_preconditioner(v, g, decay, eps, cdt)
        scale = jnp.sqrt(precond)
        m_new = (
            m_decay.astype(cdt) * m.astype(cdt)
            + lr.astype(cdt) * scale * g.astype(cdt)
            + noise_std.astype(cdt) * z.astype(cdt)
        ).astype(m.dtype)
        increment = (drift.astype(cdt) * scale * m_new.astype(cdt)).astype(m.dtype)
        return increment, m_new, v_new

    treedef = jax.tree.structure(momenta)
    out = [leaf(*ls) for ls in _leaves(treedef, momenta, v, grad_log_posterior, noise)]
    return tuple(jax.tree.unflatten(treedef, [o[i] for o in out]) for i in range(3))  # type: ignore[return-value]
