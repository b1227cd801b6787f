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
import os
from typing import NamedTuple, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf

import speech2face
from speech2face import audio, records
from speech2face.models import export

FORMAT = "speech2face-model"
FORMAT_VERSION = 1
MODEL_INFO = "model.json"
ENCODER_FILE = export.ENCODER_FILE
DECODER_FILE = export.DECODER_FILE
SAVED_MODEL_DIR = "saved_model"
MIN_SAMPLES = audio.SAMPLE_RATE  # at least 1 s of speech, as the dataset builder requires


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
          names it); ValueError: a waveform that is not 1-D, or is shorter than 1 s.
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


def write_model(encoder_dir: str, output_dir: str, decoder_dir: Optional[str] = None,
                saved_model: bool = True, overwrite: bool = False) -> str:
    """Writes the self-contained model directory of a stage-2 run.

    Args:
      encoder_dir: the stage-2 training run (its export/ and config.json).
      output_dir: the model directory to write (must not exist unless `overwrite`).
      decoder_dir: the stage-1 run (default: the one the encoder's export names).
      saved_model: also write `saved_model/` for serving.
      overwrite: replace an existing model directory (only one that holds a model.json).

    Returns:
      output_dir.

    Raises:
      FileNotFoundError: no exported encoder or decoder. FileExistsError: output_dir exists.
    """
    encoder, encoder_info = export.load_encoder(encoder_dir)
    decoder_dir = decoder_dir or encoder_info.get("decoder_dir")
    if not decoder_dir:
        raise FileNotFoundError(f"{encoder_dir}: its export names no face decoder; pass "
                                "decoder_dir (--decoder_dir)")
    decoder = export.load_decoder(decoder_dir)
    if tf.io.gfile.exists(output_dir):
        if not overwrite:
            raise FileExistsError(f"{output_dir} exists: choose another directory, or "
                                  "overwrite it (--overwrite)")
        if not tf.io.gfile.exists(os.path.join(output_dir, MODEL_INFO)):
            raise FileExistsError(f"{output_dir} exists and is not a model directory (no "
                                  f"{MODEL_INFO}): not overwriting it")
    # Built beside, swapped in at the end: a failure leaves any earlier model as it was.
    staging = output_dir.rstrip("/") + ".partial"
    if tf.io.gfile.exists(staging):
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
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)
    tf.io.gfile.rename(staging, output_dir)
    return output_dir


def _read_json(path):
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def is_model_dir(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, MODEL_INFO))


def load_model(path: str) -> Speech2FaceModel:
    """The model directory `write_model` wrote, ready to predict.

    Raises:
      FileNotFoundError: `path` is not a model directory (the message says what it is instead,
      e.g. a training run). ValueError: a model of another format or a newer format version.
    """
    if not is_model_dir(path):
        hint = ""
        if tf.io.gfile.exists(os.path.join(path, export.EXPORT_DIR)):
            hint = (f"; it looks like a training run: write a model from it with "
                    f"`speech2face-export-model --model_dir={path} --output=MODEL` or pass it "
                    "as --model_dir")
        raise FileNotFoundError(f"{path} is not a speech2face model directory (no "
                                f"{MODEL_INFO}){hint}")
    info = _read_json(os.path.join(path, MODEL_INFO))
    if info.get("format") != FORMAT or int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{os.path.join(path, MODEL_INFO)}: format {info.get('format')!r} "
                         f"version {info.get('format_version')}; this speech2face "
                         f"({speech2face.__version__}) reads {FORMAT!r} up to version "
                         f"{FORMAT_VERSION}")
    encoder = keras.models.load_model(os.path.join(path, ENCODER_FILE))
    decoder = export.load_decoder(path)
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
    encoder, info = export.load_encoder(model_dir)
    decoder_dir = decoder_dir or info["decoder_dir"]
    source = {"model_dir": os.path.abspath(model_dir), "decoder_dir": os.path.abspath(decoder_dir),
              "encoder": info, "step": export.trained_step(model_dir),
              "differs_from_paper": {
                  "encoder": (export.read_run_config(model_dir) or {}).get("differs_from_paper"),
                  "decoder": (export.read_run_config(decoder_dir) or {}).get("differs_from_paper")}}
    return Speech2FaceModel(encoder, export.load_decoder(decoder_dir), {}, source)

