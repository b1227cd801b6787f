"""Exact retrieval ranks from a fast float32 pass (docs/evaluation.md), for `metrics.ranks`.

A rank counts the gallery rows strictly closer to a query than its own row, by float64
distances of L2-normalised rows. Computing all 5,000 × 5,000 distances in float64 costs twice
as much as in float32, and float32 alone would misplace near ties. So `Screen` computes float32
keys (one matrix product for cosine and L2; the kernels of `l1_distance` for L1) together with a
rigorous bound on how far each can be from the float64 distance, decides every row the bound
puts clearly on one side of the query's threshold, and recomputes only the undecided few
(typically a handful per query) in float64. The result is the float64 one, tie rules included.
"""

import numpy as np

from speech2face import l1_distance

EPSILON = 1e-12  # norm floor: an all-zero row stays zero instead of becoming NaN
# Distances this close to the true one (relative to the size of the terms summed: ‖q‖² + ‖g‖²,
# ‖q‖₁ + ‖g‖₁; absolute for cosine) count as ties: float64 rounding differs between ways of
# summing, and an exact duplicate of the true gallery row must tie, not win. 1e-12 is far below
# any real gap between features.
TIE_RTOL = 1e-12
_ROW_CHUNK = 1024  # rows per float64 chunk while preparing rows (32 MB at 4096-D)
_PAIR_BLOCK = 256  # pairs per float64 recheck block (2 × 8 MB of gathered 4096-D rows)
_U32 = 2.0**-24  # unit roundoff of float32


class Rows:
    """Rows of `x` [n, d] prepared in one chunked float64 pass.

    Keeps float32 copies `rows32` for the fast pass and, per row, the float64 divisor, squared
    norm `sq`, norm and (if `want_l1`) L1 norm of the row as normalised, so that `exact(idx)`
    rebuilds any float64 row exactly as a float64 normalisation of the whole matrix would.

    Raises:
      ValueError: `x` holds NaN or infinite values (naming `name`).
    """

    def __init__(self, x, normalize, name, want_l1):
        n = x.shape[0]
        self.source, self.normalize = x, normalize
        self.rows32 = np.empty(x.shape, np.float32)
        self.denom, self.sq = np.ones(n), np.empty(n)
        self.l1 = np.empty(n) if want_l1 else None
        for start in range(0, n, _ROW_CHUNK):
            part = slice(start, start + _ROW_CHUNK)
            rows = np.array(x[part], dtype=np.float64)
            if not np.isfinite(rows).all():
                raise ValueError(f"{name} contains NaN or infinite values; fix the features first")
            if normalize:
                self.denom[part] = np.maximum(np.linalg.norm(rows, axis=1), EPSILON)
                rows /= self.denom[part, None]
            self.rows32[part] = rows
            self.sq[part] = np.einsum("ij,ij->i", rows, rows)
            if want_l1:
                self.l1[part] = np.abs(rows).sum(axis=1)
        self.norms = np.sqrt(self.sq)

    def exact(self, idx):
        """float64 rows [len(idx), d] (a copy), as the float64 normalisation makes them."""
        rows = np.array(self.source[idx], dtype=np.float64)
        if self.normalize:
            rows /= self.denom[idx, None]
        return rows


def _round32(x, up):
    """float64 values `x` rounded to float32 towards +inf (`up`) or −inf: a safe float32 cut."""
    y = x.astype(np.float32)
    if up:
        return np.where(y < x, np.nextafter(y, np.float32(np.inf)), y)
    return np.where(y > x, np.nextafter(y, np.float32(-np.inf)), y)


class Screen:
    """Counts, per query, the gallery rows strictly closer than its own (`count_closer`).

    Keys, larger for nearer rows: q·g (cos) or q·g − ‖g‖²/2 (l2), both one float32 matrix
    product, or the float64 keys of `l1_distance.L1Gallery` (l1). The float64 distance D[i, j]
    lies within α_i − β·key[i, j] ± err_i: a float32 sum of n terms errs by at most
    γ_n = n·u/(1 − n·u) times the sum of their magnitudes, in any order (Higham, "Accuracy and
    Stability of Numerical Algorithms", §3.1), which for a dot product of rows is at most
    γ_d·‖q‖‖g‖ (Cauchy–Schwarz); rounding the rows to float32 adds 2u·‖q‖‖g‖.
    """

    def __init__(self, metric, q, g, num_threads):
        self.metric, self.q, self.g = metric, q, g
        dim = q.rows32.shape[1]
        # |fl32(q̃·g̃) − q·g| ≤ (γ_d + 2u)(1 + 4u)·‖q‖‖g‖; 1e-12 covers the float64 reference.
        self.dot_error = (l1_distance.gamma(dim) + 2 * _U32) * (1 + 4 * _U32) + 1e-12
        self.tiny = 4 * dim * 2.0**-126  # float32 underflow, in absolute terms
        self.g_norm, self.g_sq = g.norms.max(), g.sq.max()
        if metric == "l1":
            self.l1 = l1_distance.L1Gallery(g.rows32, num_threads)
            self.q_sums = q.rows32.sum(axis=1, dtype=np.float64)
        self.half_sq32 = (0.5 * g.sq).astype(np.float32)

    def keys(self, rows):
        """Keys [len(rows), m] of query rows `rows` against every gallery row."""
        if self.metric == "l1":
            return self.l1.keys(self.q.rows32[rows])
        keys = self.q.rows32[rows] @ self.g.rows32.T
        if self.metric == "l2":
            keys -= self.half_sq32
        return keys

    def terms(self, rows):
        """(α, β, err) with |D − (α − β·key)| ≤ err for every gallery row (see the class)."""
        q = self.q
        if self.metric == "cos":  # normalised rows: the norms in D differ from 1 by ≤ 1e-12
            return 1.0, 1.0, self.dot_error * q.norms[rows] * self.g_norm + 4e-12 + self.tiny
        if self.metric == "l2":  # D = ‖q‖² − 2·(q·g − ‖g‖²/2); the key adds two roundings
            key_err = (self.dot_error + 2 * _U32) * q.norms[rows] * self.g_norm
            key_err += 2 * _U32 * self.g_sq
            reference = 1e-12 * (q.sq[rows] + self.g_sq + 1.0)
            return q.sq[rows], 2.0, 2.0 * key_err + reference + self.tiny
        l1_err = (self.l1.rel_error + 2 * _U32) * (q.l1[rows] + self.g.l1.max())
        return self.q_sums[rows], 1.0, l1_err + self.tiny

    def exact(self, qi, gj):
        """float64 distances [len(qi)] of query rows qi to gallery rows gj, pair by pair."""
        out = np.empty(len(qi))
        for start in range(0, len(qi), _PAIR_BLOCK):
            i, j = qi[start : start + _PAIR_BLOCK], gj[start : start + _PAIR_BLOCK]
            a, b = self.q.exact(i), self.g.exact(j)
            if self.metric == "l1":
                out[start : start + len(i)] = np.abs(a - b).sum(axis=1)
                continue
            dot = np.einsum("ij,ij->i", a, b)
            if self.metric == "cos":
                norms = np.maximum(self.q.norms[i], EPSILON) * np.maximum(self.g.norms[j], EPSILON)
                out[start : start + len(i)] = 1.0 - dot / norms
            else:
                out[start : start + len(i)] = np.maximum(self.q.sq[i] + self.g.sq[j] - 2 * dot, 0)
        return out

    def tolerance(self, rows):
        """[c] tie tolerance of query rows against their own gallery rows (`TIE_RTOL`)."""
        if self.metric == "cos":
            return np.full(len(rows), TIE_RTOL)
        if self.metric == "l2":
            return TIE_RTOL * (self.q.sq[rows] + self.g.sq[rows])
        return TIE_RTOL * (self.q.l1[rows] + self.g.l1[rows])

    def count_closer(self, rows):
        """int64 [c]: gallery rows strictly closer to each query of `rows` than its own row.

        `rows` is a contiguous range of query indices; query i's own gallery row is row i.
        """
        threshold = self.exact(rows, rows) - self.tolerance(rows)
        alpha, beta, err = self.terms(rows)
        # D < threshold is sure when α − β·key + err < threshold, impossible when ≥ with −err.
        closer_above = (alpha + err - threshold) / beta
        unsure_above = (alpha - err - threshold) / beta
        keys = self.keys(rows)
        if keys.dtype == np.float32:
            closer_above, unsure_above = _round32(closer_above, True), _round32(unsure_above, False)
        closer = keys > closer_above[:, None]
        counts = np.count_nonzero(closer, axis=1)
        unsure = keys > unsure_above[:, None]
        unsure ^= closer  # closer_above ≥ unsure_above: what is left is the undecided band
        unsure[np.arange(len(rows)), rows] = False  # the own row is never closer than itself
        qi, gj = np.nonzero(unsure)
        if qi.size:
            nearer = self.exact(rows[qi], gj) < threshold[qi]
            counts += np.bincount(qi, weights=nearer, minlength=len(rows)).astype(np.int64)
        return counts
