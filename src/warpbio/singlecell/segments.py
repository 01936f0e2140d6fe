"""Sort-based segment operations shared by the single-cell stages, on NumPy or CuPy.

CuPy has no ``ufunc.reduceat`` we can rely on and its ``bincount`` with float
weights adds in a nondeterministic order (atomics).  Sums over sorted segments
through a float64 cumulative sum are deterministic on both libraries, so the
graph and clustering code, whose decisions hinge on such sums, gives the same
answer on every run.
"""

from __future__ import annotations

from types import ModuleType

MASK32 = 0xFFFFFFFF


def stable_argsort(values, xp: ModuleType, axis: int = -1):
    """Stable argsort on both libraries (CuPy's sort is always stable and takes no kind)."""
    if xp.__name__ == "numpy":
        return xp.argsort(values, axis=axis, kind="stable")
    return xp.argsort(values, axis=axis)


def segment_sums(values, starts, xp: ModuleType):
    """Sum of ``values[starts[i]:starts[i+1]]`` for each i (``starts`` ends with len)."""
    total = xp.concatenate([xp.zeros(1, dtype=xp.float64), xp.cumsum(values, dtype=xp.float64)])
    return total[starts[1:]] - total[starts[:-1]]


def run_starts(sorted_keys, xp: ModuleType):
    """Start offsets of the runs of equal keys in a sorted array, plus its length."""
    n = int(sorted_keys.shape[0])
    if n == 0:
        return xp.zeros(1, dtype=xp.int64)
    changes = xp.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return xp.concatenate(
        [xp.zeros(1, dtype=xp.int64), changes.astype(xp.int64), xp.full(1, n, dtype=xp.int64)]
    )


def sum_by_key(keys, values, xp: ModuleType):
    """Unique keys (ascending) and the float64 sum of ``values`` for each."""
    order = stable_argsort(keys, xp)
    keys_sorted = keys[order]
    starts = run_starts(keys_sorted, xp)
    return keys_sorted[starts[:-1]], segment_sums(values[order], starts, xp)


def sortable_float_bits(values, xp: ModuleType):
    """float32 values as int64 keys with the same order (negatives included)."""
    bits = xp.ascontiguousarray(values, dtype=xp.float32).view(xp.uint32).astype(xp.int64)
    negative = bits >= (1 << 31)
    return xp.where(negative, (1 << 32) - 1 - bits, bits + (1 << 31))


def first_per_segment(segment_ids, n_segments: int, xp: ModuleType):
    """Index of the first element of each segment in an array sorted by segment; -1 if empty."""
    first = xp.full(n_segments, -1, dtype=xp.int64)
    if segment_ids.shape[0] == 0:
        return first
    starts = run_starts(segment_ids, xp)[:-1]
    first[segment_ids[starts]] = starts
    return first


def scatter_min(target, indices, values, xp: ModuleType) -> None:
    """``target[indices] = min(target[indices], values)`` with repeated indices (in place)."""
    if xp.__name__ == "numpy":
        xp.minimum.at(target, indices, values)
    else:
        import cupyx

        cupyx.scatter_min(target, indices, values)


def connected_components(rows, cols, n: int, xp: ModuleType):
    """Component label (its smallest node id) per node of a symmetric edge list.

    Min-label propagation over the edges, each round finished by pointer
    jumping (label of label) to a fixed point; NumPy or CuPy.
    """
    labels = xp.arange(n, dtype=xp.int64)
    while True:
        proposed = labels.copy()
        scatter_min(proposed, rows, labels[cols], xp)
        while True:
            jumped = proposed[proposed]
            if bool((jumped == proposed).all()):
                break
            proposed = jumped
        if bool((proposed == labels).all()):
            return labels
        labels = proposed


def mix32(x):
    """A 32-bit integer hash (Chris Wellons' lowbias32 with 31-bit multipliers).

    Inputs and outputs lie in [0, 2^32) and every product stays below 2^63, so
    int64 arithmetic in Numba (CPU and CUDA), Python ints and int64 arrays of
    NumPy or CuPy all agree exactly.
    """
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & MASK32
    x = ((x ^ (x >> 15)) * 0x6C8E9CF5) & MASK32
    return x ^ (x >> 16)
