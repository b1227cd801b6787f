"""A data set's `dataset_info.json`: one typed schema, one writer, one reader.

Both builders (the toy world, `speech2face.datasets.toy.world`, and the real-data builder,
`speech2face.datasets.real.build`) describe what they wrote with a `DatasetInfo` and `write` it
beside the shards, last (its presence means the build finished); every stage reads it with
`read`. What every reader needs is typed here: the example counts per split, the shard files,
the records layout (`schema.LAYOUTS`, docs/data.md) and the spectrogram it stores or its readers
compute, and the VGG-Face weights the features were computed with. What only one
builder knows (the toy world's latent attributes and self-check, the real builder's rejects and
Beam options) sits in `details`.

Version 2 of the file added `layout`. Version 1 files (`info_version: 1`, only spectrogram
layouts) are read with the layout of their `spectrogram.dtype`; files written before version 1
(no `info_version`, the builder's own keys at the top level) are read the same way, with those
keys in `details`.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from speech2face import errors
from speech2face.records import schema

FILENAME = "dataset_info.json"
VERSION = 2
READABLE_VERSIONS = (1, 2)
BUILDERS = ("toy_world", "build_records")


class DatasetInfoError(errors.UserError, ValueError):
    """dataset_info.json is missing, malformed, or lacks what the caller needs."""


@dataclasses.dataclass
class DatasetInfo:
    """The content of `dataset_info.json`.

    Attributes:
      name: a human-readable name of the data set.
      builder: which builder wrote it, one of `BUILDERS`.
      counts: {split: {"clips": int, "speakers": int, ...}}; every split has "clips".
      files: {split: shard file names, relative to the data set's directory}.
      bytes: {split: bytes of its shards}.
      layout: the records layout, one of `schema.LAYOUTS`.
      spectrogram: {"dtype", "shape", "content", "stored"} of the spectrograms: stored in the
        records, or (waveform_int16, "stored": False) computed by their readers.
      vggface_weights: {"path" (relative to the data set's directory, or absolute),
        "random_init" (bool), ...} of the weights v_f was computed with.
      config: the builder's configuration, as a dict.
      build_seconds: wall time of the build.
      details: what only this builder records.
      schema_version: the record schema's version (`schema.SCHEMA_VERSION`).
      info_version: this file's version (`VERSION`).
    """

    name: str = ""
    builder: str = ""
    counts: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=dict)
    files: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    bytes: Dict[str, int] = dataclasses.field(default_factory=dict)
    layout: str = schema.DEFAULT_LAYOUT
    spectrogram: Dict[str, Any] = dataclasses.field(default_factory=dict)
    vggface_weights: Dict[str, Any] = dataclasses.field(default_factory=dict)
    config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    build_seconds: float = 0.0
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = schema.SCHEMA_VERSION
    info_version: int = VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, content: dict, where: str = FILENAME) -> "DatasetInfo":
        """Parses (and checks) the JSON content; `where` names the file in errors."""
        if not isinstance(content, dict):
            raise DatasetInfoError(f"{where}: expected a JSON object")
        version = content.get("info_version")
        content = dict(content)
        if version is None:  # before version 1: the builder's own keys at the top level
            content.setdefault("builder", "toy_world" if "self_check" in content
                               else "build_records")
            names = {f.name for f in dataclasses.fields(cls)}
            content["details"] = {k: content.pop(k) for k in list(content) if k not in names}
        elif version not in READABLE_VERSIONS:
            raise DatasetInfoError(f"{where}: info_version {version} is not supported (this "
                                   "version of speech2face reads versions "
                                   f"{', '.join(map(str, READABLE_VERSIONS))})")
        if version != VERSION:  # before version 2: a spectrogram layout, named by its dtype
            dtype = (content.get("spectrogram") or {}).get("dtype", schema.DEFAULT_SPECTROGRAM_DTYPE)
            content["layout"], content["info_version"] = f"spectrogram_{dtype}", VERSION
        try:
            schema.check_layout(content.get("layout", schema.DEFAULT_LAYOUT))
            info = cls(**content)
        except schema.RecordError as e:
            raise DatasetInfoError(f"{where}: {e}") from e
        except TypeError as e:
            raise DatasetInfoError(f"{where}: not a dataset_info.json ({e})") from e
        for split, c in info.counts.items():
            if not isinstance(c, dict) or not isinstance(c.get("clips"), int):
                raise DatasetInfoError(f"{where}: counts.{split}.clips is missing")
        return info

    def write(self, directory: str) -> str:
        """Writes `directory/dataset_info.json` (under a .tmp name, then renamed); its path."""
        path = path_for(directory)
        with tf.io.gfile.GFile(path + ".tmp", "w") as f:
            f.write(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
        return path

    def weights_path(self, directory: str) -> Optional[str]:
        """The VGG-Face weights file, resolved against the data set's `directory` (None if the
        file names none)."""
        path = self.vggface_weights.get("path")
        if not path:
            return None
        return path if os.path.isabs(path) or "://" in path else os.path.join(directory, path)


def path_for(directory: str) -> str:
    return os.path.join(directory, FILENAME)


def read(directory: str) -> DatasetInfo:
    """The `DatasetInfo` of the data set in `directory`."""
    path = path_for(directory)
    if not tf.io.gfile.exists(path):
        raise DatasetInfoError(f"{path} not found: build the data set with "
                               "`python -m data_prep.make_toy_world` or "
                               "`python -m data_prep.build_records`")
    try:
        with tf.io.gfile.GFile(path) as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetInfoError(f"{path} is not valid JSON: {e}") from e
    return DatasetInfo.from_dict(content, path)


def read_if_present(directory: str) -> Optional[DatasetInfo]:
    """`read(directory)`, or None when the data set has no dataset_info.json."""
    return read(directory) if tf.io.gfile.exists(path_for(directory)) else None


def directory_of(files: Sequence[str]) -> str:
    """The data set directory of a list of shards (that of the first one)."""
    return os.path.dirname(files[0])


def num_examples(files: Sequence[str], split: str) -> int:
    """Examples (clips) of `split` in the data set that `files` belong to."""
    directory = directory_of(files)
    info = read(directory)
    if split not in info.counts:
        raise DatasetInfoError(f"{path_for(directory)} has no counts.{split}.clips: pass the "
                               "number of training steps explicitly (--train_steps)")
    return int(info.counts[split]["clips"])


def vggface_weights(files: Sequence[str]) -> Optional[str]:
    """The VGG-Face weights file the data set was built with, if it names one that exists."""
    directory = directory_of(files)
    info = read_if_present(directory)
    path = info.weights_path(directory) if info else None
    return path if path and tf.io.gfile.exists(path) else None
