"""Voice-encoder training-step throughput: presets × precision × XLA, with achieved FLOP/s.

    python benchmarks/train_step.py [--presets=small,paper] [--steps=3] [--batch_size=8]
                                    [--json_out=train_step.json]

Times the stage-2 step (encoder forward/backward through the Speech2Face loss with frozen
teachers, Adam update) on a synthetic batch of 6 s spectrograms. FLOP/s = 3 × the model's
forward FLOPs (`voice_encoder.flops_per_example`) × examples/s (forward + backward ≈ 3×).
Also times a float32 matmul with TensorFlow (`--peak_size`; 0 skips it), the machine's practical
float32 peak, and prints each configuration's GFLOP/s as a fraction of it. Figures and the
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



def _rate(preset, precision, jit, batch_size, steps):
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
    start = time.perf_counter()
    for _ in range(steps):
        step(spectrogram, v_f).numpy()
    rate = steps * batch_size / (time.perf_counter() - start)
    return rate, rate * 3 * voice_encoder.flops_per_example(config)


def main(_):
    host = {**machine.describe(), "keras": keras.__version__}
    print(f"TensorFlow {host['tensorflow']}, Keras {host['keras']}, Python {host['python']}, "
          f"{host['cpu']}, {host['cpu_cores']} CPU cores, GPUs: {host['gpus'] or 'none'}")
    peak = machine.matmul_peak(FLAGS.peak_size) if FLAGS.peak_size else None
    if peak:
        print(f"float32 matmul peak ({FLAGS.peak_size}²): {peak / 1e9:.1f} GFLOP/s")
    print(f"\n  {'preset':<7} {'precision':<10} {'xla':<4} {'examples/s':>11} {'GFLOP/s':>9} "
          f"{'ratio':>7} {'of peak':>8}")
    rows = []
    for preset in FLAGS.presets:
        base = None
        for precision in FLAGS.precisions:
            for jit in FLAGS.jit:
                rate, flops = _rate(preset, precision, jit == "on", FLAGS.batch_size,
                                    FLAGS.steps)
                base = base or rate
                of_peak = f"{flops / peak:>7.0%}" if peak else f"{'-':>8}"
                print(f"  {preset:<7} {precision:<10} {jit:<4} {rate:>11.2f} {flops / 1e9:>9.1f} "
                      f"{rate / base:>6.2f}x {of_peak}", flush=True)
                rows.append({"preset": preset, "precision": precision, "jit_compile": jit == "on",
                             "examples_per_s": rate, "gflops_per_s": flops / 1e9,
                             "ratio_vs_float32_no_xla": rate / base,
                             "fraction_of_peak": flops / peak if peak else None})
    strategy.set_precision("float32")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": host, "batch_size": FLAGS.batch_size,
                       "matmul_peak_gflops_per_s": peak / 1e9 if peak else None,
                       "results": rows}, f, indent=2)
        print(f"wrote {FLAGS.json_out}")


if __name__ == "__main__":
    app.run(main)
