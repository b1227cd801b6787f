"""A trained model you can hand to someone: one self-contained directory.

    PATH/model.json            what it is: format and package version, the audio front end's
                               constants, both models' export info and resolved training
                               configs, and what produced it, by hash (never a path)
    PATH/voice_encoder.keras   stage 2, the voice encoder
    PATH/face_decoder.keras    stage 1, the face decoder (mean landmarks, feature normalisation)
    PATH/saved_model/          the same two for serving without this package: signature
                               `serving_default`, 16 kHz float32 `waveform` [batch, samples] in,
                               `face` uint8 [batch, S, S, 3] and `feature` float32 [batch, 4096]
                               out, the spectrogram computed inside the graph

`write_model` makes it from a stage-2 training run (and the stage-1 run that run names);
`load_model` reads it into a `Speech2FaceModel`, which turns a media file or a 16 kHz waveform
into v_s and a face. Nothing inside refers to the directories it came from: paths in the
recorded configs are cut to their base names and files are named by their SHA-256, so the
directory can be copied anywhere. docs/use_a_model.md.
"""

import datetime
import hashlib
import json
import logging
import os
import zipfile
from typing import NamedTuple, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

import speech2face
from speech2face import audio, errors, lockfile, records
from speech2face.models import export

FORMAT = "speech2face-model"
FORMAT_VERSION = 1
MODEL_INFO = "model.json"
ENCODER_FILE = export.ENCODER_FILE
DECODER_FILE = export.DECODER_FILE
SAVED_MODEL_DIR = "saved_model"
MIN_SAMPLES = audio.SAMPLE_RATE  # at least 1 s of speech, as the dataset builder requires
# What a model directory holds; a staging or replaced directory holding only these is ours.
LAYOUT = frozenset({MODEL_INFO, ENCODER_FILE, DECODER_FILE, SAVED_MODEL_DIR})
STAGING_SUFFIX = ".partial"  # OUTPUT.partial: the new model, built beside OUTPUT
REPLACED_SUFFIX = ".replaced"  # OUTPUT.replaced: the old model while the new one is swapped in
LOCK_SUFFIX = ".lock"  # OUTPUT.lock: held while a write_model builds and swaps OUTPUT
REWRITE = "rewrite it with `speech2face-export-model --model_dir=RUN --output={path} --overwrite`"

_log = logging.getLogger(__name__)


class ModelNotFoundError(errors.UserError, FileNotFoundError):
    """A path given as a model directory that is not one (no model.json)."""


class ModelError(errors.UserError, ValueError):
    """A model directory that cannot be written there, or does not load (a damaged or
    incomplete one, a model.json that is not this format's); the message names the file and
    the fix."""


def check_length(waveform: np.ndarray, name: str) -> np.ndarray:
    """`waveform` if it holds at least `MIN_SAMPLES` (1 s); else `audio.AudioError` naming
    `name`: a face drawn from a few milliseconds would be noise presented as a prediction."""
    if len(waveform) < MIN_SAMPLES:
        raise audio.AudioError(f"{name}: {len(waveform) / audio.SAMPLE_RATE:.2f} s of audio; "
                               f"a prediction needs at least {MIN_SAMPLES / audio.SAMPLE_RATE:g} s "
                               "of speech")
    return waveform


def sha256(path: str, chunk: int = 2**22) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def _is_path(value: str) -> bool:
    return os.path.isabs(value) or "://" in value or value.startswith(("./", "../", "~"))


def strip_paths(value):
    """A JSON value with every path string (absolute, URL, ./, ../, ~) cut to its base name,
    and comma-separated lists of them item by item."""
    if isinstance(value, dict):
        return {k: strip_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_paths(v) for v in value]
    if isinstance(value, str) and value:
        parts = value.split(",")
        if any(_is_path(p.strip()) for p in parts):
            return ",".join(os.path.basename(p.strip().rstrip("/")) for p in parts)
    return value


def _file_record(path: Optional[str]) -> Optional[dict]:
    """{"name", "sha256", "bytes"} of a file, or {"name", "missing": True} when it is gone."""
    if not path:
        return None
    if not tf.io.gfile.exists(path):
        return {"name": os.path.basename(path), "missing": True}
    return {"name": os.path.basename(path), "sha256": sha256(path),
            "bytes": tf.io.gfile.stat(path).length}


def _data_record(run_config: Optional[dict]) -> Optional[dict]:
    """What the training records were: their dataset_info.json's name, counts and hash."""
    pattern = ((run_config or {}).get("data") or {}).get("train_records")
    if not pattern:
        return None
    files = sorted(f for p in pattern.split(",") for f in tf.io.gfile.glob(p.strip()))
    out = {"train_records": strip_paths(pattern), "train_files": len(files)}
    if files:
        info_path = os.path.join(os.path.dirname(files[0]), "dataset_info.json")
        if tf.io.gfile.exists(info_path):
            with tf.io.gfile.GFile(info_path) as f:
                info = json.load(f)
            out.update(dataset=info.get("name"), counts=info.get("counts"),
                       dataset_info_sha256=sha256(info_path))
    return out


class Output(NamedTuple):
    """What a `Speech2FaceModel` makes of N clips."""

    feature: np.ndarray  # float32 [N, 4096], v_s
    face: np.ndarray  # uint8 [N, S, S, 3], decoded from the (exaggerated) v_s


class Speech2FaceModel:
    """A voice encoder and its face decoder, loaded from a model directory (`load_model`).

    Attributes:
      encoder, decoder: the Keras models.
      info: model.json's content ({} for models loaded from training runs).
      source: what evaluation records of where the models came from: "model_dir" (the model
        directory or the stage-2 run), "decoder_dir", "encoder" (its export info), "step"
        (the encoder's training step), "differs_from_paper" ({"encoder", "decoder"}).
      face_size: side S of the decoder's faces.
    """

    def __init__(self, encoder, decoder, info: dict, source: Optional[dict] = None):
        self.encoder, self.decoder, self.info = encoder, decoder, info
        self.source = source or {}
        self.face_size = int(decoder.config.image_size)

    def __call__(self, inputs, exaggeration: float = 0.0, batch_size: int = 16) -> Output:
        return self.predict(inputs, exaggeration, batch_size)

    def predict(self, inputs: Union[str, np.ndarray, Sequence], exaggeration: float = 0.0,
                batch_size: int = 16) -> Output:
        """v_s and the face of each clip.

        Args:
          inputs: a media file path, a 16 kHz mono waveform (float [n], values in [-1, 1]), or
            a sequence of them. Each is fitted to 6 s as in training (tiled if shorter, its
            first 6 s if longer; docs/data.md).
          exaggeration: e of `FaceDecoder.exaggerate` (0: v_s as it is); `feature` is always
            v_s itself.
          batch_size: clips per encoder call.

        Returns:
          `Output(feature float32 [N, 4096], face uint8 [N, S, S, 3])`.

        Raises:
          audio.AudioError: a file that cannot be read or holds under 1 s of audio (its message
          names it); ValueError: a waveform that is not 1-D, is shorter than 1 s, or whose
          samples reach past `audio.MAX_PEAK` (not float PCM).
        """
        if isinstance(inputs, (str, os.PathLike)) or (
                isinstance(inputs, np.ndarray) and inputs.ndim == 1):
            inputs = [inputs]
        segments = []
        for i, item in enumerate(inputs):
            if isinstance(item, (str, os.PathLike)):
                waveform = check_length(audio.load_audio(item), os.fspath(item))
            else:
                waveform = np.asarray(item, np.float32)
                if waveform.ndim != 1 or not waveform.size:
                    raise ValueError(f"a waveform must be 1-D 16 kHz samples; got shape "
                                     f"{waveform.shape}")
                check_length(waveform, f"waveform {i}")
                audio.check_peak(waveform, f"waveform {i}")
            segments.append(audio.fit_to_length(waveform, audio.SEGMENT_SAMPLES, offset=0))
        features, faces = [], []
        for start in range(0, len(segments), batch_size):
            batch = np.stack(segments[start:start + batch_size]).astype(np.float32)
            v_s = self.encoder(audio.spectrogram(batch), training=False)
            image = self.decoder(self.decoder.exaggerate(v_s, exaggeration),
                                 training=False)["image"]
            features.append(v_s.numpy())
            faces.append(np.clip(image.numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return Output(np.concatenate(features), np.concatenate(faces))


def _serving_archive(encoder, decoder):
    """keras.export.ExportArchive of the waveform -> face, feature signature."""
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.track(decoder)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="waveform")])
    def serve(waveform):
        n = tf.shape(waveform)[1]
        check = tf.debugging.assert_greater_equal(
            n, MIN_SAMPLES, message=f"waveform must hold at least {MIN_SAMPLES} samples "
                                    f"(1 s at {audio.SAMPLE_RATE} Hz)")
        with tf.control_dependencies([check]):
            # As audio.fit_to_length: tiled end to end when shorter, the first 6 s when longer.
            repeats = (audio.SEGMENT_SAMPLES + n - 1) // n
            segment = tf.tile(waveform, [1, repeats])[:, :audio.SEGMENT_SAMPLES]
        segment = tf.ensure_shape(segment, [None, audio.SEGMENT_SAMPLES])
        feature = encoder(audio.spectrogram(segment), training=False)
        image = decoder(feature, training=False)["image"]
        face = tf.cast(tf.clip_by_value(image * 255.0 + 0.5, 0.0, 255.0), tf.uint8)
        return {"feature": tf.cast(feature, tf.float32), "face": face}

    archive.add_endpoint("serving_default", serve)
    return archive


def _listing(path: str) -> set:
    return {name.rstrip("/") for name in tf.io.gfile.listdir(path)}


def _ours(path: str) -> bool:
    """Whether directory `path` holds nothing but a model directory's entries (`LAYOUT`): a
    model, or one `write_model` was building or deleting; never a user's other files."""
    return _listing(path) <= LAYOUT


def recover_swap(path: str, tidy: bool = False) -> None:
    """Finishes the swap of a `write_model` that was killed halfway (its old model is moved to
    PATH.replaced, the new one renamed from PATH.partial to PATH, then the old one deleted): a
    PATH.replaced holding a model.json while PATH is gone is renamed back to PATH (the old model,
    as it was); with `tidy`, a PATH.replaced left beside a model PATH (what was left to delete)
    is deleted. A PATH.replaced holding anything but a model's files is left alone.

    Raises:
      ModelError: PATH.replaced holds the model but cannot be renamed back.
    """
    replaced = path.rstrip("/") + REPLACED_SUFFIX
    if not tf.io.gfile.isdir(replaced) or not _ours(replaced):
        return
    if not tf.io.gfile.exists(path):
        if not tf.io.gfile.exists(os.path.join(replaced, MODEL_INFO)):
            return
        try:
            tf.io.gfile.rename(replaced, path)
        except (OSError, tf.errors.OpError) as e:
            raise ModelError(f"{path} is missing and {replaced} holds the model an "
                             "interrupted overwrite was replacing, but it cannot be renamed back "
                             f"({getattr(e, 'message', e)}): rename {replaced} to {path}") from e
        _log.warning("%s: restored the model from %s, left by an interrupted overwrite",
                     path, replaced)
    elif tidy and is_model_dir(path):
        tf.io.gfile.rmtree(replaced)


def _check_parent(output_dir: str) -> None:
    """Raises unless `output_dir`'s parent is a writable directory or can be created."""
    if "://" not in output_dir:  # a local path (gfile's URLs have no permissions to check)
        parent = os.path.dirname(os.path.abspath(output_dir))
        problem = errors.unwritable_reason(parent)
        if problem:
            raise ModelError(f"{output_dir}: cannot write a model directory there ({problem}); "
                             "choose another --output")


def _check_output(output_dir: str, overwrite: bool) -> None:
    """Raises (before any work) unless `output_dir` can become the model directory: its parent
    a writable directory (or creatable), `output_dir` new, or, with `overwrite`, a model
    directory; OUTPUT.partial and OUTPUT.replaced free or left by an earlier write_model."""
    _check_parent(output_dir)
    recover_swap(output_dir, tidy=True)
    if tf.io.gfile.exists(output_dir):
        if not tf.io.gfile.isdir(output_dir):
            raise FileExistsError(f"{output_dir} is a file, not a model directory: choose "
                                  "another --output")
        if not overwrite:
            raise FileExistsError(f"{output_dir} exists: choose another directory, or "
                                  "overwrite it (--overwrite)")
        if not is_model_dir(output_dir):
            raise FileExistsError(f"{output_dir} exists and is not a model directory (no "
                                  f"{MODEL_INFO}): not overwriting it")
    for suffix, role in ((STAGING_SUFFIX, "builds the new model"),
                         (REPLACED_SUFFIX, "moves the old model while it swaps the new one in")):
        beside = output_dir.rstrip("/") + suffix
        if tf.io.gfile.exists(beside) and not (tf.io.gfile.isdir(beside) and _ours(beside)):
            raise FileExistsError(f"{beside} is in the way: speech2face-export-model {role} "
                                  "there; move it away (it holds files that are not a model's)")


def _run_encoder(run_dir: str):
    """export.load_encoder(run_dir), told apart from a model directory given in its place."""
    if is_model_dir(run_dir) and not tf.io.gfile.exists(os.path.join(run_dir, export.EXPORT_DIR)):
        raise export.ExportNotFoundError(
            f"{run_dir} is a model directory ({MODEL_INFO}), not a stage-2 training run: give it "
            "as --model (predict.py, evaluate.py), or copy it to hand it on")
    return export.load_encoder(run_dir)


def write_model(encoder_dir: str, output_dir: str, decoder_dir: Optional[str] = None,
                saved_model: bool = True, overwrite: bool = False) -> str:
    """Writes the self-contained model directory of a stage-2 run.

    The model is built beside `output_dir` (OUTPUT.partial) and swapped in at the end: an old
    model is renamed to OUTPUT.replaced, the new one renamed to OUTPUT, then the old one deleted.
    A failure leaves the old model in place; a kill leaves it in OUTPUT.replaced, which the next
    `write_model` or `load_model` of OUTPUT renames back (`recover_swap`).

    Args:
      encoder_dir: the stage-2 training run (its export/ and config.json).
      output_dir: the model directory to write (must not exist unless `overwrite`).
      decoder_dir: the stage-1 run (default: the one the encoder's export names).
      saved_model: also write `saved_model/` for serving.
      overwrite: replace an existing model directory (only one that holds a model.json).

    Returns:
      output_dir.

    Raises (before any work):
      FileNotFoundError: no exported encoder or decoder. FileExistsError: output_dir exists
      (or is a file). ModelError: output_dir's parent is a file or not writable.
    """
    _check_parent(output_dir)
    if "://" not in output_dir:
        os.makedirs(os.path.dirname(os.path.abspath(output_dir)), exist_ok=True)
    # Two exports to one output would delete each other's OUTPUT.partial.
    with lockfile.LockFile(output_dir.rstrip("/") + LOCK_SUFFIX, "another model export",
                           "choose another --output"):
        return _write_model(encoder_dir, output_dir, decoder_dir, saved_model, overwrite)


def _write_model(encoder_dir, output_dir, decoder_dir, saved_model, overwrite) -> str:
    """`write_model` under OUTPUT.lock."""
    _check_output(output_dir, overwrite)
    encoder, encoder_info = _run_encoder(encoder_dir)
    decoder_dir = decoder_dir or encoder_info.get("decoder_dir")
    if not decoder_dir:
        raise FileNotFoundError(f"{encoder_dir}: its export names no face decoder; pass "
                                "decoder_dir (--decoder_dir)")
    decoder = export.load_decoder(decoder_dir)
    staging = output_dir.rstrip("/") + STAGING_SUFFIX
    if tf.io.gfile.exists(staging):  # an earlier write's, killed (_check_output: only ours)
        tf.io.gfile.rmtree(staging)
    tf.io.gfile.makedirs(staging)
    for directory, name in ((encoder_dir, ENCODER_FILE), (decoder_dir, DECODER_FILE)):
        tf.io.gfile.copy(os.path.join(directory, export.EXPORT_DIR, name),
                         os.path.join(staging, name))
    if saved_model:
        _serving_archive(encoder, decoder).write_out(os.path.join(staging, SAVED_MODEL_DIR),
                                                     verbose=False)
    decoder_info = _read_json(os.path.join(decoder_dir, export.EXPORT_DIR, export.DECODER_INFO))
    decoder_info.pop("mean_landmarks", None)  # in the .keras file
    encoder_config = export.read_run_config(encoder_dir)
    decoder_config = export.read_run_config(decoder_dir)
    info = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "speech2face_version": speech2face.__version__, "tensorflow_version": tf.__version__,
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
        "audio": {"sample_rate": audio.SAMPLE_RATE, "segment_seconds": audio.SEGMENT_SECONDS,
                  "segment_samples": audio.SEGMENT_SAMPLES, "window_length": audio.WINDOW_LENGTH,
                  "hop_length": audio.HOP_LENGTH, "fft_length": audio.FFT_LENGTH,
                  "power": audio.POWER, "window": "periodic Hann",
                  "fit": "tiled if shorter, the first 6 s if longer"},
        "face": {"size": int(decoder.config.image_size), "landmarks": records.NUM_LANDMARKS},
        "encoder": strip_paths({k: v for k, v in encoder_info.items() if k != "decoder_dir"}),
        "decoder": strip_paths(decoder_info),
        "steps": {"encoder": export.trained_step(encoder_dir),
                  "decoder": export.trained_step(decoder_dir)},
        "files": {name: _file_record(os.path.join(staging, name))
                  for name in (ENCODER_FILE, DECODER_FILE)},
        "produced_by": {
            "vggface_weights": _file_record(encoder_info.get("vggface_weights")),
            "decoder_vggface_weights": _file_record(decoder_info.get("vggface_weights")),
            "encoder_data": _data_record(encoder_config),
            "decoder_data": _data_record(decoder_config),
        },
        "configs": {"encoder": strip_paths(encoder_config), "decoder": strip_paths(decoder_config)},
        "saved_model": SAVED_MODEL_DIR if saved_model else None,
    }
    with tf.io.gfile.GFile(os.path.join(staging, MODEL_INFO), "w") as f:
        json.dump(info, f, indent=2)
    _swap_in(staging, output_dir)
    return output_dir


def _swap_in(staging: str, output_dir: str) -> None:
    """Renames `staging` to `output_dir`; an old `output_dir` is renamed aside first and
    deleted last, so that at every moment one of the two names holds a whole model."""
    replaced = None
    if tf.io.gfile.exists(output_dir):
        replaced = output_dir.rstrip("/") + REPLACED_SUFFIX
        if tf.io.gfile.exists(replaced):  # a leftover of ours (_check_output), not yet gone
            tf.io.gfile.rmtree(replaced)
        tf.io.gfile.rename(output_dir, replaced)
    try:
        tf.io.gfile.rename(staging, output_dir)
    except BaseException:
        if replaced:
            tf.io.gfile.rename(replaced, output_dir)  # the old model back where it was
        raise
    if replaced:
        tf.io.gfile.rmtree(replaced)


def _read_json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def is_model_dir(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, MODEL_INFO))


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")


# The front end the model was trained on must be the one that feeds it (audio.py).
_AUDIO = {"sample_rate": audio.SAMPLE_RATE, "segment_samples": audio.SEGMENT_SAMPLES,
          "window_length": audio.WINDOW_LENGTH, "hop_length": audio.HOP_LENGTH,
          "fft_length": audio.FFT_LENGTH, "power": audio.POWER}


def read_info(path: str) -> dict:
    """Model directory `path`'s model.json, checked: a JSON object of this format, a format
    version this package reads, its sections of the right types, and the audio front end this
    package computes.

    Raises:
      ModelError: naming model.json and what is wrong with it.
    """
    info_path = os.path.join(path, MODEL_INFO)
    fix = REWRITE.format(path=path)
    try:
        info = _read_json(info_path)
    except (ValueError, OSError, tf.errors.OpError) as e:  # bad JSON, not UTF-8, unreadable
        raise ModelError(f"{info_path} is not readable JSON ({getattr(e, 'message', e)}); "
                         f"{fix}") from e
    if not isinstance(info, dict):
        raise ModelError(f"{info_path} holds {_json_type(info)}, not the JSON object "
                         f"speech2face-export-model writes; {fix}")
    missing = [key for key in ("format", "format_version") if key not in info]
    if missing:
        raise ModelError(f"{info_path} has no {' or '.join(repr(k) for k in missing)}: not a "
                         f"speech2face model description; {fix}")
    version = info["format_version"]
    if info["format"] != FORMAT or not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"{info_path}: format {info['format']!r} version {version!r}, not "
                         f"{FORMAT!r} with an integer version; {fix}")
    if version > FORMAT_VERSION:
        raise ModelError(f"{info_path}: format {FORMAT!r} version {version}; this speech2face "
                         f"({speech2face.__version__}) reads up to version {FORMAT_VERSION}: "
                         "upgrade speech2face")
    for key in ("audio", "face", "encoder", "decoder", "steps", "files", "configs"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            raise ModelError(f"{info_path}: {key!r} is {_json_type(info[key])}, not an object; "
                             f"{fix}")
    for stage, config in (info.get("configs") or {}).items():
        if config is not None and not isinstance(config, dict):
            raise ModelError(f"{info_path}: configs.{stage} is {_json_type(config)}, not an "
                             f"object; {fix}")
    step = (info.get("steps") or {}).get("encoder", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ModelError(f"{info_path}: steps.encoder is {step!r}, not a step number; {fix}")
    differs = {k: (info.get("audio") or {})[k] for k in _AUDIO
               if k in (info.get("audio") or {}) and (info.get("audio") or {})[k] != _AUDIO[k]}
    if differs:
        raise ModelError(f"{info_path}: the model was trained on another audio front end "
                         f"({', '.join(f'{k} {v!r}, here {_AUDIO[k]!r}' for k, v in differs.items())}"
                         "): its predictions here would be wrong; use the speech2face version "
                         f"that wrote it ({info.get('speech2face_version')})")
    return info


def _load_keras(path: str, name: str):
    """Model directory `path`'s Keras file `name`, loaded; `ModelError` (incomplete, corrupt)
    naming the file and the fix otherwise."""
    file_path = os.path.join(path, name)
    fix = REWRITE.format(path=path)
    if not tf.io.gfile.exists(file_path):
        raise ModelError(f"{path} is an incomplete model directory: it has no {name}; {fix}")
    try:
        with tf.io.gfile.GFile(file_path, "rb") as f, zipfile.ZipFile(f) as archive:
            archive.getinfo("config.json")
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as e:
        raise ModelError(f"{file_path} is corrupt (not a whole .keras archive: {e}); "
                         f"{fix}") from e
    try:
        return keras.models.load_model(file_path)
    except (ValueError, OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{file_path} is corrupt or from an incompatible version (it does not "
                         f"load: {reason}); {fix}") from e


def load_model(path: str) -> Speech2FaceModel:
    """The model directory `write_model` wrote, ready to predict (one whose overwrite was
    killed halfway is first restored from PATH.replaced, `recover_swap`).

    Raises:
      ModelNotFoundError (a FileNotFoundError): `path` is not a model directory (the message
      says what it is instead, e.g. a training run). ModelError (a ValueError): a damaged or
      incomplete model directory, a model.json of another format or a newer format version.
    """
    recover_swap(path)
    if not is_model_dir(path):
        hint = ""
        if tf.io.gfile.exists(os.path.join(path, export.EXPORT_DIR)):
            hint = (f"; it looks like a training run: write a model from it with "
                    f"`speech2face-export-model --model_dir={path} --output=MODEL` or pass it "
                    "as --model_dir")
        elif tf.io.gfile.isdir(path) and _listing(path) & LAYOUT:
            hint = f": an incomplete model directory; {REWRITE.format(path=path)}"
        elif not tf.io.gfile.exists(path):
            hint = ": no such directory"
        raise ModelNotFoundError(f"{path} is not a speech2face model directory (no "
                                 f"{MODEL_INFO}){hint}")
    info = read_info(path)
    encoder = _load_keras(path, ENCODER_FILE)
    decoder = _load_keras(path, DECODER_FILE)
    configs = info.get("configs") or {}
    source = {"model": os.path.abspath(path), "model_dir": os.path.abspath(path),
              "decoder_dir": os.path.abspath(path), "encoder": info.get("encoder"),
              "step": (info.get("steps") or {}).get("encoder", 0),
              "differs_from_paper": {stage: (configs.get(stage) or {}).get("differs_from_paper")
                                     for stage in ("encoder", "decoder")}}
    return Speech2FaceModel(encoder, decoder, info, source)


def load_either(model: Optional[str] = None, model_dir: Optional[str] = None,
                decoder_dir: Optional[str] = None) -> Speech2FaceModel:
    """The model to predict or evaluate with: a model directory (`model`) or a stage-2
    training run (`model_dir`) with the decoder it names unless `decoder_dir` is given.

    Raises:
      ValueError: neither or both given, or decoder_dir with a model directory.
      FileNotFoundError: no such model or export.
    """
    if bool(model) == bool(model_dir):
        raise ValueError("give a model directory (--model) or a stage-2 training run "
                         "(--model_dir), one of the two")
    if model:
        if decoder_dir:
            raise ValueError("a model directory carries its decoder: --decoder_dir goes with "
                             "a training run (--model_dir) only")
        return load_model(model)
    encoder, info = _run_encoder(model_dir)
    decoder_dir = decoder_dir or info["decoder_dir"]
    source = {"model_dir": os.path.abspath(model_dir), "decoder_dir": os.path.abspath(decoder_dir),
              "encoder": info, "step": export.trained_step(model_dir),
              "differs_from_paper": {
                  "encoder": (export.read_run_config(model_dir) or {}).get("differs_from_paper"),
                  "decoder": (export.read_run_config(decoder_dir) or {}).get("differs_from_paper")}}
    return Speech2FaceModel(encoder, export.load_decoder(decoder_dir), {}, source)

