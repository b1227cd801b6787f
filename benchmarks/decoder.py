"""Face-decoder training-step throughput: small and paper presets, float32 vs mixed bfloat16.

    python benchmarks/decoder.py [--steps=10] [--batch_size=16] [--presets=small,paper]

Times the stage-1 training step exactly as train.py runs it (`DecoderTask.compute_losses`,
gradients, Adam) on a synthetic batch, with random VGG-Face weights for the perceptual term
(speed does not depend on the weights' values). Prints examples/s with the ratio to the first
row of each preset.
"""

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face.models import landmarks, vggface  # noqa: E402
from speech2face.training import decoder_task, strategy  # noqa: E402

flags.DEFINE_integer("steps", 10, "Timed steps per configuration (after 2 warm-up steps).")
flags.DEFINE_integer("batch_size", 16, "Batch size of the small preset.")
flags.DEFINE_integer("paper_batch_size", 4, "Batch size of the paper preset.")
flags.DEFINE_list("presets", ["small", "paper"], "Presets to time.")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Precisions to time.")
FLAGS = flags.FLAGS


def _time_step(preset, precision, perceptual_layer, weights, batch_size, steps):
    strategy.set_precision(precision)
    keras.utils.set_random_seed(0)
    task = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset=preset, perceptual_layer=perceptual_layer, vggface_weights=weights,
        perceptual_weight=0.0 if perceptual_layer == "none" else 1.0))
    size = task.decoder_config.image_size
    task.mean_landmarks = landmarks.template_landmarks()
    task.mean_face = np.full((size, size, 3), 0.5, np.float32)
    model = task.build_model()
    optimizer = task.build_optimizer()
    rng = np.random.default_rng(0)
    batch = {
        "face_feature": tf.constant(rng.random((batch_size, 4096), dtype=np.float32)),
        "face_image": tf.constant(rng.random((batch_size, size, size, 3), dtype=np.float32)),
        "landmarks": tf.constant(task.mean_landmarks[None] + 0.01 * rng.standard_normal(
            (batch_size, 68, 2)).astype(np.float32)),
    }

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(task.compute_losses(model, batch, training=True)["total"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(2):
        step(batch).numpy()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch).numpy()
    return steps * batch_size / (time.perf_counter() - start)


def main(_):
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = vggface.random_vggface_weights(os.path.join(tmp, "vgg.h5"), seed=0)
        print(f"\n  {'preset':<7} {'perceptual':<11} {'precision':<10} {'batch':>5} "
              f"{'examples/s':>11} {'ratio':>7}")
        for preset in FLAGS.presets:
            batch = FLAGS.batch_size if preset == "small" else FLAGS.paper_batch_size
            layers = ["pool3", "none"] if preset == "small" else ["fc7", "none"]
            base = None
            for layer in layers:
                for precision in FLAGS.precisions:
                    rate = _time_step(preset, precision, layer, weights, batch, FLAGS.steps)
                    base = base or rate
                    print(f"  {preset:<7} {layer:<11} {precision:<10} {batch:>5} {rate:>11.2f} "
                          f"{rate / base:>6.2f}x", flush=True)
        strategy.set_precision("float32")


if __name__ == "__main__":
    app.run(main)
