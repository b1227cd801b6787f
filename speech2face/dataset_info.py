"""Reading a data set's `dataset_info.json`: the file both builders write beside the shards.

Both the toy world (`data_prep.make_toy_world`) and the real-data builder
(`data_prep.build_records`) write it; what every reader needs from it is here, once: the
example counts per split (`counts.<split>.clips`) and the VGG-Face weights the features were
computed with (`vggface_weights.path`, relative to the data set's directory or absolute).
"""

import json
import os
from typing import Optional, Sequence

import tensorflow as tf

FILENAME = "dataset_info.json"


class DatasetInfoError(ValueError):
    """dataset_info.json is missing or lacks what the caller needs."""


def path_for(directory: str) -> str:
    return os.path.join(directory, FILENAME)


def read(directory: str) -> dict:
    """The parsed `dataset_info.json` of the data set in `directory`."""
    path = path_for(directory)
    if not tf.io.gfile.exists(path):
        raise DatasetInfoError(f"{path} not found: build the data set with "
                               "`python -m data_prep.make_toy_world` or "
                               "`python -m data_prep.build_records`")
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetInfoError(f"{path} is not valid JSON: {e}") from e


def read_if_present(directory: str) -> Optional[dict]:
    """`read(directory)`, or None when the data set has no dataset_info.json."""
    return read(directory) if tf.io.gfile.exists(path_for(directory)) else None


def directory_of(files: Sequence[str]) -> str:
    """The data set directory of a list of shards (that of the first one)."""
    return os.path.dirname(files[0])


def num_examples(files: Sequence[str], split: str) -> int:
    """Examples (clips) of `split` in the data set that `files` belong to."""
    directory = directory_of(files)
    info = read(directory)
    try:
        return int(info["counts"][split]["clips"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetInfoError(f"{path_for(directory)} has no counts.{split}.clips: pass the "
                               "number of training steps explicitly (--train_steps)") from e


def vggface_weights(files: Sequence[str]) -> Optional[str]:
    """The VGG-Face weights file the data set was built with, if it names one that exists."""
    directory = directory_of(files)
    path = ((read_if_present(directory) or {}).get("vggface_weights") or {}).get("path")
    if not path:
        return None
    path = path if os.path.isabs(path) or "://" in path else os.path.join(directory, path)
    return path if tf.io.gfile.exists(path) else None
