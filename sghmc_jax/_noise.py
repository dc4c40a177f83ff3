"""The Gaussian noise every sampler injects: a counter hash and an exact normal transform, fused
into the update's loop (or shared per bin of small leaves), reproducible from the key.

jax.random.normal costs ~30x an SGD-momentum update on CPU because XLA:CPU lowers threefry as a
rolled while loop that cannot fuse with the update (and the partitionable layout hashes every
element twice). Here the same hash is written out in plain uint32 ops so it fuses into the
update's loop, and each 64-bit hash output becomes one normal by a "half Box-Muller" transform.
See benchmarks/README.md for the measurements behind every choice below.

The layout (`normal_like`) is fixed: element c of the flattened tree (JAX's leaf order, row-major
within a leaf) is a function of the key and c only, so sharded leaves need no communication and
give the numbers of an unsharded run, whichever path (fused, binned) generates them.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.core  # Tracer: `import jax` alone does not bind the submodule for type checkers
import jax.numpy as jnp

from sghmc_jax.types import ArrayTree

__all__ = ["key_words", "map_with_noise", "normal_like", "split_key"]

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


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def normal_from_bits(b0: jax.Array, b1: jax.Array, dtype: Any) -> jax.Array:
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


def key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two 32-bit words that key every element's hash, drawn from the step key.

    For threefry keys (JAX's default) they are one threefry2x32 hash of the key under a reserved
    counter, computed inline: `jax.random.bits` would cost a rolled loop per step on CPU. Any
    other implementation (rbg, unsafe_rbg, philox, ...) goes through `jax.random.bits`.
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key)
    if str(jax.random.key_impl(key)) == "threefry2x32":
        data = jax.random.key_data(key)
        return threefry2x32(data[0], data[1], _U32(_KEY_DOMAIN[0]), _U32(_KEY_DOMAIN[1]))
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
    # jax's Config declares its flags at run time, so type checkers do not see them.
    if jax.config.jax_threefry_partitionable:  # pyright: ignore[reportAttributeAccessIssue]
        # split(key)[i] = threefry2x32(key, (0, i)).
        a = threefry2x32(k0, k1, zero, zero)
        b = threefry2x32(k0, k1, zero, one)
        words = (a, b)
    else:
        # Original layout: hash counters (0, 2) and (1, 3); key i = (x0[i], x1[i]) read row-major
        # from the concatenation [x0(0), x0(1), x1(0), x1(1)].
        x0_0, x1_0 = threefry2x32(k0, k1, zero, one + one)
        x0_1, x1_1 = threefry2x32(k0, k1, one, one + one + one)
        words = ((x0_0, x0_1), (x1_0, x1_1))
    impl = jax.random.key_impl(key)
    return tuple(jax.random.wrap_key_data(jnp.stack(w, axis=-1), impl=impl) for w in words)  # type: ignore[return-value]


def leaf_noise(k0: jax.Array, k1: jax.Array, offset: int, shape: tuple[int, ...], dtype: Any) -> jax.Array:
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
    return normal_from_bits(*threefry2x32(k0, k1, hi, lo), dtype)


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


_SHARED_ZEROS: list[jax.Array] = []


@contextlib.contextmanager
def shared_zero(source: jax.Array) -> Iterator[None]:
    """While tracing inside this scope, the bins' conditionals take an opaque runtime zero made
    from `source`, a uint32 scalar the caller has outside any vmap over chains (the sampler's
    step count, or its run key's data), instead of one derived from the key and the previous bin.

    Under a vmap over chains the key-derived zero is chain 0's (`_unbatched`), which, when the
    chains are sharded over devices, is a cross-device broadcast every step; this keeps the
    step free of communication. The bins are then ordered by an optimization barrier on the
    chain's own values. The numbers do not change (a zero is a zero).
    """
    source = jnp.asarray(source, _U32)
    _SHARED_ZEROS.append(_opaque_zero(source, source))
    try:
        yield
    finally:
        _SHARED_ZEROS.pop()


@functools.lru_cache(maxsize=64)
def _bin_branches(padded: int, dtype: Any) -> tuple[Callable, Callable]:
    """The two branches of a bin's conditional: one pair of function objects per (size, dtype),
    so that JAX traces the generator once however many bins of that size a tree has."""

    def generate(hi: jax.Array, lo: jax.Array, k0: jax.Array, k1: jax.Array, offsets: tuple) -> tuple:
        counter_lo = lo + jax.lax.iota(_U32, padded)
        counter_hi = hi + (counter_lo < lo).astype(_U32)  # carry when the low word wraps
        return normal_from_bits(*threefry2x32(k0, k1, counter_hi, counter_lo), dtype), offsets

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
    noise is alive at a time. The numbers are exactly those of `leaf_noise` at the same
    counters (the layout does not depend on this choice).
    """
    local = [o - start for o, _ in members]
    # The bin's start goes in as a runtime value (+ an opaque zero) rather than a constant, which
    # XLA would sink into the branch and bake into the generator, one distinct kernel per bin.
    if _SHARED_ZEROS:
        zero = _SHARED_ZEROS[-1]
    else:
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
        for o, (_, shape) in zip(offsets, members, strict=True)
    ]


def _token(k0: jax.Array, results: list[Any]) -> jax.Array:
    """An opaque zero that depends on one element of every array in `results`."""
    token = jnp.zeros((), _U32)
    for x in jax.tree.leaves(results):
        first = jnp.ravel(x)[0].astype(jnp.float32)
        token = token + _opaque_zero(jax.lax.bitcast_convert_type(first, _U32), k0)
    return token


def _checked_sizes(leaves: Sequence[jax.Array | jax.ShapeDtypeStruct]) -> list[int]:
    """The leaves' element counts; an error for a leaf past the generator's 32-bit counters."""
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    for size, x in zip(sizes, leaves, strict=True):
        if size > _MAX_LEAF_ELEMENTS:
            raise ValueError(
                f"noise generation supports leaves of at most 2**32 - 1 elements, got a leaf of "
                f"shape {jnp.shape(x)} ({size} elements); split it into smaller leaves"
            )
    return sizes


def _bins(sizes: list[int], dtypes: list[Any]) -> list[list[int]]:
    """Runs of consecutive small leaves of one noise dtype, cut into bins of <= capacity elements."""
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
    return bins


def map_with_noise(
    key: jax.Array,
    leaves: Sequence[jax.Array | jax.ShapeDtypeStruct],
    # noise_i is an array; with draws > 1 a leaf of fused noise gets a tuple of one array per draw
    fn: Callable[[int, Any], Any],
    draws: int = 1,
) -> list[Any]:
    """`[fn(i, noise_i) for each leaf i]`, with noise_i ~ N(0, 1) in the leaf's noise dtype.

    Layout (documented in `normal_like`): element j (row-major) of leaf i gets counter
    c = (sizes of leaves 0..i−1) + j, and its value is `normal_from_bits(threefry2x32(K, c))`
    with K two 32-bit words drawn from `key`. Leaves of at least `_SMALL_LEAF` elements get a
    generator fused into `fn`'s kernel (`leaf_noise`: no temporaries, partitionable); runs of
    smaller leaves share one per bin of at most `_BIN_ELEMENTS` elements, or 1/`_MAX_BINS` of
    them all (`_small_leaf_noise`: one compiled generator, at most one bin of noise in memory;
    greedy packing of whole leaves keeps the count below 2·`_MAX_BINS` + 1), except on
    accelerators when there are at most `_FUSED_ON_ACCELERATORS` small leaves (see there).
    Every path gives the same numbers.

    With `draws` > 1 each leaf has a leading axis of that many independent draws (the layout is
    that of the whole leaf); a fused leaf then gets a tuple of `draws` generators of the trailing
    shape, whose counters are the rows of that layout, so that XLA fuses each into `fn` (one
    generator over the stacked shape, sliced, does not fuse and runs ~8x slower).
    """
    k0, k1 = key_words(key)
    sizes = _checked_sizes(leaves)
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    dtypes = [_noise_dtype(jnp.result_type(x)) for x in leaves]

    def fused(i: int) -> Any:
        if sizes[i] == 0:
            return fn(i, jnp.zeros(jnp.shape(leaves[i]), dtypes[i]))
        if draws == 1:
            return fn(i, leaf_noise(k0, k1, offsets[i], jnp.shape(leaves[i]), dtypes[i]))
        row_shape = tuple(jnp.shape(leaves[i]))[1:]
        row = sizes[i] // draws
        return fn(i, tuple(leaf_noise(k0, k1, offsets[i] + d * row, row_shape, dtypes[i]) for d in range(draws)))

    bins = _bins(sizes, dtypes)
    binned = [j for members in bins for j in members]
    in_bins = set(binned)
    results: list[Any] = [None if i in in_bins else fused(i) for i in range(len(leaves))]
    if not bins:
        return results

    def small_leaves_binned() -> list[Any]:
        out = []
        token = jnp.zeros((), _U32)
        w0, w1 = k0, k1
        for members in bins:
            fill = sum(sizes[j] for j in members)
            # Bins padded to a multiple of 2^16 mostly share one size, so one compiled generator
            # (<= 6% extra work for full bins); a lone bin needs no padding.
            padded = -(-fill // (1 << 16)) * (1 << 16) if len(bins) > 1 else fill
            noise = _small_leaf_noise(
                w0,
                w1,
                token,
                offsets[members[0]],
                [(offsets[j], jnp.shape(leaves[j])) for j in members],
                padded,
                dtypes[members[0]],
            )
            out.extend(fn(j, z) for j, z in zip(members, noise, strict=True))
            if len(bins) > 1:
                # The next bin waits for this bin's last leaf, so (with XLA's memory-aware
                # scheduler) one bin of noise is alive at a time; one leaf keeps tracing cheap.
                if _SHARED_ZEROS:
                    w0, w1, _ = jax.lax.optimization_barrier((w0, w1, out[-1]))
                else:
                    token = _token(k0, out[-1])
        return out

    if len(binned) <= _FUSED_ON_ACCELERATORS:
        small = jax.lax.platform_dependent(cpu=small_leaves_binned, default=lambda: [fused(j) for j in binned])
    else:
        small = small_leaves_binned()
    for j, r in zip(binned, small, strict=True):
        results[j] = r
    return results


def _normal_like(key: jax.Array, tree: ArrayTree) -> ArrayTree:
    leaves, treedef = jax.tree.flatten(tree)
    noise = map_with_noise(key, leaves, lambda i, z: z.astype(jnp.result_type(leaves[i])))
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
    `jax.random.bits(key, (2,), uint32)` for other implementations. So no two elements anywhere
    in the tree share a hash input, leaves of the same shape never share noise, and the value at
    an element depends only on the key and its flat position. Noise is computed in float32
    (float64 for float64 leaves) and rounded to the leaf's dtype.

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
    if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((key, tree))):
        # Inside a trace, inline: a nested jit's cached trace could capture the caller's
        # `shared_zero` (a tracer of that trace) and be reused by another trace.
        return _normal_like(key, tree)
    return _normal_like_jit(key, tree)
