"""One pass of the models over the held-out records: the value every protocol reads.

    records ─► spectrogram [598, 257, 2] ─► first F(d) frames ─► voice encoder ─► v_s(d)
            │  (stored, or of the first 6 s of int16 waveform: `data.spectrogram_of`)
            └► v_f, the true 68 landmarks, face JPEGs
    decoder(v_f) = F2F, decoder(v_s(d)) = S2F, decoder(exaggerated v_s(d)) ─► landmarks, faces

`encode` reads the records once, runs the voice encoder once per duration and the face decoder
once per feature set, and returns an `Encoded`. The protocols (feature distances and retrieval in
`speech2face.metrics`, `craniofacial`, `attributes`), the report and the figures only read it.

Durations: d seconds of input are the first F(d) = 1 + (16000·d − 400) // 160 frames of the
6 s spectrogram (298 for 3 s). Frames are neither centred nor padded (docs/data.md), so these
frames are exactly the spectrogram of the first d seconds of the segment; a clip shorter than d
was tiled when the records were written, as `fit_to_length` would tile it to d. The 6 s
spectrogram is the stored one, or, from waveform_int16 records (docs/data.md, "Record layouts"),
`audio.spectrogram` of the first 6 s of the stored waveform, computed inside the same
`tf.function` as the encoder, once per batch for every duration.

Gallery: the first `limit` examples of the sorted record files, read one file after the other (so
the set does not depend on reader parallelism; `data.input_fn` interleaves files).

Landmarks: the true ones are those stored in the records (`face/landmarks`: exact for the toy
world, dlib's 68-point predictor for real faces). Of a decoded face there are two: the face
decoder's landmark branch (`decoded_landmarks`), and dlib's 68-point predictor run on the decoded
image (`detected_landmarks`, `speech2face.models.dlib_landmarks`), both in pixels of the 224
frame. The craniofacial study (the first `study_size` rows) reads both; exaggerated faces
(`FaceDecoder.exaggerate`) are decoded for those rows only.
"""

import dataclasses
import math
import time
from typing import Dict, List, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from speech2face import audio, data, records
from speech2face.evaluation import attributes
from speech2face.models import voice_encoder
from speech2face.models import landmarks as landmarks_lib

V_F = "v_f"  # the key of the faces decoded from the true face features (F2F)


def duration_key(seconds: float) -> str:
    """The key of a duration in metrics.json and summary tags: 6 -> "6", 4.5 -> "4.5"."""
    return f"{float(seconds):g}"


def face_key(duration: str, exaggeration: float = 0.0) -> str:
    """The key of the faces decoded from v_s at a duration key and an exaggeration: the
    duration key itself at e = 0 ("6"), else e.g. "6@e0.7"."""
    return duration if exaggeration == 0 else f"{duration}@e{float(exaggeration):g}"


def duration_frames(seconds: float, stored_frames: int,
                    min_frames: int = voice_encoder.MIN_FRAMES) -> int:
    """Spectrogram frames of the first `seconds` of a segment; checks they are stored and that
    the encoder keeps at least one frame through conv1's time stride and its four time pools
    (`min_frames`: `voice_encoder.model_min_frames` of the encoder evaluated)."""
    samples = int(round(float(seconds) * audio.SAMPLE_RATE))
    frames = audio.num_frames(max(samples, audio.WINDOW_LENGTH))
    name = f"duration {duration_key(seconds)} s"
    if samples < audio.WINDOW_LENGTH or frames < min_frames:
        shortest = (audio.WINDOW_LENGTH + (min_frames - 1) * audio.HOP_LENGTH)
        raise ValueError(f"{name} is too short: the voice encoder needs at least "
                         f"{min_frames} frames ({shortest / audio.SAMPLE_RATE:g} s)")
    if frames > stored_frames:
        # The longest input whose frames are all stored, floored to 10 ms (6 s for 598 frames).
        last_sample = audio.WINDOW_LENGTH + stored_frames * audio.HOP_LENGTH - 1
        stored = math.floor(100 * last_sample / audio.SAMPLE_RATE) / 100
        raise ValueError(f"{name} needs {frames} spectrogram frames, but the records store "
                         f"{stored_frames} ({stored:g} s): choose durations of at most "
                         f"{stored:g} s")
    return frames


@dataclasses.dataclass
class Encoded:
    """The evaluated examples, in gallery order, and what the models made of them.

    Attributes:
      speaker_ids, clip_ids: N str each.
      v_f: float32 [N, 4096] true face features.
      landmarks: float32 [N, 68, 2] true landmarks, pixels of the 224 crop (NaN where absent).
      jpegs: {row: face JPEG bytes} of the figure sample (of every row when image attribute
        classifiers are evaluated).
      sample: rows of the face figure, the first clip of each of the first speakers.
      frames: {duration key: spectrogram frames the encoder saw}.
      v_s: {duration key: float32 [N, 4096]} predicted face features.
      exaggerations: the e of the exaggerated S2F faces (0 always first).
      study_size: rows 0 .. study_size - 1 are those of the craniofacial study.
      decoded_landmarks: {face key: float32 [rows, 68, 2]} the decoder's landmark branch for
        the faces decoded from v_f (V_F) and from each v_s (`face_key(duration, e)`), pixels of
        the 224 crop; N rows at e = 0, `study_size` rows for exaggerated faces.
      detected_landmarks: {face key: float32 [study_size, 68, 2]} dlib's 68 points on the same
        decoded images (empty when no landmark predictor was given).
      decoded_faces: {V_F or duration key: {sample row: float32 image [S, S, 3]}}.
      decoded_labels: {V_F or duration key: {classifier name: int [N]}}: the image attribute
        classifiers' labels of the faces decoded from v_f and from v_s, taken as they pass (all
        N faces would not fit in memory).
    """

    speaker_ids: List[str] = dataclasses.field(default_factory=list)
    clip_ids: List[str] = dataclasses.field(default_factory=list)
    v_f: np.ndarray = None
    landmarks: np.ndarray = None
    jpegs: Dict[int, bytes] = dataclasses.field(default_factory=dict)
    sample: List[int] = dataclasses.field(default_factory=list)
    frames: Dict[str, int] = dataclasses.field(default_factory=dict)
    v_s: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    exaggerations: List[float] = dataclasses.field(default_factory=lambda: [0.0])
    study_size: int = 0
    decoded_landmarks: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    detected_landmarks: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    decoded_faces: Dict[str, Dict[int, np.ndarray]] = dataclasses.field(default_factory=dict)
    decoded_labels: Dict[str, Dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def durations(self) -> List[str]:
        return list(self.v_s)

    @property
    def f2f_labels(self) -> Dict[str, np.ndarray]:
        """{classifier name: int [N]}: the image classifiers' labels of the F2F faces."""
        return self.decoded_labels.get(V_F, {})


def encode(encoder, decoder, files: Sequence[str], durations: Sequence[float], limit=None,
           batch_size: int = 32, num_sample: int = 8, image_classifiers=(),
           exaggerations: Sequence[float] = (0.0,), study_size: int = 1000,
           landmark_predictor=None) -> Encoded:
    """Reads the first `limit` examples of `files`, computes v_s at every duration and decodes
    faces from v_f and from each v_s.

    Args:
      encoder: the voice encoder (Keras model, [B, T, 257, 2] -> [B, 4096]).
      decoder: the face decoder (features [B, 4096] -> {"image", "landmarks"}).
      files: record files, read in this order one after the other.
      durations: seconds of input, each at most what the records store.
      limit: examples to read (None: all).
      batch_size: clips per encoder and decoder call.
      num_sample: speakers of the figure sample.
      image_classifiers: attribute classifiers that look at faces: their labels of the decoded
        faces go into `decoded_labels`, and every face JPEG is kept for their true-face labels.
      exaggerations: e of `decoder.exaggerate` at which S2F faces of the study rows are also
        decoded (0, v_s itself, is always included).
      study_size: rows of the craniofacial study (the first this many, at most all).
      landmark_predictor: callable faces [B, S, S, 3] -> landmarks [B, 68, 2] in pixels of the
        224 frame (e.g. `dlib_landmarks.AlignedLandmarkPredictor`), or None: no
        `detected_landmarks`.
    """
    out = _read_and_encode(encoder, files, durations, limit, batch_size, num_sample,
                           keep_all_jpegs=bool(image_classifiers))
    out.exaggerations = [0.0] + sorted({float(e) for e in exaggerations} - {0.0})
    out.study_size = min(int(study_size), len(out.v_f))
    jobs = [(V_F, out.v_f, image_classifiers)]
    jobs += [(key, v_s, image_classifiers) for key, v_s in out.v_s.items()]
    jobs += [(face_key(key, e), decoder.exaggerate(v_s[:out.study_size], e), ())
             for key, v_s in out.v_s.items() for e in out.exaggerations[1:]]
    # One graph, traced once, for every batch of every job: run op by op, the decoder's warp took
    # ~0.4 s per batch of 32 on two cores.
    decode = tf.function(lambda features: decoder(features, training=False),
                         input_signature=[tf.TensorSpec([None, out.v_f.shape[1]], tf.float32)])
    for key, features, classifiers in jobs:
        decoded = _decode(decode, np.asarray(features, np.float32), batch_size, classifiers,
                          out.sample, landmark_predictor, out.study_size)
        out.decoded_landmarks[key], labels, faces, detected = decoded
        if key in out.v_s or key == V_F:
            out.decoded_faces[key], out.decoded_labels[key] = faces, labels
        if landmark_predictor is not None:
            out.detected_landmarks[key] = detected
    return out


def _read_and_encode(encoder, files, durations, limit, batch_size, num_sample, keep_all_jpegs):
    spec = records.read_spec(files[0])
    shortest = voice_encoder.model_min_frames(encoder)
    frames = {duration_key(d): duration_frames(d, spec.num_frames, shortest) for d in durations}
    optional = {key: tf.io.FixedLenFeature([], tf.string, default_value=b"")
                for key in (records.Keys.LANDMARKS, records.Keys.FACE_JPEG)}
    where = files[0] if len(files) == 1 else f"{files[0]} and {len(files) - 1} more files"

    def parse(serialized):
        batch = records.parse_batch(serialized, spec, output_dtype=tf.float32, where=where)
        # Parsed raw: both are optional in the schema.
        batch.update(tf.io.parse_example(serialized, optional))
        return batch

    dataset = data.read_files(files)  # each file checked to its last byte
    if limit:
        dataset = dataset.take(limit)
    dataset = dataset.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    inputs = [k for k in ("spectrogram", records.WAVEFORM_KEY) if k in dataset.element_spec]

    # One trace for every batch, the shorter last one too.
    @tf.function(input_signature=[{k: dataset.element_spec[k] for k in inputs}])
    def run(batch):
        spectrogram = data.spectrogram_of(batch)  # stored, or computed here from int16
        return {key: encoder(spectrogram[:, :num], training=False) for key, num in frames.items()}

    out = Encoded(frames=frames)
    v_f, v_s, landmarks = [], {key: [] for key in frames}, []
    start = last_log = time.perf_counter()
    for batch in data.without_autotuning(dataset.prefetch(tf.data.AUTOTUNE)):
        for key, features in run({k: batch[k] for k in inputs}).items():
            v_s[key].append(features.numpy())
        v_f.append(batch["face_feature"].numpy())
        for speaker, clip, marks, jpeg in zip(
                batch["speaker_id"].numpy(), batch["clip_id"].numpy(),
                batch[records.Keys.LANDMARKS].numpy(), batch[records.Keys.FACE_JPEG].numpy()):
            row, speaker = len(out.speaker_ids), speaker.decode("utf-8")
            if (len(out.sample) < num_sample and jpeg
                    and speaker not in {out.speaker_ids[r] for r in out.sample}):
                out.sample.append(row)
                out.jpegs[row] = jpeg
            elif keep_all_jpegs:
                out.jpegs[row] = jpeg
            out.speaker_ids.append(speaker)
            out.clip_ids.append(clip.decode("utf-8"))
            landmarks.append(np.frombuffer(marks, "<f4").reshape(records.NUM_LANDMARKS, 2)
                             if marks else np.full((records.NUM_LANDMARKS, 2), np.nan))
        now = time.perf_counter()
        if now - last_log > 10:
            last_log = now
            logging.info("Encoding: %d clips of at most %s at %d duration(s), %.1f clips/s.",
                         len(out.speaker_ids), limit or "all", len(frames),
                         len(out.speaker_ids) / (now - start))
    if not v_f:
        raise ValueError(f"{files[0]}: the records hold no examples")
    logging.info("Encoded %d clips at %s s in %.1f s.", len(out.speaker_ids),
                 ", ".join(frames), time.perf_counter() - start)
    out.v_f = np.concatenate(v_f)
    out.v_s = {key: np.concatenate(parts) for key, parts in v_s.items()}
    out.landmarks = np.stack(landmarks).astype(np.float32)
    return out


def _decode(decode, features, batch_size, classifiers, keep_rows, predictor, study_size):
    """`decode` (the face decoder: features -> its outputs) over features [N, 4096] in batches
    -> (the landmark branch [N, 68, 2] in pixels of the 224 crop, {classifier name: int [N]} of
    the faces resized to 224, {row: image}, dlib's landmarks [min(N, study_size), 68, 2] or
    None)."""
    keep_rows = set(keep_rows)
    landmarks, labels, kept = [], {c.name: [] for c in classifiers}, {}
    detected = []
    for start in range(0, len(features), batch_size):
        out = decode(tf.constant(features[start:start + batch_size]))
        landmarks.append(landmarks_lib.normalized_to_pixels(out["landmarks"].numpy(),
                                                           records.FACE_SIZE))
        images = out["image"].numpy()
        for i in keep_rows.intersection(range(start, start + len(images))):
            kept[i] = images[i - start]
        if predictor is not None and start < study_size:
            detected.append(predictor(images[:study_size - start]))
        if classifiers:
            resized = tf.image.resize(images, [records.FACE_SIZE] * 2).numpy().clip(0, 1)
            for c in classifiers:
                labels[c.name].append(attributes.predict_labels(c, resized))
    return (np.concatenate(landmarks), {k: np.concatenate(v) for k, v in labels.items()}, kept,
            np.concatenate(detected) if detected else None)
