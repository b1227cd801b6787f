"""Evaluation of a trained Speech2Face model on held-out clips (docs/evaluation.md).

    records ─► stored spectrogram [598, 257, 2] ─► first F(d) frames ─► voice encoder ─► v_s(d)
            └► v_f, the true 68 landmarks, face JPEGs
    v_s(d) vs v_f ─► feature distances; S2F → face retrieval (cos, L1, L2) beside chance
    decoder(v_s(d)) landmarks vs the true ones ─► craniofacial correlations (Pearson r, p)
    attribute classifiers on the true vs the reconstructed face ─► agreement, confusion matrices

`run_evaluation` does all of it and writes `metrics.json`, `report.md` (`report.format_report`),
PNG figures (`figures`), and TensorBoard scalars into `model_dir/eval`, beside the training
curves.

Durations: d seconds of input are the first F(d) = 1 + (16000·d − 400) // 160 frames of the
stored 6 s spectrogram (298 for 3 s). Frames are neither centred nor padded (docs/data.md), so these
frames are exactly the spectrogram of the first d seconds of the segment; a clip shorter than d
was tiled when the records were written, as `fit_to_length` would tile it to d.

Gallery: the first `gallery_size` examples of the sorted record files, read one file after the
other (so the set does not depend on reader parallelism; `data.input_fn` interleaves files).
Every gallery row is also a query, matched with its own face's v_f. With fewer examples than
`gallery_size`, all are used and the report says so. Chance is reported for the gallery used.

Landmarks: the true ones are those stored in the records (`face/landmarks`: exact for the toy
world, dlib's 68-point predictor for real faces); those of a reconstruction come from the face
decoder's landmark branch, in pixels of the same 224×224 crop.

Attributes: any `attributes.AttributeClassifier` plugs in (the paper used a commercial one,
Face++); in a toy world, `attributes.toy_attribute_classifiers` are used unless others are given.
"""

import datetime
import io
import json
import math
import os
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from speech2face import (attributes, audio, craniofacial, data, dataset_info, figures, metrics,
                         records, report)
from speech2face.models import export, face_decoder, voice_encoder

KS = metrics.DEFAULT_KS
# Re-exported: where users of the evaluation look for them.
AttributeClassifier = attributes.AttributeClassifier
format_retrieval_table = report.format_retrieval_table
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FIGURE_FILES = {"recall": "recall_at_k.png", "distances": "distance_histograms.png",
                "faces": "faces_true_vf_vs.png"}


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


# ----------------------------------------------------------------------------------------------
# Encoding


class EncodedSet:
    """The evaluated examples, in gallery order.

    Attributes:
      v_f: float32 [N, 4096] face features; v_s: {duration key: float32 [N, 4096]}.
      frames: {duration key: spectrogram frames the encoder saw}.
      speaker_ids, clip_ids: lists of N str.
      landmarks: float32 [N, 68, 2] true landmarks, pixels of the 224 crop (NaN where absent).
      jpegs: {row: face JPEG bytes} for the figure sample (all rows if `keep_all_jpegs`).
      sample: rows of the figure, the first clip of each of the first speakers.
    """

    def __init__(self):
        self.v_f, self.v_s, self.speaker_ids, self.clip_ids = None, {}, [], []
        self.landmarks, self.jpegs, self.sample, self.frames = None, {}, [], {}


def encode_records(encoder, files, durations, limit, batch_size=32, num_sample=8,
                   keep_all_jpegs=False) -> EncodedSet:
    """Reads the first `limit` examples of `files` and computes v_s at every duration.

    Args:
      encoder: the voice encoder (Keras model, [B, T, 257, 2] -> [B, 4096]).
      files: record files, read in this order one after the other.
      durations: seconds of input, each at most what the records store.
      limit: examples to read (None: all).
      batch_size: clips per encoder call.
      num_sample: speakers of the figure sample.
      keep_all_jpegs: keep every face JPEG (image attribute classifiers need them).
    """
    spec = records.read_spec(files[0])
    frames = {duration_key(d): duration_frames(d, spec.num_frames) for d in durations}
    optional = {key: tf.io.FixedLenFeature([], tf.string, default_value=b"")
                for key in (records.Keys.LANDMARKS, records.Keys.FACE_JPEG)}

    def parse(serialized):
        batch = records.parse_batch(serialized, spec, output_dtype=tf.float32)
        # Parsed raw: both are optional in the schema, and `with_faces` needs them everywhere.
        batch.update(tf.io.parse_example(serialized, optional))
        return batch

    dataset = tf.data.TFRecordDataset(files, buffer_size=8 * 2**20)
    if limit:
        dataset = dataset.take(limit)
    dataset = dataset.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    encode = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)

    out = EncodedSet()
    out.frames = frames
    v_f, v_s, landmarks = [], {key: [] for key in frames}, []
    start = last_log = time.perf_counter()
    for batch in dataset.prefetch(tf.data.AUTOTUNE):
        for key, num in frames.items():
            v_s[key].append(encode(batch["spectrogram"][:, :num]).numpy())
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


def _decode_jpegs(jpegs):
    return np.stack([np.asarray(Image.open(io.BytesIO(j)).convert("RGB").resize(
        (records.FACE_SIZE, records.FACE_SIZE), Image.BILINEAR), np.float32) / 255.0
        for j in jpegs])


def decode_features(decoder, features, batch_size=32, classifiers=(), keep_rows=()):
    """Runs the face decoder over features [N, 4096] in batches.

    Returns:
      (landmarks float32 [N, 68, 2] in pixels of the 224 crop, {classifier name: int labels
      [N]} for image classifiers (on the images resized to 224), {row: image [S, S, 3]} for
      `keep_rows`).
    """
    keep_rows = set(keep_rows)
    landmarks, labels, kept = [], {c.name: [] for c in classifiers}, {}
    for start in range(0, len(features), batch_size):
        out = decoder(tf.constant(features[start:start + batch_size]), training=False)
        landmarks.append(face_decoder.normalized_to_pixels(out["landmarks"].numpy(),
                                                           records.FACE_SIZE))
        images = out["image"].numpy()
        for i in keep_rows.intersection(range(start, start + len(images))):
            kept[i] = images[i - start]
        if classifiers:
            resized = tf.image.resize(images, [records.FACE_SIZE] * 2).numpy().clip(0, 1)
            for c in classifiers:
                labels[c.name].append(attributes.predict_labels(c, resized))
    return (np.concatenate(landmarks), {k: np.concatenate(v) for k, v in labels.items()}, kept)


# ----------------------------------------------------------------------------------------------
# Craniofacial measurements


def _craniofacial(true_px, predicted_px, num_shuffles, seed):
    valid = np.isfinite(true_px).all(axis=(1, 2))
    if valid.sum() < 3:
        return None
    return craniofacial.correlate(true_px[valid], predicted_px[valid], num_shuffles, seed)


# ----------------------------------------------------------------------------------------------
# The whole evaluation


def _trained_step(model_dir):
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, export.CHECKPOINT_DIR))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def run_evaluation(model_dir: str, records: str, output_dir: str,
                   gallery_size: int = 5000, durations: Sequence[float] = (6, 3),
                   attribute_classifiers=None, train_records: Optional[str] = None,
                   decoder_dir: Optional[str] = None, batch_size: int = 32, num_sample: int = 8,
                   num_shuffles: int = 1000, seed: int = 0, write_summaries: bool = True) -> dict:
    """Evaluates the voice encoder exported in `model_dir` on held-out records (docs/evaluation.md).

    Args:
      model_dir: a stage-2 run (its `export/` holds the encoder, which names its decoder).
      records: glob (or comma-separated globs) of the held-out records (the name hides the
        `records` module in this function only).
      output_dir: where metrics.json, report.md and the figures go (created).
      gallery_size: gallery = queries = the first this many examples (all if fewer).
      durations: input lengths in seconds (the paper: 6 and 3), each at most the stored 6 s.
      attribute_classifiers: an `attributes.AttributeClassifier` or a sequence of them; None
        means the toy world's (`attributes.toy_attribute_classifiers`) when the records sit in
        a toy world, else none; [] means none.
      train_records: records the toy classifiers are fitted on (default: `train-*.tfrecord`
        beside the evaluated records).
      decoder_dir: the stage-1 run to decode faces with (default: the one the encoder names).
      batch_size: clips per encoder/decoder call.
      num_sample: test speakers in the face figure.
      num_shuffles: random pairings of the craniofacial baseline.
      seed: of the random pairings.
      write_summaries: also write TensorBoard scalars and images to `model_dir/eval`.

    Returns:
      The dict written to metrics.json (see the README of evaluate.py); `["files"]` holds the
      paths of what was written.

    Raises:
      FileNotFoundError: no exported encoder or decoder; data.NoRecordsError: nothing matches
      `records`; ValueError: bad durations or gallery size; TypeError: not a classifier.
    """
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be at least 1; got {gallery_size}")
    durations = list(dict.fromkeys(float(d) for d in durations))
    if not durations:
        raise ValueError("give at least one duration, e.g. durations=(6, 3)")
    files = data.list_files(records)
    encoder, info = export.load_encoder(model_dir)
    decoder_dir = decoder_dir or info["decoder_dir"]
    decoder = export.load_decoder(decoder_dir)
    world = os.path.dirname(files[0])
    toy = os.path.exists(os.path.join(world, attributes.TOY_SPEAKERS_FILE))
    if attribute_classifiers is None and toy:
        attribute_classifiers = attributes.toy_attribute_classifiers(world, train_records)
    classifiers = attributes.check_classifiers(attribute_classifiers)
    image_classifiers = [c for c in classifiers if attributes.input_kind(c) == "image"]

    enc = encode_records(encoder, files, durations, gallery_size, batch_size, num_sample,
                         keep_all_jpegs=bool(image_classifiers))
    n, keys, rows = len(enc.v_f), list(enc.v_s), enc.sample
    if n < gallery_size:
        logging.warning("The records hold %d examples, fewer than the gallery size %d: using "
                        "all of them.", n, gallery_size)
    result = {
        "model_dir": os.path.abspath(model_dir), "decoder_dir": os.path.abspath(decoder_dir),
        "encoder": info, "step": _trained_step(model_dir), "records": records,
        "record_files": len(files), "gallery_size_requested": int(gallery_size),
        "gallery_size": n, "all_test_examples_used": n < gallery_size,
        "num_speakers": len(set(enc.speaker_ids)),
        "distinct_gallery_faces": int(len(np.unique(enc.v_f, axis=0))),
        "dataset": _dataset_summary(world), "durations": {},
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }

    true_labels = _true_face_labels(enc, classifiers, batch_size)
    truth = {c.name: np.asarray(c.true_labels(enc.speaker_ids)) for c in classifiers
             if getattr(c, "true_labels", None) is not None}
    # Decoded from v_f: the decoder's own ceiling, and a column of the face figure.
    vf_landmarks, _, faces_vf = decode_features(decoder, enc.v_f, batch_size, keep_rows=rows)
    result["craniofacial_from_v_f"] = _craniofacial(enc.landmarks, vf_landmarks, num_shuffles,
                                                    seed)
    ranks, distances, faces_vs = {}, {}, {}
    for key in keys:
        v_s = enc.v_s[key]
        numbers, ranks[key], *distances[key] = metrics.feature_metrics(
            v_s, enc.v_f, enc.speaker_ids, seed)
        numbers["num_frames"] = int(enc.frames[key])
        vs_landmarks, recon_labels, faces_vs[key] = decode_features(
            decoder, v_s, batch_size, image_classifiers, keep_rows=rows)
        numbers["craniofacial"] = _craniofacial(enc.landmarks, vs_landmarks, num_shuffles, seed)
        for c in classifiers:
            if attributes.input_kind(c) == "feature":
                recon_labels[c.name] = attributes.predict_labels(c, v_s)
        numbers["attributes"] = {
            c.name: attributes.attribute_agreement(c, true_labels[c.name], recon_labels[c.name],
                                                   truth.get(c.name))
            for c in classifiers}
        result["durations"][key] = numbers
    result["attribute_classifiers"] = {
        c.name: getattr(c, "description", type(c).__name__) for c in classifiers}

    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, file) for name, file in FIGURE_FILES.items()}
    figures.recall_figure(ranks, n, KS, paths["recall"])
    figures.distance_figure(distances, paths["distances"])
    columns = [("true face", _decode_jpegs([enc.jpegs[r] for r in rows]) if rows else []),
               ("from v_f", [faces_vf[r] for r in rows])]
    columns += [(f"from v_s, {key} s", [faces_vs[key][r] for r in rows]) for key in keys]
    grid = figures.face_grid([enc.speaker_ids[r] for r in rows], columns, paths["faces"])
    result["files"] = {"metrics": os.path.join(output_dir, METRICS_FILE),
                       "report": os.path.join(output_dir, REPORT_FILE), "figures": paths}
    if write_summaries:
        result["files"]["summaries"] = os.path.join(model_dir, "eval")
    text = report.format_report(result)
    with open(result["files"]["report"], "w") as f:
        f.write(text)
    with open(result["files"]["metrics"], "w") as f:
        json.dump(result, f, indent=2)
    if write_summaries:
        report.write_eval_summaries(model_dir, result, grid, text)
    logging.info("Evaluation written to %s.", output_dir)
    return result


def _true_face_labels(enc, classifiers, batch_size):
    """{classifier name: int [N]} of the true faces: JPEG crops or v_f, per the input kind."""
    labels = {}
    for c in classifiers:
        if attributes.input_kind(c) == "feature":
            labels[c.name] = attributes.predict_labels(c, enc.v_f)
            continue
        n = len(enc.v_f)
        missing = [r for r in range(n) if not enc.jpegs.get(r)]
        if missing:
            raise ValueError(f"image attribute classifier {c.name} needs the face JPEGs, but "
                             f"{len(missing)} records have none (e.g. clip "
                             f"{enc.clip_ids[missing[0]]})")
        labels[c.name] = np.concatenate([
            attributes.predict_labels(c, _decode_jpegs(
                [enc.jpegs[r] for r in range(start, min(start + batch_size, n))]))
            for start in range(0, n, batch_size)])
    return labels


def _dataset_summary(directory):
    info = dataset_info.read_if_present(directory)
    if not info:
        return None
    weights = info.get("vggface_weights") or {}
    return {"name": info.get("name"), "seed": info.get("seed"), "counts": info.get("counts"),
            "vggface_weights": weights.get("path"), "vggface_random": weights.get("random_init")}
