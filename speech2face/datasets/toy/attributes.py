"""Attribute classifiers for the toy world, whose speakers' latent attributes are known.

`toy_attribute_classifiers` fits linear probes from train v_f to the latents in `speakers.json`
and bins them into classes, so the paper's attribute table (`speech2face.evaluation.attributes`)
is filled on the toy world and can be checked against the truth; `classifiers_for` gives them
for records that sit in a toy world, and None for any other data set.
"""

import json
import os
from typing import Optional

import numpy as np

from speech2face import data
from speech2face.evaluation import probe
from speech2face.datasets.toy.speakers import SPEAKERS_FILE
from speech2face.records import dataset_info


# Toy-world attributes shown: latent -> class names (two: split at 0; three: tertiles). The
# first four are carried by voice and face; skin_tone only by the face, so its agreement should
# sit at chance: a negative control.
TOY_ATTRIBUTES = {
    "masculinity": ("feminine", "masculine"),
    "age": ("younger", "middle", "older"),
    "head_size": ("smaller", "middle", "larger"),
    "nasality": ("lower", "middle", "higher"),
    "skin_tone": ("darker", "middle", "lighter"),
}


class ToyLatentClassifier:
    """A feature classifier for one toy-world latent: a ridge probe, binned into classes.

    Two classes split at 0 (masculinity is a mixture with modes at ±1, like sex); three split
    at the tertiles, of the probe's predictions on train v_f for `predict` (ridge predictions
    are shrunk, so the true latents' tertiles would put too many faces in the middle) and of
    the train speakers' true latents for `true_labels`.
    """

    input_kind = "feature"

    def __init__(self, name, classes, probe_fn, train_predictions, train_latents, latents,
                 carried_by=None):
        self.name = name
        self.classes = tuple(classes)
        self._probe_fn = probe_fn
        self._latents = latents  # speaker_id -> value
        if len(self.classes) == 2:
            self._cuts = self._latent_cuts = np.zeros(1)
        else:
            q = np.linspace(0, 1, len(self.classes) + 1)[1:-1]
            self._cuts = np.quantile(train_predictions, q)
            self._latent_cuts = np.quantile(train_latents, q)
        self.description = (f"ridge probe from train v_f to the latent `{name}`"
                            + (f" (carried by {carried_by})" if carried_by else "")
                            + ", binned: " + ("sign" if len(self.classes) == 2 else "tertiles"))

    def predict(self, inputs):
        return np.searchsorted(self._cuts, self._probe_fn(inputs), side="right")

    def true_labels(self, speaker_ids):
        missing = [s for s in speaker_ids if s not in self._latents]
        if missing:
            raise ValueError(f"speakers {missing[:3]} are not in {SPEAKERS_FILE}")
        values = np.array([self._latents[s] for s in speaker_ids])
        return np.searchsorted(self._latent_cuts, values, side="right")


def toy_attribute_classifiers(world_dir: str, train_records: Optional[str] = None,
                              attributes=None, batch_size: int = 64):
    """Fitted `ToyLatentClassifier`s for a toy world (its `speakers.json` holds the latents).

    Args:
      world_dir: the toy world's directory.
      train_records: glob of the records to fit on (default: `world_dir/train-*.tfrecord`);
        their speakers must be disjoint from the evaluated ones for honest numbers.
      attributes: {latent: class names}; default `TOY_ATTRIBUTES`.
      batch_size: of the pass over the train records.
    """
    attributes = dict(attributes or TOY_ATTRIBUTES)
    with open(os.path.join(world_dir, SPEAKERS_FILE)) as f:
        speakers = {s["speaker_id"]: s["latents"] for s in json.load(f)}
    info = dataset_info.read_if_present(world_dir)
    carried = {a["name"]: a["carried_by"]
               for a in (info.details.get("attributes", []) if info else [])}
    pattern = train_records or os.path.join(world_dir, "train-*.tfrecord")
    features, speaker_ids = [], []
    for batch in data.input_fn(pattern, None, batch_size, False,
                               data.InputOptions(with_spectrogram=False)):
        features.append(batch["face_feature"].numpy())
        speaker_ids.extend(s.decode("utf-8") for s in batch["speaker_id"].numpy())
    features = np.concatenate(features)
    if len(set(speaker_ids)) < 3:
        raise ValueError(f"{pattern}: the attribute probes need at least 3 train speakers")
    names = [n for n in attributes if all(n in v for v in speakers.values())]
    if not names:
        raise ValueError(f"{world_dir}/{SPEAKERS_FILE} has none of the latents "
                         f"{list(attributes)}")
    targets = np.array([[speakers[s][n] for n in names] for s in speaker_ids], np.float64)
    # One multi-target fit (one SVD); folds by speaker, whose clips share faces.
    fitted = probe.fit_ridge(features, targets, groups=np.array(speaker_ids))
    train_predictions = fitted.predict(features)
    return [
        ToyLatentClassifier(
            name, attributes[name], lambda x, j=j: fitted.predict(x)[:, j],
            train_predictions[:, j], targets[:, j], {s: v[name] for s, v in speakers.items()},
            carried.get(name))
        for j, name in enumerate(names)
    ]


def classifiers_for(records_dir: str, train_records: Optional[str] = None):
    """The toy classifiers when `records_dir` is a toy world (it has `speakers.json`), else
    None."""
    if not os.path.exists(os.path.join(records_dir, SPEAKERS_FILE)):
        return None
    return toy_attribute_classifiers(records_dir, train_records)
