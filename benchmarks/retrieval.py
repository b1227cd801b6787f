"""Retrieval recall at the paper's scale: our vectorised ranks beside a per-query NumPy loop.

    python benchmarks/retrieval.py [--num_queries=5000] [--dim=4096] [--naive_queries=50]

The paper ranks a gallery of 5,000 face features (4096-D) for each of 5,000 speech queries, with
cosine, L2 and L1 distances on L2-normalised rows (docs/evaluation.md). For each metric this prints
the time of `metrics.ranks` (all of `retrieval_recall`'s work) on the full problem, for L1 with the
numba kernel and with the NumPy fallback, and of the naive path (a Python loop over queries, each
computing its distances to every gallery row with NumPy) on `--naive_queries` queries, extrapolated
linearly to all of them, and checks that both give the same ranks on those queries.
Features are synthetic: ReLU'd Gaussians (like VGG-Face fc7) with noisy copies as queries, so
that ranks are neither all 0 nor random. On a shared machine the load average is printed too.
"""

import os
import time

from absl import app, flags
import numpy as np

from speech2face import l1_distance, metrics

flags.DEFINE_integer("num_queries", 5000, "Queries, and gallery rows (the paper's 5,000).")
flags.DEFINE_integer("dim", 4096, "Feature size (fc7: 4096).")
flags.DEFINE_integer("naive_queries", 50, "Queries timed on the naive path, then extrapolated.")
flags.DEFINE_list("metrics", list(metrics.METRICS), "Metrics to time.")
flags.DEFINE_integer("num_threads", 0, "Threads of the L1 kernel; 0 = every usable CPU.")
flags.DEFINE_bool("l1_numpy", True, "Also time the NumPy L1 kernel (the fallback without numba).")
FLAGS = flags.FLAGS


def _features(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    faces = np.maximum(rng.standard_normal((n, dim), dtype=np.float32), 0.0)
    # Independent noise in 4096-D hides little: it takes this much (an angle of ≈ 87°) before
    # the true face stops being first for most queries of a 5,000-face gallery.
    voices = faces + 12.0 * rng.standard_normal((n, dim), dtype=np.float32)
    return voices, faces


def _naive_ranks(queries, gallery, metric):
    """One query at a time: distances to all gallery rows, then count the strictly closer.

    Both inputs are float64 and already L2-normalised, so only the per-query work is timed.
    """
    out = []
    for i, row in enumerate(queries):
        if metric == "cos":
            dist = 1.0 - gallery @ row
        elif metric == "l2":
            dist = np.linalg.norm(gallery - row, axis=1)
        else:
            dist = np.abs(gallery - row).sum(axis=1)
        out.append(int(np.sum(dist < dist[i])))
    return np.array(out)


def _unit_rows(x):
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _paths():
    """(label, metric, L1 backend) rows of the table."""
    rows = []
    for metric in FLAGS.metrics:
        if metric != "l1":
            rows.append((metric, metric, None))
            continue
        if l1_distance.numba is not None:
            rows.append(("l1 numba", "l1", "numba"))
        if FLAGS.l1_numpy or l1_distance.numba is None:
            rows.append(("l1 NumPy", "l1", "numpy"))
    return rows


def main(_):
    n, dim = FLAGS.num_queries, FLAGS.dim
    threads = FLAGS.num_threads or None
    voices, faces = _features(n, dim)
    print(
        f"{n} queries x {n} gallery rows x {dim}-D, float32 input; {os.cpu_count()} CPU cores "
        f"(load average {os.getloadavg()[0]:.1f} at start); naive path timed on "
        f"{FLAGS.naive_queries} queries and extrapolated"
    )
    print(
        f"  {'metric':<9} {'ours (s)':>9} {'naive (s)':>10} {'speed-up':>9} "
        f"{'R@1':>6} {'R@10':>6}  ranks agree"
    )
    gallery = _unit_rows(faces)
    naive_cache = {}
    for label, metric, backend in _paths():
        if backend:
            # The module switch, for this comparison only: library users get "auto".
            l1_distance.BACKEND = backend
            metrics.ranks(voices[:2], faces[:2], metric)  # numba: load or compile the kernel
        start = time.perf_counter()
        ours = metrics.ranks(voices, faces, metric, num_threads=threads)
        ours_s = time.perf_counter() - start
        l1_distance.BACKEND = "auto"
        recall = metrics.recall_at_k(ours, (1, 10))

        if metric not in naive_cache:
            subset = FLAGS.naive_queries
            start = time.perf_counter()
            naive = _naive_ranks(_unit_rows(voices[:subset]), gallery, metric)
            naive_cache[metric] = naive, (time.perf_counter() - start) * n / subset
        naive, naive_s = naive_cache[metric]
        agree = np.mean(naive == ours[: len(naive)])
        print(
            f"  {label:<9} {ours_s:>9.1f} {naive_s:>10.1f} {naive_s / ours_s:>8.1f}x "
            f"{recall[1]:>6.2f} {recall[10]:>6.2f}  {100 * agree:.0f} %",
            flush=True,
        )
    chance = metrics.chance_recall(n, (1, 10))
    print(f"  chance: R@1 {chance[1]:.2f}, R@10 {chance[10]:.2f} (%)")
    print(f"  load average {os.getloadavg()[0]:.1f} at the end (other work slows every row)")


if __name__ == "__main__":
    app.run(main)
