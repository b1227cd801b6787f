"""Saving and loading the trained models: one layout, used by training (save) and by evaluation,
prediction and stage 2 (load), so that none of them reaches into the training code.

    MODEL_DIR/export/face_decoder.keras    stage 1: the FaceDecoder (carries its mean landmarks
    MODEL_DIR/export/face_decoder.json              and feature normalisation) + what it was
                                                    trained with
    MODEL_DIR/export/voice_encoder.keras   stage 2: the voice encoder
    MODEL_DIR/export/voice_encoder.json             + preset, weights, the decoder and VGG-Face
                                                    weights it was trained against, loss weights
    MODEL_DIR/config.json                  the run's resolved configuration (the training loop
                                           writes it), with `differs_from_paper`
"""

import json
import os
import zipfile

import keras
import tensorflow as tf

from speech2face import errors

# Imported for their registered Keras classes, which load_model needs.
from speech2face.models import face_decoder, voice_encoder  # noqa: F401

CHECKPOINT_DIR = "checkpoints"  # MODEL_DIR/checkpoints: the training run's checkpoints
RUN_CONFIG = "config.json"  # MODEL_DIR/config.json: the training run's resolved configuration
EXPORT_DIR = "export"
DECODER_FILE = "face_decoder.keras"
DECODER_INFO = "face_decoder.json"
ENCODER_FILE = "voice_encoder.keras"
ENCODER_INFO = "voice_encoder.json"


class ExportNotFoundError(errors.UserError, FileNotFoundError):
    """A training run without the export asked for (no such run, or not trained yet)."""


class ExportError(errors.UserError, ValueError):
    """An export that does not load (damaged, or from an incompatible version)."""


def _save(model: keras.Model, info: dict, model_dir: str, model_file: str, info_file: str) -> str:
    """Writes model and info under temporary names in `export/`, then renames them into place,
    the info first: a killed export leaves only `*.partial` files (or the previous export),
    never a model file that loads beside the wrong info."""
    export_dir = os.path.join(model_dir, EXPORT_DIR)
    tf.io.gfile.makedirs(export_dir)
    final_model, final_info = (os.path.join(export_dir, n) for n in (model_file, info_file))
    partial_model = os.path.join(export_dir, "partial-" + model_file)  # keeps .keras last
    model.save(partial_model)
    with tf.io.gfile.GFile(final_info + ".partial", "w") as f:
        json.dump(info, f, indent=2)
    if tf.io.gfile.exists(final_model):  # the old model goes first: never new info, old model
        tf.io.gfile.remove(final_model)
    tf.io.gfile.rename(final_info + ".partial", final_info, overwrite=True)
    tf.io.gfile.rename(partial_model, final_model, overwrite=True)
    return export_dir


def save_decoder(model, info: dict, model_dir: str) -> str:
    """Writes the stage-1 decoder and its info dict into `model_dir/export`; returns that dir."""
    return _save(model, info, model_dir, DECODER_FILE, DECODER_INFO)


def save_encoder(model, info: dict, model_dir: str) -> str:
    """Writes the stage-2 encoder and its info dict into `model_dir/export`; returns that dir."""
    return _save(model, info, model_dir, ENCODER_FILE, ENCODER_INFO)


def read_run_config(model_dir: str):
    """The training run's config.json as a dict, or None when the run has none."""
    path = os.path.join(model_dir, RUN_CONFIG)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def trained_step(model_dir: str) -> int:
    """The step of a training run's latest checkpoint (0 when it has none)."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def load_decoder(model_dir: str) -> "face_decoder.FaceDecoder":
    """The stage-1 decoder exported in `model_dir` (or `model_dir/export`)."""
    for directory in (os.path.join(model_dir, EXPORT_DIR), model_dir):
        path = os.path.join(directory, DECODER_FILE)
        if tf.io.gfile.exists(path):
            try:
                return keras.models.load_model(path)
            except (ValueError, OSError, zipfile.BadZipFile) as e:  # e.g. an older export
                raise ExportError(f"{path} does not load into this speech2face's face decoder "
                                  f"({e}); train stage 1 again.") from e
    raise ExportNotFoundError(
        f"no exported face decoder in {model_dir}: expected {EXPORT_DIR}/{DECODER_FILE}; train "
        "one with `python train.py --stage=decoder --model_dir=...`")


def load_encoder(model_dir: str):
    """(voice encoder keras.Model, info dict) exported by a stage-2 run in `model_dir`."""
    export_dir = os.path.join(model_dir, EXPORT_DIR)
    path = os.path.join(export_dir, ENCODER_FILE)
    if not tf.io.gfile.exists(path):
        raise ExportNotFoundError(
            f"no exported voice encoder in {model_dir}: expected {EXPORT_DIR}/{ENCODER_FILE}; "
            "train one with `python train.py --stage=encoder ...`")
    try:
        with tf.io.gfile.GFile(os.path.join(export_dir, ENCODER_INFO)) as f:
            info = json.load(f)
        return keras.models.load_model(path), info
    except (ValueError, OSError, zipfile.BadZipFile, tf.errors.NotFoundError) as e:
        raise ExportError(f"{export_dir}: the voice encoder's export does not load ({e}); "
                          "train stage 2 again (or resume it to finish)") from e


def check_decoder(model_dir: str) -> None:
    """Raises a `UserError` unless `model_dir` holds a stage-1 export that looks whole (the
    .keras archive readable, its info file JSON), without loading the model."""
    for directory in (os.path.join(model_dir, EXPORT_DIR), model_dir):
        path = os.path.join(directory, DECODER_FILE)
        if tf.io.gfile.exists(path):
            try:
                with tf.io.gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as archive:
                    archive.getinfo("config.json")
                info = os.path.join(directory, DECODER_INFO)
                if tf.io.gfile.exists(info):
                    with tf.io.gfile.GFile(info) as f:
                        json.load(f)
            except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
                raise ExportError(f"{path} is not a whole face decoder export ({e}): train "
                                  "stage 1 again") from e
            return
    raise ExportNotFoundError(
        f"--decoder_dir={model_dir} holds no exported face decoder (expected "
        f"{EXPORT_DIR}/{DECODER_FILE}): give the model_dir of a finished stage-1 run")
