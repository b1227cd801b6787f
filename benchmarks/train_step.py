"""Voice-encoder training-step throughput: presets × precision × XLA, with achieved FLOP/s.

    python benchmarks/train_step.py [--presets=small,paper] [--steps=3] [--batch_size=8]
                                    [--json_out=train_step.json]

Times the stage-2 step (encoder forward/backward through the Speech2Face loss with frozen
teachers, Adam update) on a synthetic batch of 6 s spectrograms. FLOP/s = 3 × the model's
forward FLOPs (`voice_encoder.flops_per_example`) × examples/s (forward + backward ≈ 3×).
Also times a float32 matmul with TensorFlow (`--peak_size`; 0 skips it), the machine's practical
float32 peak, and prints each configuration's GFLOP/s as a fraction of it. A shared or
throttled machine changes speed from one second to the next (one 2-core VM's 4096² matmul ran
at 185-271 GFLOP/s within two minutes), so the matmul is timed again after every timed step,
and the share is the median step against the median matmul of the run; the fastest step is
printed beside it. Figures and the
machine they came from: docs/performance.md.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face import losses  # noqa: E402
from speech2face.models import voice_encoder  # noqa: E402
from speech2face.training import strategy  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_list("presets", ["small", "paper"], "Encoder presets to time.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions to time.")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings to time.")
flags.DEFINE_integer("steps", 3, "Timed steps per configuration (after 1 warm-up step).")
flags.DEFINE_integer("batch_size", 8, "Global batch (paper: 8).")
flags.DEFINE_integer("peak_size", 4096, "Size n of the n×n float32 matmul that measures the "
                     "peak; 0 skips it.")
flags.DEFINE_string("json_out", None, "Also write the figures here as JSON.")
FLAGS = flags.FLAGS



def _rate(preset, precision, jit, batch_size, steps, between=None):
    strategy.set_precision(precision)
    keras.utils.set_random_seed(0)
    config = voice_encoder.encoder_config(preset)
    model = voice_encoder.build_voice_encoder(config)
    f_dec = keras.layers.Dense(1000, dtype="float32")
    fc8 = keras.layers.Dense(2622, dtype="float32")
    f_dec.build((None, 4096))
    fc8.build((None, 4096))
    optimizer = losses.paper_optimizer()
    rng = np.random.default_rng(0)
    spectrogram = tf.constant(rng.standard_normal((batch_size, 598, 257, 2)).astype(np.float32))
    v_f = tf.constant(rng.random((batch_size, 4096), dtype=np.float32))

    @tf.function(jit_compile=jit)
    def step(x, v_f):
        with tf.GradientTape() as tape:
            v_s = model(x, training=True)
            loss = tf.reduce_mean(losses.speech2face_loss(v_f, v_s, f_dec, fc8)["total"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step(spectrogram, v_f).numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(spectrogram, v_f).numpy()
        times.append(time.perf_counter() - start)
        if between:
            between()
    flops = 3 * voice_encoder.flops_per_example(config)
    median, best = batch_size / float(np.median(times)), batch_size / min(times)
    return median, best, median * flops


def main(_):
    host = {**machine.describe(), "keras": keras.__version__}
    print(f"TensorFlow {host['tensorflow']}, Keras {host['keras']}, Python {host['python']}, "
          f"{host['cpu']}, {host['cpu_cores']} CPU cores, GPUs: {host['gpus'] or 'none'}")
    peaks = []

    def measure_peak(seconds=1.0):
        if FLAGS.peak_size:
            peaks.append(machine.matmul_peak(FLAGS.peak_size, seconds=seconds))

    measure_peak(3.0)
    if peaks:
        print(f"float32 matmul ({FLAGS.peak_size}², timed again after every step), first: "
              f"{peaks[0] / 1e9:.1f} GFLOP/s")
    print(f"\n  {'preset':<7} {'precision':<10} {'xla':<4} {'examples/s':>11} {'(best)':>8} "
          f"{'GFLOP/s':>9} {'ratio':>7} {'of peak':>8}")
    rows = []
    for preset in FLAGS.presets:
        base = None
        for precision in FLAGS.precisions:
            for jit in FLAGS.jit:
                rate, best, flops = _rate(preset, precision, jit == "on", FLAGS.batch_size,
                                          FLAGS.steps, between=measure_peak)
                base = base or rate
                peak = float(np.median(peaks)) if peaks else None
                of_peak = f"{flops / peak:>7.0%}" if peak else f"{'-':>8}"
                print(f"  {preset:<7} {precision:<10} {jit:<4} {rate:>11.2f} {best:>8.2f} "
                      f"{flops / 1e9:>9.1f} {rate / base:>6.2f}x {of_peak}", flush=True)
                rows.append({"preset": preset, "precision": precision, "jit_compile": jit == "on",
                             "examples_per_s": rate, "examples_per_s_best": best,
                             "gflops_per_s": flops / 1e9,
                             "ratio_vs_float32_no_xla": rate / base,
                             "fraction_of_peak": flops / peak if peak else None})
    strategy.set_precision("float32")
    peak = float(np.median(peaks)) if peaks else None
    if peaks:
        print(f"float32 matmul over the run: median {peak / 1e9:.1f} GFLOP/s, "
              f"{min(peaks) / 1e9:.1f}-{max(peaks) / 1e9:.1f} in {len(peaks)} timings; the "
              "shares are against the median")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": host, "batch_size": FLAGS.batch_size,
                       "matmul_peak_gflops_per_s": peak / 1e9 if peak else None,  # median
                       "matmul_gflops_per_s_timings": [p / 1e9 for p in peaks],
                       "results": rows}, f, indent=2)
        print(f"wrote {FLAGS.json_out}")


if __name__ == "__main__":
    app.run(main)
