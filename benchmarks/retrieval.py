"""Retrieval recall at the paper's scale: our vectorised ranks beside a per-query NumPy loop.

    python benchmarks/retrieval.py [--num_queries=5000] [--dim=4096] [--naive_queries=50]
                                   [--repeats=3] [--json=retrieval.json]

The paper ranks a gallery of 5,000 face features (4096-D) for each of 5,000 speech queries, with
cosine, L2 and L1 distances on L2-normalised rows (docs/evaluation.md). For each metric this prints
the time of `metrics.ranks` (all of `retrieval_recall`'s work) on the full problem, for L1 with the
numba kernel and with the NumPy fallback, and of the naive path (a Python loop over queries, each
computing its distances to every gallery row with NumPy) on `--naive_queries` queries, extrapolated
linearly to all of them, and checks that both give the same ranks on those queries. Then the
two ratios that matter: L1 against cosine, and cosine against L2 (on normalised rows both are one
matrix product). Features are synthetic: ReLU'd Gaussians (like VGG-Face fc7) with noisy copies
as queries, so that ranks are neither all 0 nor random. On a shared machine the load average is
printed too, and CPU seconds (all threads) beside wall seconds: on a shared machine they vary
far less. `--repeats` keeps the fastest of several interleaved rounds of every path.
"""

import json
import os
import time

from absl import app, flags
import machine
import numpy as np

from speech2face import l1_distance, metrics

flags.DEFINE_integer("num_queries", 5000, "Queries, and gallery rows (the paper's 5,000).")
flags.DEFINE_integer("dim", 4096, "Feature size (fc7: 4096).")
flags.DEFINE_integer("naive_queries", 50, "Queries timed on the naive path, then extrapolated.")
flags.DEFINE_list("metrics", list(metrics.METRICS), "Metrics to time.")
flags.DEFINE_integer("num_threads", 0, "Threads of the L1 kernel; 0 = every usable CPU.")
flags.DEFINE_bool("l1_numpy", True, "Also time the NumPy L1 kernel (the fallback without numba).")
flags.DEFINE_integer("repeats", 1, "Runs of each path; the fastest is reported (shared machines).")
flags.DEFINE_string("json", None, "Also write the figures here as JSON.")
flags.DEFINE_alias("json_out", "json")
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


def _time_path(metric, backend, voices, faces, threads):
    """(ranks, wall seconds, CPU seconds of every thread) of one `metrics.ranks` call."""
    if backend:
        # The module switch, for this comparison only: library users get "auto".
        l1_distance.BACKEND = backend
    try:
        metrics.ranks(voices[:2], faces[:2], metric)  # numba: load or compile the kernel
        wall, cpu = time.perf_counter(), time.process_time()
        ours = metrics.ranks(voices, faces, metric, num_threads=threads)
        return ours, time.perf_counter() - wall, time.process_time() - cpu
    finally:
        l1_distance.BACKEND = "auto"


def _ratios(seconds, prefix=""):
    """The two ratios the task is judged by, where both paths were timed."""
    out = {}
    if "l1" in seconds and "cos" in seconds:
        out[prefix + "ratio_l1_to_cos"] = seconds["l1"] / seconds["cos"]
    if "cos" in seconds and "l2" in seconds:
        out[prefix + "ratio_cos_to_l2"] = seconds["cos"] / seconds["l2"]
    return out


def main(_):
    n, dim = FLAGS.num_queries, FLAGS.dim
    threads = FLAGS.num_threads or None
    voices, faces = _features(n, dim)
    load_start = os.getloadavg()[0]
    print(
        f"{n} queries x {n} gallery rows x {dim}-D, float32 input; {machine.cpu_name()}, "
        f"{os.cpu_count()} CPU cores (load average {load_start:.1f} at start); fastest of "
        f"{FLAGS.repeats} interleaved rounds; naive path timed on {FLAGS.naive_queries} queries "
        "and extrapolated",
        flush=True,
    )
    # Rounds interleave the paths, in alternating order, so that a change in the machine's load
    # hits all of them alike.
    results, seconds, cpu_seconds = {}, {}, {}
    for round_index in range(max(1, FLAGS.repeats)):
        for label, metric, backend in _paths()[:: -1 if round_index % 2 else 1]:
            key = "l1_numpy" if backend == "numpy" else metric
            results[key], wall, cpu = _time_path(metric, backend, voices, faces, threads)
            seconds[key] = min(wall, seconds.get(key, wall))
            cpu_seconds[key] = min(cpu, cpu_seconds.get(key, cpu))

    gallery = _unit_rows(faces)
    naive_cache = {}
    print(
        f"  {'metric':<9} {'ours (s)':>9} {'CPU (s)':>8} {'naive (s)':>10} {'speed-up':>9} "
        f"{'R@1':>6} {'R@10':>6}  ranks agree"
    )
    for label, metric, backend in _paths():
        key = "l1_numpy" if backend == "numpy" else metric
        if metric not in naive_cache:
            subset = FLAGS.naive_queries
            start = time.perf_counter()
            naive = _naive_ranks(_unit_rows(voices[:subset]), gallery, metric)
            naive_cache[metric] = naive, (time.perf_counter() - start) * n / subset
        naive, naive_s = naive_cache[metric]
        ours = results[key]
        recall = metrics.recall_at_k(ours, (1, 10))
        agree = np.mean(naive == ours[: len(naive)])
        print(
            f"  {label:<9} {seconds[key]:>9.2f} {cpu_seconds[key]:>8.2f} {naive_s:>10.1f} "
            f"{naive_s / seconds[key]:>8.1f}x {recall[1]:>6.2f} {recall[10]:>6.2f}  "
            f"{100 * agree:.0f} %",
            flush=True,
        )
    chance = metrics.chance_recall(n, (1, 10))
    print(f"  chance: R@1 {chance[1]:.2f}, R@10 {chance[10]:.2f} (%)")
    ratios = {**_ratios(seconds), **_ratios(cpu_seconds, "cpu_")}
    print("  ratios: " + ", ".join(
        f"{name.replace('cpu_ratio_', 'CPU ').replace('ratio_', 'wall ').replace('_to_', ' / ')} "
        f"{value:.2f}" for name, value in ratios.items()))
    load_end = os.getloadavg()[0]
    print(f"  load average {load_end:.1f} at the end (other work slows every row)")
    if FLAGS.json:
        out = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            **ratios,
            "naive_seconds_extrapolated": {m: s for m, (_, s) in naive_cache.items()},
            "load_average": {"start": load_start, "end": load_end},
            "problem": {"queries": n, "gallery": n, "dim": dim, "repeats": FLAGS.repeats,
                        "naive_queries": FLAGS.naive_queries},
            "machine": {"cpu": machine.cpu_name(), "cpu_cores": os.cpu_count(),
                        "numpy": np.__version__},
        }
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"  wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
