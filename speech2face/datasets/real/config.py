"""The real-data builder's configuration: one dataclass, read by every stage of the pipeline
(`build`, `clips`, `shards`) and written into dataset_info.json."""

import dataclasses
import math
import os
from typing import Optional

import tensorflow as tf

from speech2face.datasets.real import faces, manifests
from speech2face import records

DEFAULT_TEST_FRACTION = 0.08  # the paper's 0.15 M test / 1.85 M pairs
# The range of each integer setting (`BuildConfig.validate`; None: no upper bound). Each dlib
# upsampling doubles the detection image's side: past 4 a 640 px frame would need gigabytes.
_RANGES = {"vgg_batch_size": (1, None), "face_tries": (1, None), "target_shard_bytes": (1, None),
           "upsample": (0, 4), "max_detect_side": (64, None), "min_face_size": (1, None),
           "tf_threads": (0, None)}


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build depends on (written into dataset_info.json).

    Attributes:
      manifest: manifest file (see `manifests`); None only for voxceleb2 (the tree is listed).
      manifest_format: "avspeech", "voxceleb2" or "pairs".
      media_dir: where the manifest's relative paths point (local, or gs:// etc. on a runner).
      output_dir: the records' directory; must be empty unless `overwrite`.
      vggface_weights: rcmalli_vggface_tf_vgg16.h5 (required unless `random_weights_for_tests`;
        download it yourself: docs/vggface.md).
      random_weights_for_tests: FOR TESTS ONLY: allow seeded random VGG-Face weights: with
        vggface_weights None they are written to output_dir; either way dataset_info.json
        marks the features random.
      test_fraction: share of speakers (by hash) in the test split, in [0, 1]; None: 0.08, the
        paper's 0.15 M test / 1.85 M pairs. Must stay unset with test_manifest (then no
        fraction is drawn).
      test_manifest: a second manifest of manifest_format whose rows all go to the test split,
        while all of manifest's go to train (AVSpeech: avspeech_test.csv beside
        avspeech_train.csv); train rows whose speaker is also in it are rejected
        (speaker_in_test). None: the split is the speaker hash of test_fraction.
      detector, upsample, max_detect_side, min_face_size, face_tries: see `faces.FaceFinder`;
        face_tries frames are tried around the segment's middle, 0.5 s apart.
      detect_near_hint: with the CNN detector and a face hint (AVSpeech), scan a window around
        the hinted face first and the whole frame only where that window does not settle it
        (`faces.FaceFinder.detect_near_hint`: the same faces, ~8× less detection time on
        640×360 frames, docs/performance.md).
      min_seconds: shorter clips are rejected (`too_short`).
      max_seconds: longer clips keep their first max_seconds (the stored waveform).
      records_layout: one of `records.LAYOUTS` (docs/data.md, "Record layouts"):
        spectrogram_float16 (0.6 MB of spectrogram per example), spectrogram_float32, or
        waveform_int16 (no spectrogram: readers compute it from the stored waveform).
      store_waveform: also store the clip (tiled to >= 6 s) as int16, for random-crop training
        (waveform_int16 needs it).
      vgg_batch_size: faces per VGG-Face forward pass.
      tf_threads: TensorFlow intra-op threads per worker for VGG-Face; 0 keeps TF's default
        (all cores), which oversubscribes the CPU when every core runs a worker. None: cores /
        workers on the multi-processing DirectRunner, else 0 (on Dataflow, which runs a
        process per vCPU, pass 1).
      target_shard_bytes: a shard is closed once it holds this many bytes (100-200 MB);
        each worker bundle also ends with one smaller shard per split.
      overwrite: replace a previous build in output_dir (its files only, and only once the new
        build has finished with at least one example; other files are kept).
      command_line: recorded in dataset_info.json.
    """

    manifest: Optional[str]
    manifest_format: str
    media_dir: str
    output_dir: str
    vggface_weights: Optional[str]
    random_weights_for_tests: bool = False
    test_fraction: Optional[float] = None
    test_manifest: Optional[str] = None
    detector: str = "cnn"
    upsample: int = 0
    max_detect_side: int = faces.DEFAULT_MAX_DETECT_SIDE
    min_face_size: int = faces.DEFAULT_MIN_FACE_SIZE
    face_tries: int = 3
    detect_near_hint: bool = True
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    records_layout: str = records.DEFAULT_LAYOUT
    store_waveform: bool = True
    vgg_batch_size: int = 16
    tf_threads: Optional[int] = None
    target_shard_bytes: int = 150 * 2**20
    overwrite: bool = False
    command_line: str = ""

    def validate(self):
        if self.manifest_format not in manifests.FORMATS:
            raise ValueError(f"manifest_format must be one of {manifests.FORMATS}, got "
                             f"{self.manifest_format!r}")
        if self.manifest is None and self.manifest_format != "voxceleb2":
            raise ValueError(f"--manifest is required for the {self.manifest_format} format")
        if self.manifest is not None:
            manifests.check_manifest_file(self.manifest)
        if self.test_manifest is not None:
            if self.manifest is None:
                raise ValueError(f"--test_manifest {self.test_manifest} needs --manifest too "
                                 "(the train rows)")
            if self.test_fraction is not None:
                raise ValueError(
                    f"give --test_fraction or --test_manifest, not both: with --test_manifest "
                    f"{self.test_manifest} its rows are the test split and --manifest's the "
                    "train split, so no fraction is drawn")
            if os.path.abspath(self.test_manifest) == os.path.abspath(self.manifest):
                raise ValueError(f"--manifest and --test_manifest are the same file "
                                 f"{self.manifest}: give the train rows and the test rows")
            manifests.check_manifest_file(self.test_manifest, "test_manifest")
        if not tf.io.gfile.isdir(self.media_dir):
            raise FileNotFoundError(f"media_dir {self.media_dir} is not a directory")
        if not 0.0 <= self.hash_test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if self.detector not in faces.DETECTORS:
            raise ValueError(f"detector must be one of {faces.DETECTORS}, got {self.detector!r}")
        if self.records_layout not in records.LAYOUTS:
            raise ValueError(f"records_layout must be one of {records.LAYOUTS}, got "
                             f"{self.records_layout!r}")
        if self.records_layout == records.WAVEFORM_LAYOUT and not self.store_waveform:
            raise ValueError(f"records_layout {records.WAVEFORM_LAYOUT} stores only the "
                             "waveform: it needs --store_waveform")
        if not 0.1 <= self.min_seconds <= self.max_seconds < math.inf:
            raise ValueError(f"need 0.1 <= min_seconds <= max_seconds (finite), got "
                             f"{self.min_seconds}, {self.max_seconds}")
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= (high if high is not None else value):
                bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"{name} must be {bounds}, got {value}")

    @property
    def hash_test_fraction(self) -> float:
        """The test_fraction the speaker hash uses (without test_manifest)."""
        return DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction

    @property
    def split_by_manifest(self) -> bool:
        """True when the manifests fix the split (test_manifest given), not the speaker hash."""
        return self.test_manifest is not None
