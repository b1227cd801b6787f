"""Evaluation metrics (docs/evaluation.md): feature distances and S2F → face retrieval.

Pure functions (NumPy; numba for L1) on feature matrices `[n, d]` (any float dtype; v_s
and v_f are 4096-D). Rows are L2-normalised first unless `normalize=False` is passed. The paper
does not say which it did; its L2 retrieval row lies below its cosine row, which cannot happen
on unit vectors (L2 then ranks exactly as cosine), so its L2 and L1 rows were computed on raw
features. `feature_metrics` reports both (see `feature_distances`).

Retrieval ranks are exact (as from float64 distances) and need no sort: `ranking` decides most
gallery rows from one float32 matrix product (cosine, L2) or the L1 kernels of `l1_distance`
(numba, or NumPy where numba is missing), with a rigorous error bound, and recomputes the few
undecided rows in float64. `benchmarks/retrieval.py` times them at the paper's 5,000 × 5,000 ×
4096 (docs/performance.md).
"""

import numpy as np

from speech2face import l1_distance, ranking

METRICS = ("cos", "l1", "l2")
DEFAULT_KS = (1, 2, 5, 10)

_EPSILON = ranking.EPSILON  # norm floor: an all-zero row stays zero instead of becoming NaN
_ROW_CHUNK = 1024  # rows per float64 chunk in paired distances (bounds memory for 150 k pairs)
_CHUNK_ELEMENTS = 1 << 23  # queries × gallery rows per chunk of `ranks` (32 MB of float32 keys)


# ----------------------------------------------------------------------------------------------
# Input checks


def _check_matrix(x, name):
    """Returns `x` as a float array [n, d] (no copy when already float), or raises ValueError."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold real numbers; got dtype {x.dtype}")
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty matrix [rows, dim]; got shape {x.shape}")
    return x


def _check_finite(x, name):
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix the features first")


def _check_metric(metric):
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}; got {metric!r}")


def _check_ks(ks):
    ks = tuple(ks)
    if not ks or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in ks):
        raise ValueError(f"ks must be positive integers; got {ks!r}")
    return tuple(int(k) for k in ks)


def _normalize(x, enabled, name):
    """float64 copy of rows `x` [n, d], divided by their L2 norms when `enabled`.

    Raises ValueError (naming `name`) on NaN/inf, checked before dividing.
    """
    x = np.array(x, dtype=np.float64)
    _check_finite(x, name)
    if enabled:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPSILON)
    return x


# ----------------------------------------------------------------------------------------------
# Paired feature distances (the paper's feature-similarity table)


def paired_distances(a, b, normalize=True):
    """Per-row distances between matching rows of `a` and `b`.

    Args:
      a, b: [n, d] float arrays (e.g. v_s and v_f), row i of `a` paired with row i of `b`.
      normalize: L2-normalise every row first (the paper's protocol; zero rows stay zero).

    Returns:
      dict of float64 [n] arrays: `cos_deg` the angle in degrees (from the cosine, clipped to
      [-1, 1]; scale-free, so `normalize` does not change it), `l2` the Euclidean distance,
      `l1` the sum of absolute differences.

    Raises:
      ValueError: shapes differ, are not 2-D, or the input holds NaN/inf.
    """
    a = _check_matrix(a, "pred")
    b = _check_matrix(b, "true")
    if a.shape != b.shape:
        raise ValueError(
            f"pred and true must have the same shape [n, d] (row i of one pairs with row i of "
            f"the other); got {a.shape} and {b.shape}"
        )
    out = {"cos_deg": [], "l2": [], "l1": []}
    # Chunks bound the float64 copies: 150 k test pairs of 4096-D would be 5 GB at once.
    for start in range(0, a.shape[0], _ROW_CHUNK):
        x = _normalize(a[start : start + _ROW_CHUNK], normalize, "pred")
        y = _normalize(b[start : start + _ROW_CHUNK], normalize, "true")
        norms = np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), _EPSILON**2)
        cos = np.clip(np.einsum("ij,ij->i", x, y) / norms, -1.0, 1.0)
        out["cos_deg"].append(np.degrees(np.arccos(cos)))
        out["l2"].append(np.linalg.norm(x - y, axis=1))
        out["l1"].append(np.abs(x - y).sum(axis=1))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def feature_distances(pred, true, normalize=True):
    """Mean and standard deviation over rows of the angle, L2 and L1 distance (docs/evaluation.md).

    What is computed: each row of `pred` and `true` divided by its L2 norm, then per row the
    angle in degrees (arccos of the cosine, clipped to [-1, 1]), the L2 distance ‖x − y‖₂ and the
    L1 distance Σ|x − y|; then mean and population standard deviation (ddof=0) over rows.

    How this relates to the paper's numbers (6 s: 45.75° ± 5.09, L2 0.18 ± 0.02, L1 9.42 ± 1.54;
    3 s: 48.43° ± 6.01, 0.19 ± 0.03, 9.81 ± 1.74). For unit vectors the L2 distance is fixed by
    the angle: 2·sin(θ/2) = 0.777 at 45.75° (0.820 at 48.43°), and the L1 distance of a dense
    4096-D difference is about √(2·4096/π) = 51.1 times its L2 (simulated: 39.7 for unit
    Gaussian or ReLU-sparse vectors at 45.75°). So on L2-normalised rows expect L2 ≈ 0.78 and
    L1 ≈ 40 at the paper's angle, not 0.18 and 9.4. The paper's own L2 and L1 are consistent with each other (L1/L2 = 52.3 at 6 s, 51.6 at 3 s, i.e. dense
    differences) and with its angles, but at a common scale factor of about 0.23 (L2: 0.18/0.777
    = 0.232 at 6 s, 0.19/0.820 = 0.232 at 3 s; L1: 0.237 and 0.234), and the L2 spread matches
    too (0.232·cos(θ/2)·5.09° in radians = 0.019 vs 0.02). In other words, its L2/L1 columns look
    like distances between vectors of norm ≈ 0.23 rather than 1: features normalised to some
    other constant, or raw features whose norms happen to average ≈ 0.23 (the paper's separate
    L2 and cosine retrieval rows, which would coincide on equal-norm vectors, point to raw
    features). We do not rescale: compare angles directly with the paper, our normalised L2/L1
    with the paper's divided by ≈ 0.23, and our raw ones (`normalize=False`) where the features
    have the paper's scale (VGG-Face fc7 of real weights).

    Args:
      pred: [n, d] predicted features (v_s); true: [n, d] the matching ground truth (v_f).
      normalize: L2-normalise rows first (default; `feature_metrics` reports both).

    Returns:
      {"cos_deg": (mean, std), "l2": (mean, std), "l1": (mean, std)}, Python floats.

    Raises:
      ValueError: shapes differ or are not 2-D, or the input holds NaN/inf.
    """
    per_row = paired_distances(pred, true, normalize=normalize)
    return {name: (float(v.mean()), float(v.std())) for name, v in per_row.items()}


# ----------------------------------------------------------------------------------------------
# Retrieval


def _prepare(queries, gallery, metric):
    _check_metric(metric)
    queries = _check_matrix(queries, "queries")
    gallery = _check_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries and gallery must have the same feature size; got queries {queries.shape} "
            f"and gallery {gallery.shape}"
        )
    return queries, gallery


def _screen(queries, gallery, metric, normalize, num_threads):
    """`ranking.Screen` of checked inputs (rows normalised when `normalize` or for cos)."""
    normalize = normalize or metric == "cos"
    want_l1 = metric == "l1"
    return ranking.Screen(
        metric,
        ranking.Rows(queries, normalize, "queries", want_l1),
        ranking.Rows(gallery, normalize, "gallery", want_l1),
        num_threads or l1_distance.default_threads(),
    )


def distance_matrix(a, b, metric="cos", normalize=True, num_threads=None):
    """All pairwise distances between rows of `a` [n, d] and rows of `b` [m, d].

    Args:
      a, b: float arrays with the same feature size d.
      metric: "cos" (1 − cosine similarity), "l2" (Euclidean) or "l1" (sum of |differences|).
      normalize: L2-normalise rows first (docs/evaluation.md; "cos" is scale-free either way).
      num_threads: threads of the L1 kernel; None = the CPUs this process may use.

    Returns:
      float64 [n, m]: cos and l2 from float64 products; l1 from the fast kernel of
      `l1_distance` (float32 partial sums: ≈ 1e-6 off, which `ranks` never relies on).

    Raises:
      ValueError: unknown metric, feature sizes differ, or NaN/inf in the input.
    """
    a, b = _prepare(a, b, metric)
    normalize = normalize or metric == "cos"
    if metric == "l1":
        screen = _screen(a, b, metric, normalize, num_threads)
        return screen.q_sums[:, None] - screen.keys(np.arange(a.shape[0]))
    x, y = _normalize(a, normalize, "a"), _normalize(b, normalize, "b")
    dot = x @ y.T
    if metric == "cos":
        norms = np.maximum(np.linalg.norm(x, axis=1), _EPSILON)[:, None]
        return 1.0 - dot / (norms * np.maximum(np.linalg.norm(y, axis=1), _EPSILON)[None, :])
    sq_x, sq_y = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    return np.sqrt(np.maximum(sq_x[:, None] + sq_y[None, :] - 2.0 * dot, 0.0))


def ranks(queries, gallery, metric="cos", normalize=True, num_threads=None):
    """Rank of each query's own gallery row: how many gallery rows are strictly closer.

    Exact: equal to comparing float64 distances of the L2-normalised rows, as if computed one
    pair at a time; most rows are decided by float32 products or the L1 kernel with a rigorous
    error bound, the undecided few in float64 (see `ranking`). No sort: one comparison pass.

    Args:
      queries: [n, d] (e.g. v_s); row i belongs with row i of `gallery`.
      gallery: [m, d] with m >= n (e.g. v_f); rows n.. (if any) are distractors with no query.
      metric: "cos", "l2" or "l1" (see `distance_matrix`).
      normalize: L2-normalise rows first (docs/evaluation.md). On normalised rows "l2" ranks
        exactly as "cos" does (‖x − y‖² = 2 − 2·cos), up to float64 rounding.
      num_threads: threads of the L1 kernel; None = the CPUs this process may use.

    Returns:
      int64 [n]: 0 means the query's own row is the nearest. Ties favour the query: a row at the
      same distance, within 1e-12 relative (of ‖q‖² + ‖g‖² for l2, ‖q‖₁ + ‖g‖₁ for l1, absolute
      for cos), does not count as closer; exact duplicates of the own row always tie.

    Raises:
      ValueError: unknown metric, fewer gallery rows than queries, feature sizes differ, or
        NaN/inf in the input.
    """
    queries, gallery = _prepare(queries, gallery, metric)
    if gallery.shape[0] < queries.shape[0]:
        raise ValueError(
            f"gallery needs a row for every query (row i of queries belongs with row i of "
            f"gallery); got {queries.shape[0]} queries and {gallery.shape[0]} gallery rows"
        )
    screen = _screen(queries, gallery, metric, normalize, num_threads)
    chunk = int(np.clip(_CHUNK_ELEMENTS // gallery.shape[0], 16, 1024))
    out = np.empty(queries.shape[0], np.int64)
    for start in range(0, queries.shape[0], chunk):
        rows = np.arange(start, min(start + chunk, queries.shape[0]))
        out[rows] = screen.count_closer(rows)
    return out


def recall_at_k(query_ranks, ks=DEFAULT_KS):
    """{k: percent of queries with rank < k} (Python floats) from `ranks` output [n]."""
    ks = _check_ks(ks)
    query_ranks = np.asarray(query_ranks)
    if query_ranks.ndim != 1 or query_ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty vector; got shape {query_ranks.shape}")
    return {k: float(100.0 * np.mean(query_ranks < k)) for k in ks}


def retrieval_recall(
    queries, gallery, ks=DEFAULT_KS, metric="cos", normalize=True, num_threads=None
):
    """S2F → face retrieval recall@K in percent (docs/evaluation.md).

    Each query ranks the whole gallery; recall@K is the share of queries whose own gallery row
    (row i for query i) has rank < K, i.e. fewer than K rows strictly closer (ties favour the
    query). Paper, 6 s, 5,000-face gallery, cosine: R@1 10.92, R@2 17.00, R@5 30.60, R@10 45.82.
    Note that on L2-normalised rows "l2" and "cos" give the same recall; the paper's lower L2
    row (8.28, 13.66, 24.66, 35.84) can only come from features of unequal norms.

    Args:
      queries: [n, d]; gallery: [m, d], m >= n, row i belonging with query i (the rest are
        distractors). ks: positive ints. metric: "cos", "l1" or "l2". normalize: L2-normalise
        rows first (the protocol). num_threads: threads of the L1 kernel (None = all usable).

    Returns:
      {k: percent} with Python float values, in the order of `ks`. Compare with
      `chance_recall(len(gallery), ks)`.

    Raises:
      ValueError: bad metric or ks, mismatched shapes, or NaN/inf in the input.
    """
    ks = _check_ks(ks)
    return recall_at_k(ranks(queries, gallery, metric, normalize, num_threads), ks)


def chance_recall(gallery_size, ks=DEFAULT_KS):
    """Recall@K in percent of a random ranking of `gallery_size` rows: 100·min(k, n)/n."""
    if int(gallery_size) < 1:
        raise ValueError(f"gallery_size must be >= 1; got {gallery_size}")
    n = int(gallery_size)
    return {k: 100.0 * min(k, n) / n for k in _check_ks(ks)}


# ----------------------------------------------------------------------------------------------
# One evaluation's numbers


def mismatched_pairs(speaker_ids, seed):
    """(rows, partners): each row paired with a random clip of another speaker (where any)."""
    ids = np.asarray(speaker_ids)
    rng = np.random.default_rng(seed)
    partners = rng.permutation(len(ids))
    for _ in range(20):
        same = ids[partners] == ids
        if not same.any():
            break
        partners[same] = rng.integers(0, len(ids), int(same.sum()))
    keep = ids[partners] != ids
    return np.flatnonzero(keep), partners[keep]


def feature_metrics(v_s, v_f, speaker_ids, seed=0):
    """Retrieval and distance numbers of one duration, as `evaluation.run_evaluation` writes
    them to metrics.json (`durations.<d>`).

    Everything on L2-normalised rows, and under "raw" the retrieval and distances again on the
    features as they are (the paper's L2 and L1 rows: see the module docstring).

    Returns:
      (numbers dict, ranks {metric: int [N]}, paired distances {name: [N]}, mismatched
      distances {name: [M]} or None).
    """
    n = len(v_f)
    query_ranks = {m: ranks(v_s, v_f, metric=m) for m in METRICS}
    # Per pair (for the histograms); their mean and std are `feature_distances`.
    paired = paired_distances(v_s, v_f)
    rows, partners = mismatched_pairs(speaker_ids, seed)
    mismatched = paired_distances(v_s[rows], v_f[partners]) if len(rows) else None
    numbers = {
        "num_queries": int(n),
        "gallery_size": int(n),
        "retrieval": {m: {str(k): v for k, v in recall_at_k(r, DEFAULT_KS).items()}
                      for m, r in query_ranks.items()},
        "chance": {str(k): v for k, v in chance_recall(n, DEFAULT_KS).items()},
        "distances": {name: [float(d.mean()), float(d.std())] for name, d in paired.items()},
        "distances_mismatched": None if mismatched is None else {
            name: [float(d.mean()), float(d.std())] for name, d in mismatched.items()},
        # 1-based: 1 means the own face comes first.
        "median_rank": {m: float(np.median(r)) + 1 for m, r in query_ranks.items()},
        "raw": {
            # Cosine is scale-free: its raw ranks are the normalised ones.
            "retrieval": {m: {str(k): v for k, v in recall_at_k(
                query_ranks[m] if m == "cos" else ranks(v_s, v_f, metric=m, normalize=False),
                DEFAULT_KS).items()} for m in METRICS},
            "distances": {name: [float(d.mean()), float(d.std())] for name, d in
                          paired_distances(v_s, v_f, normalize=False).items()},
        },
    }
    return numbers, query_ranks, paired, mismatched
