"""Fast L1 screening between float32 feature rows, for `metrics.ranks` (S2F → face retrieval).

L1 has no matrix-product form, so it gets its own kernels: a register-blocked, parallel numba
kernel (numba comes with librosa), or a blocked NumPy kernel on a thread pool where numba is
missing. Both use Σ|q − g| = Σq + Σg − 2·Σmin(q, g) (true for any reals: one min and one add per
term instead of subtract, abs and add), and both sum in float32 over short runs of dimensions
that are then added in float64, so each comes with a rigorous error bound (`L1Gallery.rel_error`).
`metrics.ranks` uses that bound to recheck in float64 only the few gallery rows whose order the
fast sums cannot decide: ranks come out exactly as from float64 distances.
`benchmarks/retrieval.py` times both at the paper's 5,000 × 5,000 × 4096.
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
# numba kernel: a tile of 32 queries × 16 gallery rows runs one dimension block of 256 float32
# (32 KB of rows, L1-resident) through 4 × 2 micro-blocks; each micro-block keeps 8 AVX2
# accumulators in registers and loads 6 vectors per 8 min-and-add pairs. Measured on 2 cores.
_NUMBA_QUERY_TILE = 32
_NUMBA_GALLERY_TILE = 16
_NUMBA_DIM_BLOCK = 256  # float32 run length: bounds the rounding error (see `rel_error`)
# NumPy kernel blocking: a [16 dims, 16 queries, 1000 gallery] float32 buffer (1 MB) stays in
# L2, and 256 NumPy calls per block keep the Python overhead small. Measured best on 2 cores.
_L1_QUERY_BLOCK = 16
_L1_GALLERY_BLOCK = 1000
_L1_DIM_GROUP = 16
_U32 = 2.0**-24  # unit roundoff of float32


def gamma(n):
    """Higham's γ_n = n·u / (1 − n·u), u = float32's unit roundoff: the relative error bound of
    a float32 sum of n terms in any order (Higham, Accuracy and Stability, §3.1)."""
    return n * _U32 / (1.0 - n * _U32)


if numba is not None:

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def _min_sum_kernel(q, g, g_sums, out, q_tile, g_tile, dim_block):  # pragma: no cover
        """out[i, j] = 2·Σ_k min(q[i, k], g[j, k]) − g_sums[j], float64.

        q [c, d], g [m, d] float32 with c a multiple of q_tile (of 4) and m of g_tile (of 2);
        out [c, m] float64, zeroed. Each float32 run of `dim_block` terms goes into float64.
        Row views over a dimension block make the inner loop contiguous (numba's negative-index
        wraparound would otherwise turn every load into a gather). fastmath lets LLVM vectorise
        and reassociate the sums: a summation order, covered by the error bound.
        """
        dim = q.shape[1]
        g_tiles = g.shape[0] // g_tile
        for tile in numba.prange((q.shape[0] // q_tile) * g_tiles):
            i0 = (tile // g_tiles) * q_tile
            j0 = (tile % g_tiles) * g_tile
            for k0 in range(0, dim, dim_block):
                n = min(dim_block, dim - k0)
                for i in range(i0, i0 + q_tile, 4):
                    q0, q1 = q[i, k0 : k0 + n], q[i + 1, k0 : k0 + n]
                    q2, q3 = q[i + 2, k0 : k0 + n], q[i + 3, k0 : k0 + n]
                    for j in range(j0, j0 + g_tile, 2):
                        g0, g1 = g[j, k0 : k0 + n], g[j + 1, k0 : k0 + n]
                        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = np.float32(0.0)
                        for k in range(n):
                            y0, y1 = g0[k], g1[k]
                            a00, a01 = a00 + min(q0[k], y0), a01 + min(q0[k], y1)
                            a10, a11 = a10 + min(q1[k], y0), a11 + min(q1[k], y1)
                            a20, a21 = a20 + min(q2[k], y0), a21 + min(q2[k], y1)
                            a30, a31 = a30 + min(q3[k], y0), a31 + min(q3[k], y1)
                        pairs = ((a00, a01), (a10, a11), (a20, a21), (a30, a31))
                        for r in range(4):
                            out[i + r, j] += pairs[r][0]
                            out[i + r, j + 1] += pairs[r][1]
            for i in range(i0, i0 + q_tile):
                for j in range(j0, j0 + g_tile):
                    out[i, j] = 2.0 * out[i, j] - g_sums[j]


def _l1_backend():
    """The L1 kernel to use: numba when importable (librosa brings it), unless `BACKEND`."""
    if BACKEND == "numba" and numba is None:
        raise ValueError("the numba L1 kernel was requested but numba is not installed")
    if BACKEND == "auto":
        return "numpy" if numba is None else "numba"
    if BACKEND not in ("numba", "numpy"):
        raise ValueError(f"l1_distance.BACKEND must be 'auto', 'numba' or 'numpy'; got {BACKEND!r}")
    return BACKEND


def _padded(rows, multiple):
    """`rows` [n, d] with zero rows appended up to a multiple of `multiple` (no copy if none)."""
    extra = -rows.shape[0] % multiple
    if not extra:
        return np.ascontiguousarray(rows)
    return np.concatenate([rows, np.zeros((extra, rows.shape[1]), rows.dtype)])


def _min_sums_numpy_block(q_t, g_t, out):
    """out += Σ_k min(q_k, g_k) for a block: q_t [d, cq, 1], g_t [d, 1, cg] float32, out f64."""
    dim = q_t.shape[0]
    group = min(_L1_DIM_GROUP, dim)
    buf = np.empty((group, q_t.shape[1], g_t.shape[2]), np.float32)
    part = np.empty(out.shape, np.float32)
    for k in range(0, dim, group):
        kk = min(group, dim - k)
        np.minimum(q_t[k : k + kk], g_t[k : k + kk], out=buf[:kk])
        np.add.reduce(buf[:kk], axis=0, out=part)
        out += part  # float64: only `group` terms are summed in float32


def _keys_numpy(q32, g_t, g_sums, num_threads):
    """The NumPy twin of `_min_sum_kernel`; gallery transposed, g_t [d, m].

    Looping over dimensions with the gallery along the innermost axis keeps every NumPy call a
    long, vectorised, cache-resident pass; blocks of (queries, gallery rows) go to a thread pool
    (NumPy releases the GIL in these loops). Several times slower than the numba kernel.
    """
    c, m = q32.shape[0], g_t.shape[1]
    q_t = np.ascontiguousarray(q32.T)[:, :, None]
    g_e = g_t[:, None, :]
    total = np.zeros((c, m), np.float64)
    blocks = [(i, j) for i in range(0, c, _L1_QUERY_BLOCK) for j in range(0, m, _L1_GALLERY_BLOCK)]

    def run(block):
        i, j = block
        _min_sums_numpy_block(
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
    total *= 2.0
    total -= g_sums[None, :]
    return total


class L1Gallery:
    """Gallery rows [m, d] (float32) prepared once for many query chunks.

    `keys(q32)` returns float64 [c, m] keys K with Σ_k |q_k − g_k| = Σ_k q_k − K[i, j] up to
    `rel_error · (‖q_i‖₁ + ‖g_j‖₁)`: larger keys are nearer rows, and the query's own sum, the
    same across a row, is left out (it cannot change an order).
    """

    def __init__(self, rows32, num_threads):
        self.backend = _l1_backend()
        self.num_threads = max(1, int(num_threads))
        self.num_rows, dim = rows32.shape
        self.row_sums = rows32.sum(axis=1, dtype=np.float64)
        if self.backend == "numba":
            self.rows32 = _padded(rows32, _NUMBA_GALLERY_TILE)
            self.padded_sums = np.zeros(self.rows32.shape[0])
            self.padded_sums[: self.num_rows] = self.row_sums
            block = _NUMBA_DIM_BLOCK
        else:
            self.rows_t = np.ascontiguousarray(rows32.T)  # [d, m]: the kernel runs along m
            block = _L1_DIM_GROUP
        # Each float32 run of `block` min terms has error ≤ γ_block·Σ|min| ≤ γ_block·(‖q‖₁+‖g‖₁),
        # doubled by the 2·Σmin; 1e-12 covers every float64 step (sums of ≤ 10⁶ terms).
        self.rel_error = 2.0 * gamma(min(block, dim)) * (1.0 + 4 * _U32) + 1e-12

    def keys(self, q32):
        """float64 [c, m] keys (see the class docstring) of float32 query rows q32 [c, d]."""
        if self.backend == "numpy":
            return _keys_numpy(q32, self.rows_t, self.row_sums, self.num_threads)
        q = _padded(q32, _NUMBA_QUERY_TILE)
        out = np.zeros((q.shape[0], self.rows32.shape[0]), np.float64)
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(self.num_threads, numba.config.NUMBA_NUM_THREADS)))
        try:
            _min_sum_kernel(q, self.rows32, self.padded_sums, out, _NUMBA_QUERY_TILE,
                            _NUMBA_GALLERY_TILE, _NUMBA_DIM_BLOCK)
        finally:
            numba.set_num_threads(previous)
        return out[: q32.shape[0], : self.num_rows]


def default_threads():
    """The CPUs this process may use (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
