"""The fused training ops, and the spectrogram, against the paths they replace.

    python benchmarks/fused_ops.py [--repeats=5] [--calls=20] [--json=fused_ops.json]

Four rows, each our path beside the naive one on the same inputs, in one process:

1. **Batch norm**: forward and backward of the `toy` voice encoder (batch 8, 6 s spectrograms,
   training mode) with `voice_encoder.BatchNorm` (one fused op each way) against the same
   model with Keras's element-wise batch norm.
2. **Adam**: one update of the toy face decoder's 12.9 M weights (`small` preset) and of the
   toy encoder's 3.3 M with `losses.Adam` (one `ResourceApplyAdam` per variable) against
   `keras.optimizers.Adam` with the same settings.
3. **Texture target**: the face decoder's texture target (each true face warped from its
   landmarks to the mean ones, batch 16 at 64×64) with the mean landmarks shared by the batch
   (one spline solved for all) against one spline per example.
4. **Spectrogram**: `audio.spectrogram` of the encoder row's batch of waveforms (power law
   x·|x|^-0.7, real and imaginary parts stacked first and moved last in one transpose) against
   the same STFT compressed as sgn(x)·exp(0.3·log|x|) with selects keeping 0 exact, the two
   parts stacked along a new last axis.

Each path runs `--calls` times inside one `tf.function` call per round; the fastest of
`--repeats` interleaved rounds is kept (shared machines). Figures: docs/performance.md.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face import audio, losses  # noqa: E402
from speech2face.models import face_decoder, landmarks, voice_encoder, warp  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py)

flags.DEFINE_integer("repeats", 5, "Interleaved rounds of every path; the fastest is kept.")
flags.DEFINE_integer("calls", 20, "Calls of a path per round (inside one tf.function).")
flags.DEFINE_integer("encoder_batch", 8, "Batch of the encoder and spectrogram rows (the toy "
                     "experiment's 8).")
flags.DEFINE_integer("frames", 598, "Spectrogram frames of the encoder and spectrogram rows "
                     "(6 s: 598).")
flags.DEFINE_integer("warp_batch", 16, "Batch of the texture-target row (toy decoder: 16).")
flags.DEFINE_integer("image_size", 64, "Side of the texture target (small preset: 64).")
flags.DEFINE_string("json", None, "Also write the figures here as JSON.")
flags.DEFINE_alias("json_out", "json")
FLAGS = flags.FLAGS


class _KerasBatchNorm(voice_encoder.BatchNorm):
    """The encoder's batch norm on Keras's own element-wise path (the naive row)."""

    def _fused_applies(self, inputs, training, mask):
        return False


def _repeated(fn, calls):
    """A tf.function running `fn()` `calls` times; returns a scalar so it cannot be pruned."""

    @tf.function
    def run():
        total = tf.constant(0.0)
        for _ in tf.range(calls):
            total += fn()
        return total

    return run


def _encoder_paths(batch, frames):
    spectrogram = tf.constant(np.random.default_rng(0).standard_normal(
        (batch, frames, 257, 2)).astype(np.float32))
    paths = {}
    for name, norm in (("fused", voice_encoder.BatchNorm), ("keras", _KerasBatchNorm)):
        original, voice_encoder.BatchNorm = voice_encoder.BatchNorm, norm
        try:
            keras.utils.set_random_seed(0)
            model = voice_encoder.build_voice_encoder(voice_encoder.encoder_config("toy"))
        finally:
            voice_encoder.BatchNorm = original

        def step(model=model):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(spectrogram, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            return loss + 0.0 * tf.add_n([tf.reduce_sum(g) for g in grads])

        paths[name] = step
    return paths


def _adam_paths(shapes):
    rng = np.random.default_rng(0)
    grads = [tf.constant(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    paths = {}
    for name, make in (("fused", lambda: losses.paper_optimizer(1e-3)),
                       ("keras", lambda: keras.optimizers.Adam(1e-3, beta_1=0.5, beta_2=0.999,
                                                               epsilon=1e-4))):
        variables = [keras.Variable(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        optimizer = make()
        optimizer.build(variables)

        def step(optimizer=optimizer, variables=variables):
            optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(0.0)

        paths[name] = step
    return paths


def _warp_paths(batch, size):
    rng = np.random.default_rng(0)
    mean = landmarks.template_landmarks()
    faces = tf.constant(rng.random((batch, size, size, 3), dtype=np.float32))
    true = tf.constant(mean[None] + 0.01 * rng.standard_normal((batch, 68, 2)).astype(np.float32))
    shared, per_example = tf.constant(mean), tf.constant(np.broadcast_to(mean, (batch, 68, 2)))
    return {name: (lambda to=to: tf.reduce_sum(warp.warp_image(faces, true, to)))
            for name, to in (("shared", shared), ("per_example", per_example))}


def _naive_spectrogram(waveform):
    """The spectrogram as it was computed before: selects around sgn·exp(0.3·log|x|), and the
    parts stacked along a new last axis (an element-wise interleave on a CPU)."""
    stft = tf.signal.stft(waveform, frame_length=audio.WINDOW_LENGTH,
                          frame_step=audio.HOP_LENGTH, fft_length=audio.FFT_LENGTH,
                          window_fn=tf.signal.hann_window, pad_end=False)

    def power_law(x):
        nonzero = tf.abs(x) > 0
        safe = tf.where(nonzero, tf.abs(x), tf.ones_like(x))
        return tf.where(nonzero, tf.sign(x) * tf.exp(audio.POWER * tf.math.log(safe)),
                        tf.zeros_like(x))

    return tf.stack([power_law(tf.math.real(stft)), power_law(tf.math.imag(stft))], axis=-1)


def _spectrogram_paths(batch, frames):
    samples = audio.WINDOW_LENGTH + (frames - 1) * audio.HOP_LENGTH
    waveform = tf.constant(np.random.default_rng(0).uniform(
        -0.5, 0.5, (batch, samples)).astype(np.float32))
    return {name: (lambda fn=fn: tf.reduce_sum(fn(waveform)))
            for name, fn in (("ours", audio.spectrogram), ("naive", _naive_spectrogram))}


def _shapes(model):
    return [tuple(v.shape) for v in model.trainable_variables]


def main(_):
    logging.set_verbosity(logging.ERROR)  # not TensorFlow's note on the eight functions traced
    host = machine.describe()
    print(f"TensorFlow {host['tensorflow']}, Python {host['python']}, {host['cpu']}, "
          f"{host['cpu_cores']} CPU cores, GPUs: {host['gpus'] or 'none'}")
    decoder = face_decoder.FaceDecoder(face_decoder.decoder_config("small"),
                                       mean_landmarks=landmarks.template_landmarks())
    decoder(tf.zeros([1, face_decoder.FEATURE_DIM]))
    encoder = voice_encoder.build_voice_encoder(voice_encoder.encoder_config("toy"))
    rows = {
        "batch_norm_toy_encoder_fwd_bwd": ("fused", "keras", _encoder_paths(
            FLAGS.encoder_batch, FLAGS.frames)),
        "adam_toy_decoder": ("fused", "keras", _adam_paths(_shapes(decoder))),
        "adam_toy_encoder": ("fused", "keras", _adam_paths(_shapes(encoder))),
        "texture_target_warp": ("shared", "per_example", _warp_paths(FLAGS.warp_batch,
                                                                     FLAGS.image_size)),
        "spectrogram_encoder_batch": ("ours", "naive", _spectrogram_paths(
            FLAGS.encoder_batch, FLAGS.frames)),
    }
    runs = {(row, name): _repeated(fn, FLAGS.calls)
            for row, (_, _, paths) in rows.items() for name, fn in paths.items()}
    for run in runs.values():
        run().numpy()  # trace and warm up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(FLAGS.repeats):
        for key, run in runs.items():
            start = time.perf_counter()
            run().numpy()
            best[key] = min(best[key], (time.perf_counter() - start) / FLAGS.calls)
    print(f"\n  {'what':<32} {'ours':>12} {'naive':>12} {'ms ours':>9} {'ms naive':>9} "
          f"{'speed-up':>9}")
    results = {}
    for row, (ours, naive, _) in rows.items():
        ms_ours, ms_naive = 1e3 * best[(row, ours)], 1e3 * best[(row, naive)]
        print(f"  {row:<32} {ours:>12} {naive:>12} {ms_ours:>9.1f} {ms_naive:>9.1f} "
              f"{ms_naive / ms_ours:>8.2f}x", flush=True)
        results[row] = {"ours": ours, "naive": naive, "ms_ours": ms_ours, "ms_naive": ms_naive,
                        "speedup": ms_naive / ms_ours}
    if FLAGS.json:
        with open(FLAGS.json, "w", encoding="utf-8") as f:
            json.dump({"machine": host, "calls": FLAGS.calls, "repeats": FLAGS.repeats,
                       "encoder_batch": FLAGS.encoder_batch, "frames": FLAGS.frames,
                       "warp_batch": FLAGS.warp_batch, "image_size": FLAGS.image_size,
                       "results": results}, f, indent=2)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    app.run(main)
