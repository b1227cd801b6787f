"""Voice-encoder training-step throughput: presets × precision × XLA, with achieved FLOP/s.

    python benchmarks/train_step.py [--presets=small,paper] [--steps=3] [--batch_size=8]

Times the stage-2 step (encoder forward/backward through the Speech2Face loss with frozen
teachers, Adam update) on a synthetic batch of 6 s spectrograms. FLOP/s = 3 × the model's
forward FLOPs (`voice_encoder.flops_per_example`) × examples/s (forward + backward ≈ 3×).
SPEC §10 measured the paper preset at 0.29 examples/s (fp32) and 0.63 (bf16, AMX) on 2 cores.
"""

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

flags.DEFINE_list("presets", ["small", "paper"], "Encoder presets to time.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions to time.")
flags.DEFINE_list("jit", ["off", "on"], "XLA settings to time.")
flags.DEFINE_integer("steps", 3, "Timed steps per configuration (after 1 warm-up step).")
flags.DEFINE_integer("batch_size", 8, "Global batch (paper: 8).")
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
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"\n  {'preset':<7} {'precision':<10} {'xla':<4} {'examples/s':>11} {'GFLOP/s':>9} "
          f"{'ratio':>7}")
    for preset in FLAGS.presets:
        base = None
        for precision in FLAGS.precisions:
            for jit in FLAGS.jit:
                rate, flops = _rate(preset, precision, jit == "on", FLAGS.batch_size,
                                    FLAGS.steps)
                base = base or rate
                print(f"  {preset:<7} {precision:<10} {jit:<4} {rate:>11.2f} {flops / 1e9:>9.1f} "
                      f"{rate / base:>6.2f}x", flush=True)
    strategy.set_precision("float32")


if __name__ == "__main__":
    app.run(main)
