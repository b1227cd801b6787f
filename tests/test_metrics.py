"""Feature distances and retrieval recall (docs/evaluation.md)."""

import numpy as np
import pytest

from speech2face import l1_distance, metrics


def _brute_force_ranks(queries, gallery, metric):
    """Double loop over L2-normalised float64 rows: the definition, written out."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        dist = []
        for j in range(len(g)):
            if metric == "cos":
                dist.append(1.0 - float(q[i] @ g[j]))
            elif metric == "l2":
                dist.append(float(np.sqrt(np.sum((q[i] - g[j]) ** 2))))
            else:
                dist.append(float(np.sum(np.abs(q[i] - g[j]))))
        out.append(sum(d < dist[i] for d in dist))
    return np.array(out)


def _noisy_pairs(n, d, noise, distractors=0, seed=0):
    rng = np.random.default_rng(seed)
    gallery = rng.standard_normal((n + distractors, d))
    queries = gallery[:n] + noise * rng.standard_normal((n, d))
    return queries, gallery


def test_feature_distances_orthogonal_and_identical():
    eye = np.eye(3, 5)
    other = np.roll(eye, 1, axis=1)
    result = metrics.feature_distances(eye, other)
    np.testing.assert_allclose(result["cos_deg"], (90.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(result["l2"], (np.sqrt(2.0), 0.0), atol=1e-12)
    np.testing.assert_allclose(result["l1"], (2.0, 0.0), atol=1e-12)
    same = metrics.feature_distances(eye, eye)
    for name in ("cos_deg", "l2", "l1"):
        np.testing.assert_allclose(same[name], (0.0, 0.0), atol=1e-6)
    assert all(isinstance(v, float) for pair in result.values() for v in pair)


def test_feature_distances_hand_made_mean_and_std():
    # Row 0: 0° apart; row 1: 90° apart; row 2: opposite (180°, L2 2, L1 2).
    pred = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    true = np.array([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]])
    result = metrics.feature_distances(pred, true)
    np.testing.assert_allclose(result["cos_deg"][0], 90.0)
    np.testing.assert_allclose(result["cos_deg"][1], np.std([0.0, 90.0, 180.0]))
    np.testing.assert_allclose(result["l2"][0], (0.0 + np.sqrt(2.0) + 2.0) / 3)
    np.testing.assert_allclose(result["l1"][0], (0.0 + 2.0 + 2.0) / 3)


def test_feature_distances_are_scale_invariant():
    rng = np.random.default_rng(0)
    pred, true = rng.standard_normal((2, 20, 64))
    scaled = metrics.feature_distances(
        pred * rng.uniform(0.01, 100.0, (20, 1)), true * rng.uniform(0.01, 100.0, (20, 1))
    )
    for name, value in metrics.feature_distances(pred, true).items():
        np.testing.assert_allclose(scaled[name], value, rtol=1e-10)


def test_feature_distances_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.feature_distances(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.feature_distances(np.full((2, 3), np.nan), np.ones((2, 3)))


@pytest.fixture(params=["numba", "numpy"])
def l1_backend(request, monkeypatch):
    """Runs a test once per L1 kernel."""
    if request.param == "numba" and l1_distance.numba is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(l1_distance, "BACKEND", request.param)
    return request.param


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_ranks_match_brute_force(metric, l1_backend):
    queries, gallery = _noisy_pairs(40, 24, noise=1.2, distractors=9, seed=1)
    rng = np.random.default_rng(2)
    # Row scales must not matter: the protocol normalises rows.
    queries = queries * rng.uniform(0.1, 10.0, (40, 1))
    expected = _brute_force_ranks(queries, gallery, metric)
    got = metrics.ranks(queries, gallery, metric)
    np.testing.assert_array_equal(got, expected)
    assert 0 < np.mean(expected == 0) < 1  # neither trivial nor hopeless
    recall = metrics.retrieval_recall(queries, gallery, ks=(1, 3, 49), metric=metric)
    assert recall == {k: 100.0 * np.mean(expected < k) for k in (1, 3, 49)}


def test_l1_kernel_blocks_and_threads(l1_backend):
    # Larger than one tile or block in every direction, and a dimension not a multiple of the
    # dimension group or the SIMD width, so edges and the thread pools are exercised.
    queries, gallery = _noisy_pairs(70, 37, noise=1.0, distractors=1100, seed=3)
    got = metrics.distance_matrix(queries, gallery, "l1", num_threads=2)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.abs(q[:, None] - g[None]).sum(-1), atol=1e-5)
    np.testing.assert_array_equal(
        metrics.ranks(queries, gallery, "l1", num_threads=2),
        metrics.ranks(queries, gallery, "l1", num_threads=1),
    )


def test_l1_duplicates_tie_wherever_they_sit(l1_backend):
    # Copies of the true row in other columns (other tiles, other alignments) must tie exactly.
    _, gallery = _noisy_pairs(30, 37, noise=0.0, distractors=0, seed=7)
    queries = gallery[:3] + 0.3 * np.random.default_rng(8).standard_normal((3, 37))
    np.testing.assert_array_equal(metrics.ranks(queries, gallery, "l1"), [0, 0, 0])
    gallery = np.concatenate([gallery, np.repeat(gallery[:3], 7, axis=0)])
    np.testing.assert_array_equal(metrics.ranks(queries, gallery, "l1"), [0, 0, 0])


def _reference_ranks(queries, gallery, metric, normalize=True):
    """One pair at a time in float64, with the documented tie tolerances (1e-12 relative)."""
    q, g = queries.astype(np.float64), gallery.astype(np.float64)
    if normalize or metric == "cos":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    out = []
    for i, row in enumerate(q):
        if metric == "cos":
            dist, tol = 1.0 - g @ row, 1e-12
        elif metric == "l2":
            dist = ((g - row) ** 2).sum(axis=1)
            tol = 1e-12 * (row @ row + g[i] @ g[i])
        else:
            dist = np.abs(g - row).sum(axis=1)
            tol = 1e-12 * (np.abs(row).sum() + np.abs(g[i]).sum())
        out.append(int(np.sum(dist < dist[i] - tol)))
    return np.array(out)


def _near_ties(seed=9, n=40, d=300):
    """Queries and a gallery where float32 cannot order the rows but float64 can.

    For the first 12 queries the gallery also holds copies of the own row moved by ~1e-9
    (relative: far above the 1e-12 tie tolerance, far below float32's 6e-8), an exact copy
    and a copy scaled by 3 (both ties on normalised rows); the rest are distractors.
    """
    rng = np.random.default_rng(seed)
    gallery = np.maximum(rng.standard_normal((n + 20, d)), 0.0) + 0.1
    queries = gallery[:n] * rng.uniform(0.5, 2.0, (n, 1)) + 0.4 * rng.standard_normal((n, d))
    extra = [gallery[i] + 1e-9 * rng.standard_normal((6, d)) for i in range(12)]
    extra += [gallery[:12], 3.0 * gallery[:12]]
    return queries, np.concatenate([gallery] + extra)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("metric", metrics.METRICS)
def test_ranks_exact_on_near_ties(metric, normalize, l1_backend):
    queries, gallery = _near_ties()
    expected = _reference_ranks(queries, gallery, metric, normalize)
    got = metrics.ranks(queries, gallery, metric, normalize=normalize, num_threads=2)
    np.testing.assert_array_equal(got, expected)
    assert 0 < np.mean(expected == 0) < 1 and expected[:12].max() > 0
    # The case is a real test: distances from float32 rows would misplace some near ties.
    q32, g32 = queries.astype(np.float32), gallery.astype(np.float32)
    assert not np.array_equal(_reference_ranks(q32, g32, metric, normalize), expected)


def test_l1_keys_within_their_bound(l1_backend):
    queries, gallery = _noisy_pairs(37, 300, noise=1.0, distractors=40, seed=10)
    q32, g32 = np.abs(queries).astype(np.float32), gallery.astype(np.float32)
    prepared = l1_distance.L1Gallery(g32, 2)
    got = q32.sum(axis=1, dtype=np.float64)[:, None] - prepared.keys(q32)
    q64, g64 = q32.astype(np.float64), g32.astype(np.float64)
    exact = np.abs(q64[:, None] - g64[None]).sum(-1)
    bound = prepared.rel_error * (np.abs(q64).sum(1)[:, None] + np.abs(g64).sum(1)[None, :])
    assert np.all(np.abs(got - exact) <= bound)
    assert np.abs(got - exact).max() > 0  # float32 sums: not exact, so the bound is needed


def test_distance_matrix_values():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[1.0, 1.0], [-3.0, 0.0]])
    h = np.sqrt(0.5)
    np.testing.assert_allclose(metrics.distance_matrix(a, b, "cos"), [[1 - h, 2.0], [1 - h, 1.0]])
    np.testing.assert_allclose(
        metrics.distance_matrix(a, b, "l2"),
        [[np.hypot(1 - h, h), 2.0], [np.hypot(h, 1 - h), np.sqrt(2.0)]],
    )
    np.testing.assert_allclose(
        metrics.distance_matrix(a, b, "l1"), [[1.0, 2.0], [1.0, 2.0]], atol=1e-6
    )
    raw = metrics.distance_matrix(a, b, "l2", normalize=False)
    np.testing.assert_allclose(raw, [[1.0, 4.0], [np.sqrt(2.0), np.sqrt(13.0)]])


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_ties_favour_the_query(metric, l1_backend):
    queries = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    gallery = np.array(
        [
            [1.0, 1.0, 0.0],  # query 0's own face, 45° away
            [0.0, 2.0, 1.0],  # query 1's own face
            [0.1, 0.0, 1.0],  # query 2's own face
            [0.0, 2.0, 1.0],  # exact copies of query 1's own face
            [0.0, 4.0, 2.0],
            [1.0, 0.0, 1.0],  # a different row exactly as far from query 0 as its own face
        ]
    )
    # Rows at the same distance as the true one are ties, not closer: every rank is 0.
    np.testing.assert_array_equal(metrics.ranks(queries, gallery, metric), [0, 0, 0])
    closer = gallery.copy()
    closer[3] = [0.0, 1.0, 0.0]  # now strictly closer to query 1 than its own face
    closer[5] = [1.0, 0.1, 0.0]  # and this one strictly closer to query 0
    np.testing.assert_array_equal(metrics.ranks(queries, closer, metric), [1, 1, 0])


def test_perfect_queries_recall_everything():
    _, gallery = _noisy_pairs(50, 16, noise=0.0, seed=4)
    for metric in metrics.METRICS:
        recall = metrics.retrieval_recall(gallery * 3.0, gallery, metric=metric)
        assert recall == {1: 100.0, 2: 100.0, 5: 100.0, 10: 100.0}


def test_cos_and_l2_agree_on_normalised_rows():
    queries, gallery = _noisy_pairs(60, 32, noise=1.5, seed=5)
    np.testing.assert_array_equal(
        metrics.ranks(queries, gallery, "cos"), metrics.ranks(queries, gallery, "l2")
    )


def test_chance_recall():
    assert metrics.chance_recall(5000) == {1: 0.02, 2: 0.04, 5: 0.1, 10: 0.2}
    assert metrics.chance_recall(100, ks=(1, 10)) == {1: 1.0, 10: 10.0}
    assert metrics.chance_recall(4, ks=(1, 10)) == {1: 25.0, 10: 100.0}


def test_random_queries_sit_near_chance():
    rng = np.random.default_rng(6)
    queries, gallery = rng.standard_normal((2, 400, 8))
    recall = metrics.retrieval_recall(queries, gallery, ks=(10, 100))
    chance = metrics.chance_recall(400, ks=(10, 100))
    assert abs(recall[10] - chance[10]) < 3.0
    assert abs(recall[100] - chance[100]) < 7.0


def test_bad_arguments_are_clear_errors():
    queries, gallery = _noisy_pairs(5, 4, noise=0.1)
    with pytest.raises(ValueError, match="metric must be one of"):
        metrics.retrieval_recall(queries, gallery, metric="euclidean")
    with pytest.raises(ValueError, match="same feature size"):
        metrics.retrieval_recall(queries, gallery[:, :3])
    with pytest.raises(ValueError, match="gallery needs a row for every query"):
        metrics.retrieval_recall(queries, gallery[:4])
    with pytest.raises(ValueError, match=r"matrix \[rows, dim\]"):
        metrics.retrieval_recall(queries[0], gallery)
    with pytest.raises(ValueError, match="ks must be positive"):
        metrics.retrieval_recall(queries, gallery, ks=(0, 1))
    with pytest.raises(ValueError, match="NaN"):
        metrics.retrieval_recall(queries, np.full_like(gallery, np.inf))
    with pytest.raises(ValueError, match="gallery_size"):
        metrics.chance_recall(0)


def test_feature_metrics_reports_raw_features_beside_normalised():
    rng = np.random.default_rng(5)
    v_f = rng.normal(size=(20, 16))
    v_s = v_f * rng.uniform(0.1, 10.0, (20, 1)) + rng.normal(0, 1.5, (20, 16))  # unequal norms
    numbers, *_ = metrics.feature_metrics(v_s, v_f, [f"s{i}" for i in range(20)])
    raw = numbers["raw"]
    assert raw["retrieval"]["cos"] == numbers["retrieval"]["cos"]
    for metric in ("l1", "l2"):
        expected = metrics.recall_at_k(metrics.ranks(v_s, v_f, metric, normalize=False))
        assert raw["retrieval"][metric] == {str(k): v for k, v in expected.items()}
    l2 = np.linalg.norm(v_s - v_f, axis=1)
    np.testing.assert_allclose(raw["distances"]["l2"], [l2.mean(), l2.std()], rtol=1e-9)
    np.testing.assert_allclose(raw["distances"]["cos_deg"], numbers["distances"]["cos_deg"])
