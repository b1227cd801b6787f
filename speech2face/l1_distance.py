"""Exact L1 distances between float32 feature rows, for `metrics` (S2F → face retrieval).

L1 has no matrix-product form, so it gets its own kernels: a tiled, parallel numba kernel (numba
comes with librosa), or a blocked NumPy kernel on a thread pool where numba is missing.
`L1Gallery` prepares a gallery once for many query chunks. `benchmarks/retrieval.py` times both
at the paper's 5,000 × 5,000 × 4096.
"""

import concurrent.futures
import os

import numpy as np

try:  # numba comes with librosa; without it the L1 distance falls back to a NumPy kernel
    import numba
except ImportError:  # pragma: no cover
    numba = None

# L1 backend: "auto" (numba when importable), "numba" or "numpy"; tests switch it.
BACKEND = "auto"
# numba kernel tiles: 16 gallery rows of 4096 float32 (256 KB) stay in L2 while 64 queries pass.
_L1_NUMBA_QUERY_TILE = 64
_L1_NUMBA_GALLERY_TILE = 16
# NumPy kernel blocking: a [16 dims, 16 queries, 1000 gallery] float32 buffer (1 MB) stays in
# L2, and 256 NumPy calls per block keep the Python overhead small. Measured best on 2 cores.
_L1_QUERY_BLOCK = 16
_L1_GALLERY_BLOCK = 1000
_L1_DIM_GROUP = 16


# L1 kernels. Both read float32 rows (half the memory traffic of float64). The numba kernel sums
# in float64 (≈ 1e-12 from a float64 sum of the same float32 values), the NumPy one in float32
# groups of 16 (≈ 1e-6); rounding the unit-normalised inputs to float32 moves an L1 distance of
# ≈ 40 by ≈ 1e-7.

if numba is not None:

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def _l1_kernel(q, g, out, q_block, g_block):  # pragma: no cover (compiled)
        """out[i, j] = Σ_k |q[i, k] − g[j, k]|; q [c, d], g [m, d] float32, out [c, m] float64.

        Tiles of (q_block queries × g_block gallery rows) keep the gallery rows in L2 while
        every query of the tile passes over them; tiles run in parallel. fastmath lets LLVM
        vectorise the sum (reassociation); every pair runs the same loop, so equal rows give
        equal sums (and `metrics._TIE_RTOL` would absorb any difference in the last bits).
        """
        num_q, dim = q.shape
        num_g = g.shape[0]
        g_tiles = (num_g + g_block - 1) // g_block
        for tile in numba.prange(((num_q + q_block - 1) // q_block) * g_tiles):
            i0 = (tile // g_tiles) * q_block
            j0 = (tile % g_tiles) * g_block
            for i in range(i0, min(i0 + q_block, num_q)):
                for j in range(j0, min(j0 + g_block, num_g)):
                    total = 0.0
                    for k in range(dim):
                        total += abs(np.float64(q[i, k]) - np.float64(g[j, k]))
                    out[i, j] = total


def _l1_backend():
    """The L1 kernel to use: numba when importable (librosa brings it), unless `BACKEND`."""
    if BACKEND == "numba" and numba is None:
        raise ValueError("the numba L1 kernel was requested but numba is not installed")
    if BACKEND == "auto":
        return "numpy" if numba is None else "numba"
    return BACKEND


def _l1_scores_numba(q32, g32, num_threads):
    """L1 distances [c, m] float64 of float32 queries [c, d] to float32 gallery rows [m, d]."""
    out = np.empty((q32.shape[0], g32.shape[0]), np.float64)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(num_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        _l1_kernel(q32, g32, out, _L1_NUMBA_QUERY_TILE, _L1_NUMBA_GALLERY_TILE)
    finally:
        numba.set_num_threads(previous)
    return out


def _l1_block(q_t, g_t, out):
    """Σ_k min(q_k, g_k) for a block: q_t [d, cq, 1], g_t [d, 1, cg] float32 → out [cq, cg]."""
    dim = q_t.shape[0]
    group = min(_L1_DIM_GROUP, dim)
    buf = np.empty((group, q_t.shape[1], g_t.shape[2]), np.float32)
    part = np.empty(out.shape, np.float32)
    out[...] = 0.0
    for k in range(0, dim, group):
        kk = min(group, dim - k)
        np.minimum(q_t[k : k + kk], g_t[k : k + kk], out=buf[:kk])
        np.add.reduce(buf[:kk], axis=0, out=part)
        out += part  # float64: only `group` terms are summed in float32


def _l1_scores_numpy(q32, g_t, g_sums, num_threads):
    """The NumPy fallback of `_l1_scores_numba`; gallery transposed, g_t [d, m].

    Σ|q − g| = Σq + Σg − 2·Σmin(q, g): one elementwise op per term (the reduction is the
    second), against two for subtract-and-abs. Looping over dimensions with the gallery along
    the innermost axis keeps every NumPy call a long, vectorised, cache-resident pass; blocks of
    (queries, gallery rows) go to a thread pool (NumPy releases the GIL in these loops). About
    5× slower than the numba kernel; the cancellation in Σq + Σg − 2·Σmin costs ≈ 1e-6.
    """
    c, m = q32.shape[0], g_t.shape[1]
    q_t = np.ascontiguousarray(q32.T)[:, :, None]
    g_e = g_t[:, None, :]
    total = np.empty((c, m), np.float64)
    blocks = [(i, j) for i in range(0, c, _L1_QUERY_BLOCK) for j in range(0, m, _L1_GALLERY_BLOCK)]

    def run(block):
        i, j = block
        _l1_block(
            q_t[:, i : i + _L1_QUERY_BLOCK],
            g_e[:, :, j : j + _L1_GALLERY_BLOCK],
            total[i : i + _L1_QUERY_BLOCK, j : j + _L1_GALLERY_BLOCK],
        )

    if num_threads <= 1 or len(blocks) == 1:
        for block in blocks:
            run(block)
    else:
        with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
            list(pool.map(run, blocks))
    q_sums = q32.sum(axis=1, dtype=np.float64)
    return q_sums[:, None] + g_sums[None, :] - 2.0 * total


class L1Gallery:
    """Gallery rows [m, d] (float32) prepared once; `scores(q32)` gives L1 distances [c, m]."""

    def __init__(self, rows32, num_threads):
        self.backend = _l1_backend()
        self.num_threads = num_threads
        if self.backend == "numba":
            self.rows32 = rows32
        else:
            self.rows_t = np.ascontiguousarray(rows32.T)  # [d, m]: the kernel runs along m
            self.row_sums = rows32.sum(axis=1, dtype=np.float64)

    def scores(self, q32):
        """float64 [c, m] L1 distances of float32 query rows q32 [c, d]."""
        if self.backend == "numba":
            return _l1_scores_numba(q32, self.rows32, self.num_threads)
        return _l1_scores_numpy(q32, self.rows_t, self.row_sums, self.num_threads)


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
