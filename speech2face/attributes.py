"""Attribute agreement between true and reconstructed faces (the paper's demographic table).

The paper classified gender, age and ethnicity of the true face and of the face reconstructed
from speech with a commercial classifier (Face++), out of reach here. Any classifier that meets
`AttributeClassifier` plugs into `evaluation.run_evaluation`; `attribute_agreement` turns its
labels into agreement, chance agreement and a confusion matrix. For the toy world, whose speakers'
latent attributes are known (`speakers.json`), `toy_attribute_classifiers` fits linear probes
from train v_f to the latents and bins them into classes, so the table is filled and can be
checked against the truth.
"""

import json
import os
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from speech2face import data, dataset_info, probe

TOY_SPEAKERS_FILE = "speakers.json"  # written by data_prep.toy_world_lib


@runtime_checkable
class AttributeClassifier(Protocol):
    """What evaluation needs of an attribute classifier (gender, age, ethnicity, ...).

    Attributes:
      name: the attribute, e.g. "gender".
      classes: class names; label i means classes[i].
      input_kind: "image" (the default when absent): `predict` gets faces, float32
        [N, 224, 224, 3] RGB in [0, 1] (the true face crops, and the reconstructions resized
        from the decoder's resolution); "feature": it gets face features, float32 [N, 4096]
        (v_f for the true face, v_s for the reconstruction).

    Optionally `true_labels(speaker_ids) -> int [N] or None` (known ground truth, e.g. the toy
    world's latents), and `description` (one line for the report).
    """

    name: str
    classes: Sequence[str]
    input_kind: str

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """[N, ...] faces or features -> int labels [N] in [0, len(classes))."""


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
            raise ValueError(f"speakers {missing[:3]} are not in {TOY_SPEAKERS_FILE}")
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
    with open(os.path.join(world_dir, TOY_SPEAKERS_FILE)) as f:
        speakers = {s["speaker_id"]: s["latents"] for s in json.load(f)}
    info = dataset_info.read_if_present(world_dir) or {}
    carried = {a["name"]: a["carried_by"] for a in info.get("attributes", [])}
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
        raise ValueError(f"{world_dir}/{TOY_SPEAKERS_FILE} has none of the latents "
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


def check_classifiers(classifiers) -> list:
    """A classifier or a sequence of them -> a list, each checked; raises TypeError if not one."""
    if classifiers is None:
        return []
    if hasattr(classifiers, "predict"):
        classifiers = [classifiers]
    out = list(classifiers)
    for c in out:
        missing = [a for a in ("name", "classes", "predict") if not hasattr(c, a)]
        if missing:
            raise TypeError(f"{c!r} is not an attribute classifier: it lacks {missing} (see "
                            "speech2face.attributes.AttributeClassifier)")
        if getattr(c, "input_kind", "image") not in ("image", "feature"):
            raise TypeError(f"attribute classifier {c.name}: input_kind must be 'image' or "
                            f"'feature'; got {c.input_kind!r}")
    if len({c.name for c in out}) < len(out):
        raise ValueError(f"attribute classifiers need distinct names; got {[c.name for c in out]}")
    return out


def input_kind(classifier) -> str:
    return getattr(classifier, "input_kind", "image")


def predict_labels(classifier, inputs) -> np.ndarray:
    """`classifier.predict(inputs)` checked: int64 [N] labels in [0, len(classes))."""
    labels = np.asarray(classifier.predict(inputs))
    if (labels.shape != (len(inputs),) or labels.dtype.kind not in "iu"
            or (labels.size and not 0 <= labels.min() <= labels.max() < len(classifier.classes))):
        raise ValueError(f"attribute classifier {classifier.name}: predict must return int "
                         f"labels [{len(inputs)}] in [0, {len(classifier.classes)}); got "
                         f"{labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def _agreement(a, b, num_classes):
    """Agreement %, chance agreement % (same marginals, independent) and confusion [a, b]."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (a, b), 1)
    n = max(len(a), 1)
    chance = float((confusion.sum(1) * confusion.sum(0)).sum()) / n**2
    return 100.0 * float(np.trace(confusion)) / n, 100.0 * chance, confusion


def attribute_agreement(classifier, true_labels, recon_labels, truth=None) -> dict:
    """The paper's attribute table for one classifier and one input duration.

    Args:
      classifier: an `AttributeClassifier` (for its name and classes).
      true_labels, recon_labels: int [N], the classes of the true and the reconstructed faces.
      truth: optional int [N] known classes (toy world).

    Returns:
      {"classes", "n", "agreement", "chance_agreement" (percent), "confusion" (rows: class of
      the true face, columns: class of the reconstruction), and with `truth` "true_face_vs_truth",
      "reconstruction_vs_truth" (percent)}.
    """
    k = len(classifier.classes)
    agree, chance, confusion = _agreement(true_labels, recon_labels, k)
    out = {"classes": list(classifier.classes), "n": int(len(true_labels)), "agreement": agree,
           "chance_agreement": chance, "confusion": confusion.tolist()}
    if truth is not None:
        out["true_face_vs_truth"] = _agreement(truth, true_labels, k)[0]
        out["reconstruction_vs_truth"] = _agreement(truth, recon_labels, k)[0]
    return out


