r"""Trains a Speech2Face stage.

Stage 1, the face decoder (face feature -> canonical face):

    python train.py --stage=decoder --train_records='toy/train-*.tfrecord' \
        --eval_records='toy/test-*.tfrecord' --model_dir=runs/decoder [--vggface_weights=H5]

Stage 2, the voice encoder (speech -> face feature), the paper's training (the default stage):

    python train.py --train_records='toy/train-*.tfrecord' --eval_records='toy/test-*.tfrecord' \
        --model_dir=runs/encoder --decoder_dir=runs/decoder [--vggface_weights=H5]

A rerun with the same --model_dir resumes from its latest checkpoint; SIGTERM/SIGINT save one
before exiting. --helpfull lists every flag. When --vggface_weights is not given and the
records' directory has a dataset_info.json naming the weights it was built with (the toy world
does), those are used, and the log says so.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from speech2face import data  # noqa: E402
from speech2face.training import decoder_task, encoder_task, loop, strategy  # noqa: E402

_TRAIN = loop.TrainConfig(model_dir="", train_records="")
_DEC = decoder_task.DecoderTaskConfig()
_ENC = encoder_task.EncoderTaskConfig()

flags.DEFINE_enum("stage", "encoder", ["encoder", "decoder"],
                  "What to train: the voice encoder (stage 2, the paper's model) or the face "
                  "decoder (stage 1, needed first).")
flags.DEFINE_string("train_records", None, "Glob of training TFRecords.")
flags.DEFINE_string("eval_records", None, "Glob of held-out TFRecords (eval, images, numbers).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries, config and export.")
flags.DEFINE_string("vggface_weights", None, "rcmalli_vggface_tf_vgg16.h5 (or a toy world's).")
flags.DEFINE_integer("global_batch_size", None,
                     "Examples per step over all replicas (default: 8 for the encoder, as in the "
                     "paper; 16 for the decoder).")
flags.DEFINE_integer("train_steps", 2000, "Total training steps.")
flags.DEFINE_integer("steps_per_loop", _TRAIN.steps_per_loop, "Steps per tf.function call.")
flags.DEFINE_integer("checkpoint_every", _TRAIN.checkpoint_every, "Steps between checkpoints.")
flags.DEFINE_integer("summary_every", _TRAIN.summary_every, "Steps between scalar summaries.")
flags.DEFINE_integer("image_summary_every", _TRAIN.image_summary_every,
                     "Steps between image grids.")
flags.DEFINE_integer("eval_every", _TRAIN.eval_every, "Steps between evaluations.")
flags.DEFINE_integer("eval_batches", _TRAIN.eval_batches, "Batches per evaluation (0: all).")
flags.DEFINE_integer("seed", _TRAIN.seed, "Initialisation and input-order seed.")
flags.DEFINE_enum("strategy", "default", strategy.STRATEGIES, "tf.distribute strategy.")
flags.DEFINE_string("tpu", None, "TPU name/address for --strategy=tpu ('local' on a TPU VM).")
flags.DEFINE_enum("mixed_precision", "float32", strategy.PRECISIONS,
                  "Compute dtype: float32, or mixed bfloat16/float16 (float16 adds loss scaling).")
flags.DEFINE_bool("jit_compile", False, "Compile the training step with XLA.")
# Stage 1.
flags.DEFINE_enum("decoder_preset", _DEC.preset, ["paper", "small"],
                  "Face decoder size: paper (224x224 output) or small (64x64, CPU/toy world).")
flags.DEFINE_float("decoder_learning_rate", _DEC.learning_rate, "Stage-1 Adam learning rate.")
flags.DEFINE_float("landmark_weight", _DEC.landmark_weight, "Weight of the landmark MSE.")
flags.DEFINE_float("texture_weight", _DEC.texture_weight, "Weight of the texture L1.")
flags.DEFINE_float("perceptual_weight", _DEC.perceptual_weight,
                   "Weight of the perceptual term (VGG-Face features, rendered vs true face).")
flags.DEFINE_float("image_weight", _DEC.image_weight, "Weight of the rendered-image L1.")
flags.DEFINE_enum("perceptual_layer", None, list(decoder_task.PERCEPTUAL_LAYERS),
                  "VGG-Face layer of the perceptual term; default fc7 for paper, pool3 for small.")
# Stage 2.
flags.DEFINE_string("decoder_dir", None, "Stage-1 model_dir whose face decoder gives f_dec.")
flags.DEFINE_enum("encoder_preset", _ENC.preset, ["paper", "small"],
                  "Voice encoder size: paper (Table 1, ~165 M parameters) or small (CPU/toy).")
flags.DEFINE_float("learning_rate", _ENC.learning_rate, "Stage-2 initial learning rate.")
flags.DEFINE_float("lr_decay_rate", _ENC.decay_rate, "Staircase decay factor ...")
flags.DEFINE_integer("lr_decay_steps", _ENC.decay_steps, "... applied every this many steps.")
flags.DEFINE_float("lambda1", _ENC.lambda1, "Weight of the normalised-feature L2 term "
                   "(the paper's 0.025; the toy-world demo uses 1e4, see the README).")
flags.DEFINE_float("lambda2", _ENC.lambda2, "Weight of the fc8 distillation term.")
flags.DEFINE_float("temperature", _ENC.temperature, "Distillation temperature T.")
flags.DEFINE_bool("random_crops", _ENC.random_crops,
                  "Train on random 6 s crops of the stored waveforms (else the stored "
                  "spectrograms of the first 6 s).")
flags.DEFINE_bool("mean_feature_init", _ENC.mean_feature_init,
                  "Start the encoder's output layer at the mean face feature of the stage-1 "
                  "training set (bias = mean, kernel = 0; stored in the decoder); the paper "
                  "gives no initialisation. Off: Keras's Glorot kernel and zero bias.")
FLAGS = flags.FLAGS


def _weights_from_dataset_info(pattern: str):
    """The VGG-Face weights a data set was built with, from its dataset_info.json, if any."""
    directory = os.path.dirname(data.list_files(pattern)[0])
    info_path = os.path.join(directory, "dataset_info.json")
    if not os.path.exists(info_path):
        return None
    with open(info_path) as f:
        path = json.load(f).get("vggface_weights", {}).get("path")
    if not path:
        return None
    path = path if os.path.isabs(path) else os.path.join(directory, path)
    return path if os.path.exists(path) else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for name in ("train_records", "model_dir"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    try:
        data.list_files(FLAGS.train_records)
        if FLAGS.eval_records:
            data.list_files(FLAGS.eval_records)
    except data.NoRecordsError as e:
        raise app.UsageError(str(e)) from e
    weights = FLAGS.vggface_weights
    if weights is None:
        weights = _weights_from_dataset_info(FLAGS.train_records)
        if weights:
            logging.info("Using the VGG-Face weights named by the records' dataset_info.json: %s",
                         weights)
    strategy.set_precision(FLAGS.mixed_precision)
    dist = strategy.get_strategy(FLAGS.strategy, FLAGS.tpu)
    logging.info("Strategy %s with %d replica(s).", type(dist).__name__, dist.num_replicas_in_sync)
    batch_size = FLAGS.global_batch_size or (8 if FLAGS.stage == "encoder" else 16)
    config = loop.TrainConfig(
        model_dir=FLAGS.model_dir, train_records=FLAGS.train_records,
        eval_records=FLAGS.eval_records, global_batch_size=batch_size,
        train_steps=FLAGS.train_steps, steps_per_loop=FLAGS.steps_per_loop,
        checkpoint_every=FLAGS.checkpoint_every, summary_every=FLAGS.summary_every,
        image_summary_every=FLAGS.image_summary_every, eval_every=FLAGS.eval_every,
        eval_batches=FLAGS.eval_batches, seed=FLAGS.seed, precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile)
    try:
        if FLAGS.stage == "decoder":
            task = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
                preset=FLAGS.decoder_preset, learning_rate=FLAGS.decoder_learning_rate,
                landmark_weight=FLAGS.landmark_weight, texture_weight=FLAGS.texture_weight,
                perceptual_weight=FLAGS.perceptual_weight, image_weight=FLAGS.image_weight,
                perceptual_layer=FLAGS.perceptual_layer, vggface_weights=weights))
        else:
            task = encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
                preset=FLAGS.encoder_preset, decoder_dir=FLAGS.decoder_dir,
                vggface_weights=weights, learning_rate=FLAGS.learning_rate,
                decay_rate=FLAGS.lr_decay_rate, decay_steps=FLAGS.lr_decay_steps,
                lambda1=FLAGS.lambda1, lambda2=FLAGS.lambda2, temperature=FLAGS.temperature,
                random_crops=FLAGS.random_crops,
                mean_feature_init=FLAGS.mean_feature_init), seed=FLAGS.seed)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    result = loop.Trainer(task, config, dist).train()
    logging.info("Done: %s", json.dumps({k: v for k, v in result.items()}, default=str))


if __name__ == "__main__":
    app.run(main)
