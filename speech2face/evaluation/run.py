"""Evaluation of a trained Speech2Face model on held-out clips (docs/evaluation.md).

    records ─► encode.encode (one pass: v_s per duration, v_f, decoded faces and landmarks)
            ─► metrics.feature_metrics   feature distances; S2F → face retrieval beside chance
            ─► craniofacial              the F2F/S2F study on detected landmarks, per exaggeration
            ─► attributes                agreement of attribute classifiers, S2F and F2F
            ─► report, figures           metrics.json, report.md, PNGs, TensorBoard scalars

`run_evaluation` does all of it into `output_dir` (and `model_dir/eval` for TensorBoard). Every
gallery row is also a query, matched with its own face's v_f. With fewer examples than
`gallery_size`, all are used and the report says so. Chance is reported for the gallery used.

Attributes: any `attributes.AttributeClassifier` plugs in (the paper used a commercial one,
Face++); `speech2face.datasets.toy.attributes` has the toy world's.
"""

import datetime
import json
import os
from typing import List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from speech2face import data, metrics
from speech2face.evaluation import attributes, craniofacial, encode, figures, report
from speech2face.models import artifact, dlib_landmarks
from speech2face.records import dataset_info, verify

KS = metrics.DEFAULT_KS
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FIGURE_FILES = {"recall": "recall_at_k.png", "distances": "distance_histograms.png",
                "faces": "faces_true_vf_vs.png"}


def run_evaluation(model_dir: Optional[str], records: str, output_dir: str,
                   gallery_size: int = 5000, durations: Sequence[float] = (6, 3),
                   attribute_classifiers=None, decoder_dir=None, batch_size: int = 32,
                   num_sample: int = 8, num_shuffles: int = 1000, seed: int = 0,
                   exaggerations: Sequence[float] = (0.0, 0.7),
                   study_size: int = craniofacial.STUDY_SIZE,
                   write_summaries: bool = True, model: Optional[str] = None,
                   allow_train_split: bool = False) -> dict:
    """Evaluates the voice encoder exported in `model_dir` on held-out records (docs/evaluation.md).

    Args:
      model_dir: a stage-2 run (its `export/` holds the encoder, which names its decoder), or
        None when `model` is given.
      records: glob (or comma-separated globs) of the held-out records.
      output_dir: where metrics.json, report.md and the figures go (created).
      gallery_size: gallery = queries = the first this many examples (all if fewer).
      durations: input lengths in seconds (the paper: 6 and 3), each at most the stored 6 s.
      attribute_classifiers: an `attributes.AttributeClassifier`, a sequence of them, or None.
      decoder_dir: the stage-1 run to decode faces with (default: the one the encoder names).
      batch_size: clips per encoder/decoder call.
      num_sample: test speakers in the face figure.
      num_shuffles: random pairings of the craniofacial baseline.
      seed: of the random pairings.
      exaggerations: e of `FaceDecoder.exaggerate` for the craniofacial study's S2F faces (the
        paper's numbers match the authors' 0.7 renders; 0 is always included).
      study_size: test clips of the craniofacial study (the first this many; the paper: 1,000).
      write_summaries: also write TensorBoard scalars and images to `model_dir/eval` (to
        `output_dir/eval` for a `model`).
      model: a model directory (`speech2face.models.artifact.write_model`) instead of
        `model_dir`; it carries its decoder.
      allow_train_split: score records that the data set's dataset_info.json lists under its
        train split (refused otherwise: the protocol is on held-out speakers, and the attribute
        probes are fitted on the training split); the report then says so in its first lines.

    Returns:
      The dict written to metrics.json (docs/evaluation.md); `["files"]` holds the paths of what
      was written.

    Raises:
      FileNotFoundError: no exported encoder or decoder; data.NoRecordsError: nothing matches
      `records`; ValueError: bad durations or gallery size; TypeError: not a classifier.
    """
    if gallery_size < 1:
        raise ValueError(f"gallery_size must be at least 1; got {gallery_size}")
    if study_size < 3:
        raise ValueError(f"study_size must be at least 3 (a correlation); got {study_size}")
    exaggerations = [float(e) for e in exaggerations]
    if any(not np.isfinite(e) or e < 0 for e in exaggerations):
        raise ValueError(f"exaggerations must be finite and >= 0; got {exaggerations}")
    durations = list(dict.fromkeys(float(d) for d in durations))
    if not durations:
        raise ValueError("give at least one duration, e.g. durations=(6, 3)")
    files = data.list_files(records)
    verify.check_files(files, "evaluation")  # empty, non-TFRecord or broken-header files
    splits = _splits_of(files)
    if "train" in splits and not allow_train_split:
        raise ValueError(
            f"{records}: dataset_info.json lists these records under the TRAIN split; the "
            "evaluation scores held-out speakers (pass the test-*.tfrecord files), or give "
            "--allow_train_split to score the training data knowingly")
    loaded = artifact.load_either(model, model_dir, decoder_dir)
    encoder, decoder = loaded.encoder, loaded.decoder
    classifiers = attributes.check_classifiers(attribute_classifiers)

    predictor = dlib_landmarks.AlignedLandmarkPredictor(decoder.mean_landmarks.numpy())
    try:
        enc = encode.encode(encoder, decoder, files, durations, gallery_size, batch_size,
                            num_sample,
                            [c for c in classifiers if attributes.input_kind(c) == "image"],
                            exaggerations, study_size, predictor)
    except tf.errors.OpError as e:  # nothing is written before this point
        if not verify.is_corrupt_read(e):
            raise
        raise verify.corrupt_error(files, e, "evaluation") from e
    n = len(enc.v_f)
    if n < gallery_size:
        logging.warning("The records hold %d examples, fewer than the gallery size %d: using "
                        "all of them.", n, gallery_size)
    result = {
        **loaded.source, "records": records,
        "record_files": len(files), "splits": splits,
        "gallery_size_requested": int(gallery_size),
        "gallery_size": n, "all_test_examples_used": n < gallery_size,
        "num_speakers": len(set(enc.speaker_ids)),
        "distinct_gallery_faces": int(len(np.unique(enc.v_f, axis=0))),
        "dataset": _dataset_summary(os.path.dirname(files[0])),
        "durations": {},
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    # Each protocol reads the one encoded value, in turn.
    ranks, distances = {}, {}
    for key in enc.durations:
        numbers, ranks[key], *distances[key] = metrics.feature_metrics(
            enc.v_s[key], enc.v_f, enc.speaker_ids, seed)
        result["durations"][key] = dict(numbers, num_frames=int(enc.frames[key]))
    cranio = craniofacial.study(enc, num_shuffles, seed)
    result["craniofacial"] = {
        "landmarks": predictor.description, "face_box": list(predictor.box),
        "exaggerations": enc.exaggerations, "faces": enc.study_size,
        "num_shuffles": int(num_shuffles),
        "measurements": {name: craniofacial.describe(name) for name in craniofacial.MEASUREMENTS},
        # Not the paper's: the true face's stored landmarks against F2F's landmark branch.
        "true_f2f": cranio["true_f2f"]}
    tables, result["attributes_f2f"] = attributes.tables_of(enc, classifiers, batch_size)
    for key, numbers in result["durations"].items():
        numbers["craniofacial_f2f_s2f"] = cranio["f2f_s2f"][key]
        numbers["craniofacial_f2f_s2f_decoder_landmarks"] = cranio["f2f_s2f_decoder_landmarks"][key]
        numbers["craniofacial_true_s2f"] = cranio["true_s2f"][key]
        numbers["attributes"] = tables[key]
    result["attribute_classifiers"] = {
        c.name: getattr(c, "description", type(c).__name__) for c in classifiers}
    _write(result, enc, ranks, distances, model_dir or output_dir, output_dir, write_summaries)
    return result


def _write(result, enc, ranks, distances, summaries_parent, output_dir, write_summaries):
    """metrics.json, report.md, the figures and (optionally) TensorBoard summaries (into
    `summaries_parent/eval`)."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, file) for name, file in FIGURE_FILES.items()}
    figures.recall_figure(ranks, result["gallery_size"], KS, paths["recall"])
    figures.distance_figure(distances, paths["distances"])
    grid = figures.faces_figure(enc, paths["faces"])
    result["files"] = {"metrics": os.path.join(output_dir, METRICS_FILE),
                       "report": os.path.join(output_dir, REPORT_FILE), "figures": paths}
    if write_summaries:
        result["files"]["summaries"] = os.path.join(summaries_parent, "eval")
    text = report.format_report(result)
    with open(result["files"]["report"], "w") as f:
        f.write(text)
    with open(result["files"]["metrics"], "w") as f:
        json.dump(result, f, indent=2)
    if write_summaries:
        report.write_eval_summaries(summaries_parent, result, grid, text)
    logging.info("Evaluation written to %s.", output_dir)


def _splits_of(files) -> List[str]:
    """The splits of `files` by the data set's dataset_info.json (`files` per split); "unknown"
    for a file it does not list or when there is none."""
    by_name = {}
    for path in files:
        info = dataset_info.read_if_present(os.path.dirname(path))
        listed = {name: split for split, names in (info.files if info else {}).items()
                  for name in names}
        by_name[path] = listed.get(os.path.basename(path), "unknown")
    return sorted(set(by_name.values()))


def _dataset_summary(directory):
    info = dataset_info.read_if_present(directory)
    if not info:
        return None
    return {"name": info.name, "seed": info.details.get("seed"), "counts": info.counts,
            "vggface_weights": info.vggface_weights.get("path"),
            "vggface_random": info.vggface_weights.get("random_init")}
