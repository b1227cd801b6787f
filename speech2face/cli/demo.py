r"""The whole pipeline on the built-in toy world, in one command.

    python -m speech2face.demo --workdir=demo_out

Stages (each skipped when its output already exists, so a rerun picks up where it stopped):
1. Build the toy world (docs/toy_world.md) into `WORKDIR/toy_world`.
2. Show it: `WORKDIR/preview/contact_sheet.png` (faces grouped by speaker, train and test),
   `landmarks.png` (one face with its 68 landmarks), a few WAV clips, and `summary.txt`.
3. Train the small face decoder (stage 1; its step size drops to a fifth for the last 50 of
   its 150 steps) into `WORKDIR/decoder` and draw
   `WORKDIR/decoder/decoded_faces.png`: held-out speakers' true faces above the faces decoded
   from their true face features; `decoder_eval.json` holds pixel and landmark errors beside the
   mean-face baseline.
4. Train the toy voice encoder (stage 2, the paper's loss against the frozen decoder's f_dec
   and VGG-Face fc8, with λ1 = 10⁴ instead of 0.025: `--encoder_lambda1`; its step size drops
   to a fifth for the last 200 of its 800 steps) into
   `WORKDIR/encoder`. It reads no evaluation records: stage 6 evaluates the same held-out
   clips, from the model directory.
5. Write the trained model as one self-contained directory, `WORKDIR/model` (encoder,
   decoder, SavedModel; docs/use_a_model.md), rewritten on every run.
6. Evaluate it with the paper's protocol on the held-out speakers (`WORKDIR/eval/metrics.json`,
   `report.md`, figures) and predict faces from a few held-out clips (`WORKDIR/predictions/`).
"""

import collections
import dataclasses
import glob
import os
import shutil
import sys
from typing import Optional

from speech2face import cli  # noqa: E402

cli.import_tensorflow()  # first: without its INFO lines

from absl import flags, logging  # noqa: E402

from speech2face.cli import flags as config_flags  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
import soundfile  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face.datasets.toy import attributes as toy_attributes  # noqa: E402
from speech2face.datasets.toy import world as toy_world  # noqa: E402
from speech2face import audio, data, evaluation, media, prediction, records  # noqa: E402
from speech2face.evaluation import figures, report  # noqa: E402
from speech2face.records import dataset_info  # noqa: E402
from speech2face.models import artifact, export  # noqa: E402
from speech2face.training import encoder_task, experiments  # noqa: E402

_DEFAULTS = toy_world.ToyWorldConfig()
_TOY_DECODER = experiments.get("toy_decoder")
_TOY_ENCODER = experiments.get("toy_encoder")
flags.DEFINE_string("workdir", None, "Directory for everything the demo writes.")
flags.DEFINE_integer("num_speakers", _DEFAULTS.num_speakers, "Speakers in the toy world.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the toy world.")
flags.DEFINE_string("vggface_weights", None,
                    "An rcmalli VGG-Face .h5 (docs/vggface.md) for the toy world's face features; "
                    "by default the world writes seeded random weights next to its records.")
flags.DEFINE_bool("rebuild", False, "Rebuild the toy world even if WORKDIR/toy_world exists.")
flags.DEFINE_integer("sheet_speakers", 12, "Speakers shown on the contact sheet.")
flags.DEFINE_integer("num_wavs", 4, "WAV clips written to the preview.")
# The training runs are the toy experiments; these flags change one field each (default: the
# experiment's value, shown in brackets).
flags.DEFINE_integer("decoder_steps", None, "Training steps of the small face decoder "
                     f"[toy_decoder: {_TOY_DECODER.trainer.train_steps}; its step size is multiplied "
                     f"by {_TOY_DECODER.task.decay_rate:g} every "
                     f"{_TOY_DECODER.task.decay_steps} steps].")
flags.DEFINE_integer("decoder_batch_size", None, "Batch size of the face decoder "
                     f"[toy_decoder: {_TOY_DECODER.trainer.global_batch_size}].")
flags.DEFINE_integer("encoder_steps", None, "Training steps of the toy voice encoder "
                     f"[toy_encoder: {_TOY_ENCODER.trainer.train_steps}; its step size is multiplied "
                     f"by {_TOY_ENCODER.task.decay_rate:g} every "
                     f"{_TOY_ENCODER.task.decay_steps} steps].")
flags.DEFINE_integer("encoder_batch_size", None, "Batch size of the toy voice encoder "
                     f"[toy_encoder: {_TOY_ENCODER.trainer.global_batch_size}].")
flags.DEFINE_float("encoder_lambda1", None,
                   "λ1, weight of the voice encoder's normalised-feature L2 term "
                   f"[toy_encoder: {_TOY_ENCODER.task.lambda1:g}; the paper's "
                   f"{encoder_task.EncoderTaskConfig.lambda1} leaves that term inert on the toy "
                   "world: docs/toy_world.md].")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS

THUMB = 112


def build_world(workdir: str, num_speakers: int, seed: int, rebuild: bool,
                vggface_weights: Optional[str] = None) -> str:
    """Stage 1: the toy world in `workdir/toy_world`; reused when built with the same settings
    (every field of its `ToyWorldConfig`, so a world from `make_toy_world` with other sizes is
    rebuilt, not trained on)."""
    world = os.path.join(workdir, "toy_world")
    info = dataset_info.read_if_present(world)
    config = toy_world.ToyWorldConfig(num_speakers=num_speakers, seed=seed,
                                      vggface_weights=vggface_weights)
    wanted = dataclasses.asdict(config)
    if info is not None and not rebuild:
        if all(info.config.get(k) == v for k, v in wanted.items()):
            logging.info("Stage 1: reusing the toy world in %s (--rebuild to redo it).", world)
            return world
        logging.info("Stage 1: %s was built with other settings; rebuilding.", world)
    if os.path.exists(world):
        shutil.rmtree(world)
    logging.info("Stage 1: building the toy world in %s.", world)
    toy_world.build_toy_world(config, world)
    return world


def _read_examples(world: str, split: str):
    for path in sorted(tf.io.gfile.glob(os.path.join(world, f"{split}-*.tfrecord"))):
        for serialized in tf.data.TFRecordDataset(path):
            yield records.decode_example(serialized.numpy())


def _faces_by_speaker(world: str, split: str, max_speakers: int):
    """speaker_id -> list of distinct face images (uint8 [224, 224, 3]) and the first clip."""
    faces = collections.OrderedDict()
    for example in _read_examples(world, split):
        entry = faces.get(example.speaker_id)
        if entry is None:
            if len(faces) >= max_speakers:
                continue
            entry = faces[example.speaker_id] = {"jpegs": [], "clip": example, "landmarks": []}
        if example.face_jpeg not in entry["jpegs"]:
            entry["jpegs"].append(example.face_jpeg)
            entry["landmarks"].append(example.landmarks)
    return faces


def contact_sheet(groups, path: str, per_row: int = 6) -> None:
    """Faces captioned with their speaker, a speaker's faces side by side, up to `per_row` to a
    row; each split's rows labelled with the split on the left."""
    rows, labels, captions = [], [], []
    for split, faces in groups:
        first = len(rows)
        for speaker, entry in faces.items():
            images = [media.decode_jpeg(j) for j in entry["jpegs"]]
            if len(rows) == first or len(rows[-1]) + len(images) > per_row:
                rows.append([])
                captions.append([])
                labels.append(split if len(rows) - 1 == first else "")
            rows[-1].extend(images)
            captions[-1].extend([speaker] * len(images))
    figures.image_rows(rows, path, THUMB, row_labels=labels, captions=captions, label_width=60)


def landmark_figure(jpeg: bytes, landmarks: np.ndarray, path: str, scale: int = 2) -> None:
    """One face at 2x with its 68 landmarks numbered (dlib's order)."""
    image = Image.fromarray(media.decode_jpeg(jpeg)).resize((records.FACE_SIZE * scale,) * 2,
                                                         Image.LANCZOS)
    draw = ImageDraw.Draw(image)
    for i, (x, y) in enumerate(landmarks * scale):
        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 0, 0))
        draw.text((x + 3, y - 5), str(i), fill=(255, 255, 0))
    image.save(path)


def preview_world(world: str, workdir: str, sheet_speakers: int, num_wavs: int) -> str:
    """Stage 2: contact sheet, landmark figure, WAV clips and a summary of the toy world."""
    out = os.path.join(workdir, "preview")
    os.makedirs(out, exist_ok=True)
    num_test = max(1, sheet_speakers // 3)
    groups = [
        ("train", _faces_by_speaker(world, "train", sheet_speakers - num_test)),
        ("test", _faces_by_speaker(world, "test", num_test)),
    ]
    contact_sheet(groups, os.path.join(out, "contact_sheet.png"))
    first = next(iter(groups[0][1].values()))
    landmark_figure(first["jpegs"][0], first["landmarks"][0], os.path.join(out, "landmarks.png"))

    wav_paths = []
    # Held-out speakers first: stage 5 predicts faces from these clips.
    entries = [e for _, faces in reversed(groups) for e in faces.values()]
    for entry in entries[:num_wavs]:
        clip = entry["clip"]
        if clip.waveform is None:
            continue
        path = os.path.join(out, f"{clip.clip_id}.wav")
        soundfile.write(path, clip.waveform, audio.SAMPLE_RATE, subtype="PCM_16")
        wav_paths.append(path)

    info = dataset_info.read(world)
    summary = toy_world.format_summary(info)
    with open(os.path.join(out, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    print(summary)
    print(f"\nPreview in {out}:")
    for name in ["contact_sheet.png", "landmarks.png", "summary.txt"] + [
        os.path.basename(p) for p in wav_paths
    ]:
        print(f"  {os.path.join(out, name)}")
    return out


def _toy_experiment(name: str, world: str, **changes) -> experiments.ExperimentConfig:
    """The named toy experiment on the world in `world`; `changes` override single fields."""
    info = dataset_info.read(world)
    return experiments.override(experiments.get(name), {
        "data.train_records": os.path.join(world, "train-*.tfrecord"),
        "data.eval_records": os.path.join(world, "test-*.tfrecord"),
        "task.vggface_weights": info.weights_path(world),
        **{k: v for k, v in changes.items() if v is not None}})


def _stop_unless_finished(result: dict, stage: str) -> None:
    """Ends the demo when a training stage was interrupted (SIGTERM/SIGINT): the later stages
    must not run on a half-trained model; a rerun resumes from the checkpoint just saved."""
    if result["status"] != "finished":
        logging.warning("%s stopped at step %d (%s); rerun the same command to resume.", stage,
                        result["step"], result["status"])
        sys.exit(1)


def train_decoder(world: str, workdir: str, steps=None, batch_size=None) -> str:
    """Stage 3: the `toy_decoder` experiment; resumes or reuses a finished run."""
    model_dir = os.path.join(workdir, "decoder")
    experiment = _toy_experiment("toy_decoder", world, **{
        "trainer.train_steps": steps, "trainer.global_batch_size": batch_size})
    logging.info("Stage 3: training the small face decoder (toy_decoder) for %d steps in %s "
                 "(TensorBoard: tensorboard --logdir=%s).", experiment.trainer.train_steps,
                 model_dir, model_dir)
    trainer = experiments.trainer(experiment, model_dir)
    task = trainer.task
    result = trainer.train()
    _stop_unless_finished(result, "Stage 3 (face decoder)")
    decoder = export.load_decoder(model_dir)
    batch = next(iter(data.input_fn(os.path.join(world, "test-*.tfrecord"), None, 64, False,
                                    task.input_options(False))))
    # One face per held-out speaker, up to 8.
    seen, rows = set(), []
    for i, speaker in enumerate(batch["speaker_id"].numpy()):
        if speaker not in seen and len(rows) < 8:
            seen.add(speaker)
            rows.append(i)
    true = batch["face_image"].numpy()[rows]
    decoded = decoder(tf.gather(batch["face_feature"], rows), training=False)["image"].numpy()
    path = os.path.join(model_dir, "decoded_faces.png")
    figures.image_rows([true, decoded], path, 2 * decoded.shape[1],
                       row_labels=["true face", "decoded from its feature"], label_width=160)
    numbers = result.get("final_evaluation") or {}
    if numbers:
        print("\nFace decoder on held-out speakers (lower is better):")
        print(f"  pixel L1         decoded {numbers['pixel_l1']['decoded']:.4f}   mean face "
              f"{numbers['pixel_l1']['mean_face']:.4f}")
        print(f"  landmark error   decoded {numbers['landmark_error_px224']['decoded']:.2f} px   "
              f"mean face {numbers['landmark_error_px224']['mean_face']:.2f} px (224x224 crop)")
    print(f"  grid: {path}")
    return model_dir


def train_encoder(world: str, workdir: str, decoder_dir: str, steps=None,
                  batch_size=None, lambda1=None) -> str:
    """Stage 4: the `toy_encoder` experiment; resumes or reuses a finished run."""
    model_dir = os.path.join(workdir, "encoder")
    experiment = _toy_experiment("toy_encoder", world, **{
        "task.decoder_dir": decoder_dir, "trainer.train_steps": steps,
        "trainer.global_batch_size": batch_size, "task.lambda1": lambda1})
    # No held-out loss at the last step and no encoder_eval.json: stage 6 evaluates the same
    # held-out clips from the model directory (6.5 s of the demo's two cores, done once).
    experiment = experiments.override(experiment, {"data.eval_records": None})
    logging.info("Stage 4: training the toy voice encoder (toy_encoder) for %d steps in %s "
                 "(TensorBoard: tensorboard --logdir=%s), λ1 = %g (the paper's: %g; see "
                 "docs/toy_world.md).", experiment.trainer.train_steps, model_dir, model_dir,
                 experiment.task.lambda1, encoder_task.EncoderTaskConfig.lambda1)
    result = experiments.trainer(experiment, model_dir).train()
    _stop_unless_finished(result, "Stage 4 (voice encoder)")
    return model_dir


def write_model(workdir: str, encoder_dir: str) -> str:
    """Stage 5: the trained model as one self-contained directory, WORKDIR/model."""
    path = os.path.join(workdir, "model")
    logging.info("Stage 5: writing the model to %s.", path)
    return artifact.write_model(encoder_dir, path, overwrite=True)


def evaluate_and_predict(world: str, workdir: str, model: str, wav_paths) -> None:
    """Stage 6: the paper's evaluation on held-out speakers, and faces predicted from WAVs, both
    from the model directory."""
    logging.info("Stage 6: evaluating %s on the held-out speakers.", model)
    result = evaluation.run_evaluation(
        None, os.path.join(world, "test-*.tfrecord"), os.path.join(workdir, "eval"),
        attribute_classifiers=toy_attributes.toy_attribute_classifiers(world), model=model)
    print("\n" + report.format_retrieval_table(result))
    predictions = prediction.predict_files(None, list(wav_paths),
                                           os.path.join(workdir, "predictions") + os.sep,
                                           model=model)
    print(f"\nThe trained model, self-contained (copy it anywhere): {model}")
    print(f"  python predict.py --model={model} --audio=my_voice.wav --output=face.png")
    print(f"  python -c \"import speech2face; m = speech2face.load_model('{model}'); "
          "print(m('my_voice.wav').face.shape)\"")
    print(f"  SavedModel for TensorFlow Serving: {os.path.join(model, artifact.SAVED_MODEL_DIR)}")
    print("\nEvaluation and predictions:")
    print(f"  {result['files']['metrics']}\n  {result['files']['report']}")
    for path in result["files"]["figures"].values():
        print(f"  {path}")
    for item in predictions:
        print(f"  {item.path} -> {item.output}")


def main(argv):
    config_flags.check_usage(argv)
    os.makedirs(FLAGS.workdir, exist_ok=True)
    world = build_world(FLAGS.workdir, FLAGS.num_speakers, FLAGS.seed, FLAGS.rebuild,
                        FLAGS.vggface_weights)
    preview_world(world, FLAGS.workdir, FLAGS.sheet_speakers, FLAGS.num_wavs)
    decoder_dir = train_decoder(world, FLAGS.workdir, FLAGS.decoder_steps,
                                FLAGS.decoder_batch_size)
    encoder_dir = train_encoder(world, FLAGS.workdir, decoder_dir, FLAGS.encoder_steps,
                                FLAGS.encoder_batch_size, FLAGS.encoder_lambda1)
    model = write_model(FLAGS.workdir, encoder_dir)
    wavs = sorted(glob.glob(os.path.join(FLAGS.workdir, "preview", "*.wav")))
    evaluate_and_predict(world, FLAGS.workdir, model, wavs)


def run():
    """Console-script entry point (absl parses the flags and prints this module's help)."""
    config_flags.run_main(__name__, __doc__, main)


if __name__ == "__main__":
    run()
