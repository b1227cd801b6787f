"""dataset_info.json, read once for every stage: counts and the VGG-Face weights."""

import json
import os

import pytest

from speech2face.records import dataset_info


def _write(directory, info):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, dataset_info.FILENAME), "w") as f:
        json.dump(info, f)
    return [os.path.join(directory, "train-00000-of-00001.tfrecord")]


def test_counts_and_weights(tmp_path):
    (tmp_path / "weights.h5").write_bytes(b"x")
    files = _write(tmp_path, {"counts": {"train": {"clips": 12}, "test": {"clips": 3}},
                              "vggface_weights": {"path": "weights.h5"}})
    assert dataset_info.num_examples(files, "train") == 12
    assert dataset_info.num_examples(files, "test") == 3
    assert dataset_info.vggface_weights(files) == str(tmp_path / "weights.h5")


def test_missing_and_incomplete_are_clear_errors(tmp_path):
    files = [str(tmp_path / "none" / "train-00000-of-00001.tfrecord")]
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


def test_typed_round_trip_and_versions(tmp_path):
    info = dataset_info.DatasetInfo(
        name="a", builder="toy_world", counts={"train": {"clips": 4, "speakers": 2}},
        files={"train": ["train-00000-of-00001.tfrecord"]}, bytes={"train": 10},
        vggface_weights={"path": "w.h5", "random_init": True}, details={"seed": 3})
    path = info.write(str(tmp_path))
    assert path == str(tmp_path / dataset_info.FILENAME) and not os.path.exists(path + ".tmp")
    again = dataset_info.read(str(tmp_path))
    assert again == info and again.info_version == dataset_info.VERSION
    assert again.weights_path(str(tmp_path)) == str(tmp_path / "w.h5")
    with open(path) as f:
        content = json.load(f)
    content["info_version"] = dataset_info.VERSION + 1
    with pytest.raises(dataset_info.DatasetInfoError, match="info_version 3 is not supported"):
        dataset_info.DatasetInfo.from_dict(content)


def test_files_from_before_the_version_are_read(tmp_path):
    """A file without info_version (the builder's own keys at the top) still reads: those keys
    land in `details`."""
    files = _write(tmp_path, {"name": "old", "seed": 0, "self_check": {},
                              "counts": {"train": {"clips": 5}}, "attributes": []})
    info = dataset_info.read(str(tmp_path))
    assert info.builder == "toy_world" and info.details == {"seed": 0, "self_check": {},
                                                           "attributes": []}
    assert dataset_info.num_examples(files, "train") == 5


def test_version_1_files_read_with_the_layout_of_their_dtype(tmp_path):
    """info_version 1 had no `layout`: its spectrogram dtype names it; a bad layout is an error
    naming the file."""
    _write(tmp_path, {"info_version": 1, "counts": {"train": {"clips": 5}},
                      "spectrogram": {"dtype": "float32", "shape": [598, 257, 2]}})
    info = dataset_info.read(str(tmp_path))
    assert info.layout == "spectrogram_float32" and info.info_version == dataset_info.VERSION
    _write(tmp_path, {"info_version": 2, "counts": {"train": {"clips": 5}}, "layout": "flac"})
    with pytest.raises(dataset_info.DatasetInfoError, match="dataset_info.json: records layout "
                                                            "'flac' is not one of"):
        dataset_info.read(str(tmp_path))
