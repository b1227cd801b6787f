"""One pass of the models over the held-out records: the value every protocol reads.

    records ─► stored spectrogram [598, 257, 2] ─► first F(d) frames ─► voice encoder ─► v_s(d)
            └► v_f, the true 68 landmarks, face JPEGs
    decoder(v_f), decoder(v_s(d)) ─► landmarks of every example, the faces of the figure sample

`encode` reads the records once, runs the voice encoder once per duration and the face decoder
once per feature set, and returns an `Encoded`. The protocols (feature distances and retrieval in
`speech2face.metrics`, `craniofacial`, `attributes`), the report and the figures only read it.

Durations: d seconds of input are the first F(d) = 1 + (16000·d − 400) // 160 frames of the
stored 6 s spectrogram (298 for 3 s). Frames are neither centred nor padded (docs/data.md), so these
frames are exactly the spectrogram of the first d seconds of the segment; a clip shorter than d
was tiled when the records were written, as `fit_to_length` would tile it to d.

Gallery: the first `limit` examples of the sorted record files, read one file after the other (so
the set does not depend on reader parallelism; `data.input_fn` interleaves files).

Landmarks: the true ones are those stored in the records (`face/landmarks`: exact for the toy
world, dlib's 68-point predictor for real faces); those of a reconstruction come from the face
decoder's landmark branch, in pixels of the same 224×224 crop.
"""

import dataclasses
import math
import time
from typing import Dict, List, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from speech2face import audio, records
from speech2face.evaluation import attributes
from speech2face.models import voice_encoder
from speech2face.models import landmarks as landmarks_lib

V_F = "v_f"  # the key of the faces decoded from the true face features


def duration_key(seconds: float) -> str:
    """The key of a duration in metrics.json and summary tags: 6 -> "6", 4.5 -> "4.5"."""
    return f"{float(seconds):g}"


def duration_frames(seconds: float, stored_frames: int) -> int:
    """Spectrogram frames of the first `seconds` of a segment; checks they are stored and that
    the encoder's four time pools leave at least one frame."""
    samples = int(round(float(seconds) * audio.SAMPLE_RATE))
    frames = audio.num_frames(max(samples, audio.WINDOW_LENGTH))
    name = f"duration {duration_key(seconds)} s"
    if samples < audio.WINDOW_LENGTH or frames < voice_encoder.MIN_FRAMES:
        shortest = (audio.WINDOW_LENGTH + (voice_encoder.MIN_FRAMES - 1) * audio.HOP_LENGTH)
        raise ValueError(f"{name} is too short: the voice encoder needs at least "
                         f"{voice_encoder.MIN_FRAMES} frames "
                         f"({shortest / audio.SAMPLE_RATE:g} s)")
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
      decoded_landmarks: {V_F or duration key: float32 [N, 68, 2]} landmarks of the faces
        decoded from v_f and from each v_s, pixels of the 224 crop.
      decoded_faces: {V_F or duration key: {sample row: float32 image [S, S, 3]}}.
      decoded_labels: {duration key: {classifier name: int [N]}}: the image attribute
        classifiers' labels of the faces decoded from v_s, taken as they pass (all N faces would
        not fit in memory).
    """

    speaker_ids: List[str] = dataclasses.field(default_factory=list)
    clip_ids: List[str] = dataclasses.field(default_factory=list)
    v_f: np.ndarray = None
    landmarks: np.ndarray = None
    jpegs: Dict[int, bytes] = dataclasses.field(default_factory=dict)
    sample: List[int] = dataclasses.field(default_factory=list)
    frames: Dict[str, int] = dataclasses.field(default_factory=dict)
    v_s: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    decoded_landmarks: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    decoded_faces: Dict[str, Dict[int, np.ndarray]] = dataclasses.field(default_factory=dict)
    decoded_labels: Dict[str, Dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def durations(self) -> List[str]:
        return list(self.v_s)


def encode(encoder, decoder, files: Sequence[str], durations: Sequence[float], limit=None,
           batch_size: int = 32, num_sample: int = 8, image_classifiers=()) -> Encoded:
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
    """
    out = _read_and_encode(encoder, files, durations, limit, batch_size, num_sample,
                           keep_all_jpegs=bool(image_classifiers))
    for key, features in [(V_F, out.v_f)] + list(out.v_s.items()):
        classifiers = image_classifiers if key != V_F else ()
        (out.decoded_landmarks[key], labels,
         out.decoded_faces[key]) = _decode(decoder, features, batch_size, classifiers, out.sample)
        if key != V_F:
            out.decoded_labels[key] = labels
    return out


def _read_and_encode(encoder, files, durations, limit, batch_size, num_sample, keep_all_jpegs):
    spec = records.read_spec(files[0])
    frames = {duration_key(d): duration_frames(d, spec.num_frames) for d in durations}
    optional = {key: tf.io.FixedLenFeature([], tf.string, default_value=b"")
                for key in (records.Keys.LANDMARKS, records.Keys.FACE_JPEG)}

    def parse(serialized):
        batch = records.parse_batch(serialized, spec, output_dtype=tf.float32)
        # Parsed raw: both are optional in the schema.
        batch.update(tf.io.parse_example(serialized, optional))
        return batch

    dataset = tf.data.TFRecordDataset(files, buffer_size=8 * 2**20)
    if limit:
        dataset = dataset.take(limit)
    dataset = dataset.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    run = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)

    out = Encoded(frames=frames)
    v_f, v_s, landmarks = [], {key: [] for key in frames}, []
    start = last_log = time.perf_counter()
    for batch in dataset.prefetch(tf.data.AUTOTUNE):
        for key, num in frames.items():
            v_s[key].append(run(batch["spectrogram"][:, :num]).numpy())
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


def _decode(decoder, features, batch_size, classifiers, keep_rows):
    """The face decoder over features [N, 4096] in batches -> (landmarks [N, 68, 2] in pixels of
    the 224 crop, {classifier name: int [N]} of the faces resized to 224, {row: image})."""
    keep_rows = set(keep_rows)
    landmarks, labels, kept = [], {c.name: [] for c in classifiers}, {}
    for start in range(0, len(features), batch_size):
        out = decoder(tf.constant(features[start:start + batch_size]), training=False)
        landmarks.append(landmarks_lib.normalized_to_pixels(out["landmarks"].numpy(),
                                                           records.FACE_SIZE))
        images = out["image"].numpy()
        for i in keep_rows.intersection(range(start, start + len(images))):
            kept[i] = images[i - start]
        if classifiers:
            resized = tf.image.resize(images, [records.FACE_SIZE] * 2).numpy().clip(0, 1)
            for c in classifiers:
                labels[c.name].append(attributes.predict_labels(c, resized))
    return (np.concatenate(landmarks), {k: np.concatenate(v) for k, v in labels.items()}, kept)

