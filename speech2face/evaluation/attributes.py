"""Attribute agreement between true and reconstructed faces (the paper's demographic table).

The paper classified gender, age and ethnicity of the true face and of the face reconstructed
from speech with a commercial classifier (Face++), out of reach here. Any classifier that meets
`AttributeClassifier` plugs into `evaluation.run_evaluation`; `attribute_table` turns its labels
of the true and the reconstructed faces into agreement, chance agreement and a confusion matrix.
The toy world, whose speakers' latent attributes are known, brings classifiers of its own
(`speech2face.datasets.toy.attributes`), so the table is filled and can be checked against the
truth.
"""

from typing import Dict, Protocol, Sequence, runtime_checkable

import numpy as np

from speech2face import media, records

FACE_SIZE = records.FACE_SIZE  # the classifiers see faces at this size

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
                            "speech2face.evaluation.attributes.AttributeClassifier)")
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
      {"classes", "n", "agreement", "chance_agreement" (percent), "confusion" (counts; rows:
      class of the true face, columns: class of the reconstruction), "confusion_percent" (each
      row normalised to 100 %, as the paper shows them; None for a class no true face has), and
      with `truth` "true_face_vs_truth", "reconstruction_vs_truth" (percent)}.
    """
    k = len(classifier.classes)
    agree, chance, confusion = _agreement(true_labels, recon_labels, k)
    totals = confusion.sum(axis=1)
    out = {"classes": list(classifier.classes), "n": int(len(true_labels)), "agreement": agree,
           "chance_agreement": chance, "confusion": confusion.tolist(),
           "confusion_percent": [(100.0 * row / total).tolist() if total else None
                                 for row, total in zip(confusion, totals)]}
    if truth is not None:
        out["true_face_vs_truth"] = _agreement(truth, true_labels, k)[0]
        out["reconstruction_vs_truth"] = _agreement(truth, recon_labels, k)[0]
    return out


def tables_of(enc, classifiers, batch_size: int = 32):
    """({duration key: `attribute_table`}, F2F table) of an `encode.Encoded`. The F2F table
    compares the true face with the face decoded from v_f (the decoder's "pseudo upper bound"
    of the paper's supplement), for image classifiers; a feature classifier reads v_f for both,
    so its entry is {"reason": ...} instead."""
    true_labels = true_face_labels(enc, classifiers, batch_size)
    by_duration = {key: attribute_table(enc, key, classifiers, true_labels)
                   for key in enc.durations}
    f2f = {c.name: (attribute_agreement(c, true_labels[c.name], enc.f2f_labels[c.name],
                                        _truth(c, enc))
                    if input_kind(c) == "image" else
                    {"reason": "a feature classifier reads v_f itself for the true face and "
                               "for F2F (100 % by construction)"})
           for c in classifiers}
    return by_duration, f2f


def _truth(classifier, enc):
    return (np.asarray(classifier.true_labels(enc.speaker_ids))
            if getattr(classifier, "true_labels", None) is not None else None)


def true_face_labels(enc, classifiers, batch_size: int = 32) -> Dict[str, np.ndarray]:
    """{classifier name: int [N]} of the true faces of an `encode.Encoded`: their JPEG crops
    (resized to 224) or their v_f, per the classifier's input kind."""
    labels = {}
    n = len(enc.v_f)
    for c in classifiers:
        if input_kind(c) == "feature":
            labels[c.name] = predict_labels(c, enc.v_f)
            continue
        missing = [r for r in range(n) if not enc.jpegs.get(r)]
        if missing:
            raise ValueError(f"image attribute classifier {c.name} needs the face JPEGs, but "
                             f"{len(missing)} records have none (e.g. clip "
                             f"{enc.clip_ids[missing[0]]})")
        labels[c.name] = np.concatenate([
            predict_labels(c, media.decode_jpegs(
                [enc.jpegs[r] for r in range(start, min(start + batch_size, n))], FACE_SIZE))
            for start in range(0, n, batch_size)])
    return labels


def attribute_table(enc, key: str, classifiers, true_labels) -> dict:
    """{classifier name: `attribute_agreement`} for the faces reconstructed from v_s at duration
    `key` of an `encode.Encoded`: image classifiers' labels were taken while decoding, feature
    classifiers see v_s itself."""
    out = {}
    for c in classifiers:
        if input_kind(c) == "feature":
            recon = predict_labels(c, enc.v_s[key])
        else:
            recon = enc.decoded_labels[key][c.name]
        out[c.name] = attribute_agreement(c, true_labels[c.name], recon, _truth(c, enc))
    return out
