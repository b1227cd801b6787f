"""dataset_info.json, read once for every stage: counts and the VGG-Face weights."""

import json
import os

import pytest

from speech2face import dataset_info


def _write(directory, info):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, dataset_info.FILENAME), "w") as f:
        json.dump(info, f)
    return [os.path.join(directory, "train-00000.tfrecord")]


def test_counts_and_weights(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"x")
    files = _write(tmp_path, {"counts": {"train": {"clips": 12}, "test": {"clips": 3}},
                              "vggface_weights": {"path": "weights.h5"}})
    assert dataset_info.num_examples(files, "train") == 12
    assert dataset_info.num_examples(files, "test") == 3
    assert dataset_info.vggface_weights(files) == str(tmp_path / "weights.h5")


def test_missing_and_incomplete_are_clear_errors(tmp_path):
    files = [str(tmp_path / "none" / "train-00000.tfrecord")]
    with pytest.raises(dataset_info.DatasetInfoError, match="dataset_info.json not found"):
        dataset_info.num_examples(files, "train")
    assert dataset_info.vggface_weights(files) is None
    files = _write(tmp_path / "partial", {"vggface_weights": {"path": "gone.h5"}})
    with pytest.raises(dataset_info.DatasetInfoError, match="no counts.train.clips.*--train_steps"):
        dataset_info.num_examples(files, "train")
    assert dataset_info.vggface_weights(files) is None  # named but missing on disk
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / dataset_info.FILENAME).write_text("{")
    with pytest.raises(dataset_info.DatasetInfoError, match="not valid JSON"):
        dataset_info.read(str(tmp_path / "bad"))
