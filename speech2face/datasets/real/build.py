"""Real data to records: AVSpeech, VoxCeleb2 or a pairs CSV -> TFRecord shards, with
Apache Beam, on one machine (DirectRunner, several processes) or on any Beam runner.

    manifest lines (or the VoxCeleb2 tree)               (rows.parse_items)
      -> Clip | Reject             manifests.parse_or_reject (a line not UTF-8: malformed_row)
      -> one Clip per clip id      rows._DropDuplicates: repeated rows are rejected
                                   (duplicate_row), the test manifest's row kept if it has one
     [-> Clip | Reject             with --test_manifest: its rows are the test split, the
                                   manifest's the train split; rows._DropSpeakersInTest rejects
                                   the train rows of speakers in the test manifest]
      -> Reshuffle                 spreads the clips over the workers
      -> Prepared | Reject         _PrepareClip -> clips.prepare_clip: probe, audio segment
                                   -> 6 s -> spectrogram; frame -> dlib face -> 224 crop, 68
                                   landmarks, JPEG
      -> batches of vgg_batch_size (a bundle's last one smaller)
      -> (split, Example)          _FaceFeatures: VGG-Face fc7 of the stored JPEGs; the split
                                   (the clip's, from its manifest, else the speaker hash)
      -> shard files               shards.WriteShards: per split per bundle, ~150 MB
                                   each, in <build dir>/.incomplete/
      -> committed shards          named, then renamed into the build dir (shards)
    rejects -> rejects.jsonl;  shard summaries + rejects -> dataset_info.json (written last)
    the build dir (output_dir/.build-<id>) -> output_dir, if it holds an example

Everything up to the shard files is one fused stage: examples (~0.9 MB each) are never
shuffled or held in memory by the runner, so a local run's memory does not grow with the data.
The output directory's files are described in `shards`.

Bad input never stops the job: every per-clip failure becomes a `Reject` with a reason from
`manifests.REASONS` (an unexpected exception too, as `processing_error`), counted in Beam
metrics (namespace `shards.METRICS_NAMESPACE`) and in dataset_info.json.
"""

import dataclasses
import hashlib
import os
import shutil
import tempfile
import time
import traceback
from typing import Optional

import apache_beam as beam
import h5py
import numpy as np
import tensorflow as tf

from speech2face.datasets.real import clips, faces, manifests, rows, runners, shards
from speech2face.datasets.real.config import BuildConfig
from speech2face.datasets.real.shards import METRICS_NAMESPACE
from speech2face.records import dataset_info
from speech2face.datasets.real.manifests import Reason, SkipClip
from speech2face import media, records
from speech2face.models import vggface


# ----------------------------------------------------------------------------------------------
# Checks before any work


def check_weights(path: Optional[str]) -> str:
    """Raises vggface.WeightsFileError unless `path` is a full (with fc7) VGG-Face .h5 file."""
    url = vggface.WEIGHTS_URLS["rcmalli_vggface_tf_vgg16.h5"]
    if not path:
        raise vggface.WeightsFileError(
            "--vggface_weights is required: the face features are VGG-Face fc7, from the "
            f"rcmalli_vggface_tf_vgg16.h5 weights file. Download it ({url}) and pass its path; "
            "nothing is downloaded for you.")
    if not tf.io.gfile.exists(path):
        raise vggface.WeightsFileError(
            f"VGG-Face weights file {path!r} not found. Pass the path to a local copy of "
            f"rcmalli_vggface_tf_vgg16.h5, downloaded from {url}.")
    if "://" in path:
        return path  # checked in full by each worker when it loads the file
    if not h5py.is_hdf5(path):
        raise vggface.WeightsFileError(f"VGG-Face weights file {path!r} is not an HDF5 file "
                                       "(a truncated download?); expected "
                                       "rcmalli_vggface_tf_vgg16.h5.")
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "fc7" not in root:
            raise vggface.WeightsFileError(
                f"VGG-Face weights file {path!r} has no fc7 layer (the no-top file?). The face "
                f"features need the full rcmalli_vggface_tf_vgg16.h5 ({url}).")
    return path


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        for block in iter(lambda: f.read(8 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_for(speaker_id: str, test_fraction: float) -> str:
    """"test" when sha1(speaker_id), read as a fraction of 2^64, is below test_fraction.

    Stable across runs, machines and data-set sizes (adding clips never moves a speaker), and
    speaker-disjoint by construction.
    """
    digest = hashlib.sha1(speaker_id.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction else "train"


# ----------------------------------------------------------------------------------------------
# Beam transforms


class _PrepareClip(beam.DoFn):
    """Clip -> Prepared, or a Reject; the dlib models load once per worker (setup)."""

    def __init__(self, config: BuildConfig):
        self._config = config

    def setup(self):
        c = self._config
        self._finder = faces.FaceFinder(c.detector, c.upsample, c.max_detect_side,
                                        c.min_face_size, near_hint=c.detect_near_hint)

    def process(self, clip: manifests.Clip):
        try:
            prepared = clips.prepare_clip(clip, self._finder, self._config)
        except SkipClip as e:
            rows.reject_counter(e.reason).inc()
            yield beam.pvalue.TaggedOutput(rows.REJECTS_TAG, manifests.Reject(
                clip.clip_id, e.reason, str(e), clip.source, clip.speaker_id, clip.split or ""))
            return
        except Exception as e:  # pylint: disable=broad-except
            # One bad clip must not stop a million-clip job: record it, keep going.
            detail = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)[-600:]}"
            rows.reject_counter(Reason.PROCESSING_ERROR).inc()
            yield beam.pvalue.TaggedOutput(rows.REJECTS_TAG, manifests.Reject(
                clip.clip_id, Reason.PROCESSING_ERROR, detail, clip.source, clip.speaker_id,
                clip.split or ""))
            return
        yield prepared


class _FaceFeatures(beam.DoFn):
    """Batch of Prepared -> (split, records.Example); VGG-Face loads once per worker (setup)."""

    def __init__(self, weights: str, batch_size: int, test_fraction: float, tf_threads: int):
        self._weights, self._batch_size = weights, batch_size
        self._test_fraction, self._tf_threads = test_fraction, tf_threads

    def setup(self):
        if self._tf_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self._tf_threads)
                tf.config.threading.set_inter_op_parallelism_threads(self._tf_threads)
            except RuntimeError:  # TF already running in this process (in_memory mode): keep it
                pass
        self._tmp = None
        weights = self._weights
        if "://" in weights:  # h5py reads local files only
            self._tmp = tempfile.mkdtemp(prefix="s2f_vggface_")
            weights = os.path.join(self._tmp, os.path.basename(self._weights))
            tf.io.gfile.copy(self._weights, weights)
        self._extractor = vggface.FaceFeatureExtractor(weights, self._batch_size, log_every=0)

    def teardown(self):
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)

    def process(self, batch):
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "face_batches").inc()
        features = self._extractor(np.stack([media.decode_jpeg(p.face_jpeg) for p in batch]))
        for p, feature in zip(batch, features):
            split = p.clip.split or split_for(p.clip.speaker_id, self._test_fraction)
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"examples_{split}").inc()
            yield split, records.Example(
                spectrogram=p.spectrogram, face_feature=feature, speaker_id=p.clip.speaker_id,
                clip_id=p.clip.clip_id, source=p.clip.source, face_jpeg=p.face_jpeg,
                landmarks=p.landmarks, waveform=p.waveform)


# ----------------------------------------------------------------------------------------------
# The pipeline


def build_pipeline(pipeline, config: BuildConfig, weights: str, run_info: dict,
                   start_time: float, tf_threads: int = 0,
                   directory: Optional[str] = None) -> None:
    """Adds the whole build to `pipeline` (see the module docstring), writing into `directory`
    (the build directory; default config.output_dir)."""
    directory = directory or config.output_dir
    clips_in, parse_rejects = rows.parse_items(pipeline, config)
    prepared = (clips_in
                | "SpreadClips" >> beam.Reshuffle()
                | "PrepareClip" >> beam.ParDo(_PrepareClip(config))
                .with_outputs(rows.REJECTS_TAG, main="prepared"))
    examples = (prepared.prepared
                # Full batches (but the last of a bundle): the extractor pads every batch to
                # vgg_batch_size, so a batch of one costs as much as a full one.
                | "BatchFaces" >> beam.BatchElements(min_batch_size=config.vgg_batch_size,
                                                     max_batch_size=config.vgg_batch_size)
                | "FaceFeatures" >> beam.ParDo(_FaceFeatures(weights, config.vgg_batch_size,
                                                             config.hash_test_fraction,
                                                             tf_threads)))
    committed = (examples
              | "WriteShards" >> beam.ParDo(shards.WriteShards(directory,
                                                         config.target_shard_bytes,
                                                         config.records_layout))
              | "AllShards" >> beam.combiners.ToList()
              | "NameShards" >> beam.FlatMap(shards.plan_names)
              | "SpreadCommits" >> beam.Reshuffle()
              | "CommitShards" >> beam.Map(shards.commit_shard, directory))
    rejects = ((*parse_rejects, prepared[rows.REJECTS_TAG])
               | "AllRejects" >> beam.Flatten())
    rejects_files = (rejects
                     | "RejectJson" >> beam.Map(lambda r: r.to_json())
                     | "WriteRejects" >> beam.io.WriteToText(
                         os.path.join(directory, shards.REJECTS), num_shards=1,
                         shard_name_template=""))
    _ = ((committed, rejects)
         | "Outcomes" >> beam.Flatten()
         | "Count" >> beam.CombineGlobally(shards.InfoCombineFn())
         # The rejects file as a side input makes this step wait until it is complete.
         | "WriteInfo" >> beam.Map(shards.write_dataset_info, beam.pvalue.AsList(rejects_files),
                                   config, run_info, start_time, directory))


@dataclasses.dataclass
class BuildResult:
    """What a finished build reports: its `DatasetInfo` (dataset_info.json), and the Beam metric
    counters of namespace METRICS_NAMESPACE summed over steps (`rejected_<reason>`,
    `examples_<split>`, `shards_written`, with test_manifest `speakers_in_both_manifests`;
    empty where the runner does not report metrics)."""

    info: dataset_info.DatasetInfo
    counters: dict


class EmptyBuildError(ValueError):
    """A build that finished without writing one example; the message says why and where its
    rejects are (output_dir is left as it was)."""


def build_records(config: BuildConfig, options=None) -> BuildResult:
    """Checks everything cheap first, then runs the pipeline to the end.

    The build is written beside output_dir's contents (`shards.start_build`) and moved into it
    at the end (`shards.commit_build`, which with `overwrite` replaces a previous build then):
    a build that fails, or writes no example, leaves output_dir as it was.

    Raises (before any work): vggface.WeightsFileError (no or bad weights), FileExistsError
    (output_dir not empty and not `overwrite`, or a file), PermissionError (output_dir not
    writable), FileNotFoundError / ValueError (bad config or Beam options). After the run:
    EmptyBuildError (no example written; the build directory with its rejects is kept).
    """
    start_time = time.time()
    config.validate()
    weights = config.vggface_weights
    if weights is None and not config.random_weights_for_tests:
        check_weights(None)
    if weights is not None:
        check_weights(weights)
    shards.check_output_dir(config.output_dir, config.overwrite)
    options = options if options is not None else runners.pipeline_options()
    beam_info = runners.describe(options)
    created = not tf.io.gfile.isdir(config.output_dir)
    build_dir = shards.start_build(config.output_dir)
    try:
        result, info = _run(config, options, beam_info, build_dir, weights, start_time)
    except BaseException:
        shards.discard_build(config.output_dir, build_dir, created)
        raise
    if not sum(c["clips"] for c in info.counts.values()):
        random_weights = os.path.join(build_dir, "vggface_random_seed0.h5")
        if config.vggface_weights is None and tf.io.gfile.exists(random_weights):
            tf.io.gfile.remove(random_weights)  # 553 MiB; the rejects are what is kept
        raise EmptyBuildError(_nothing_built(info, config, build_dir, created))
    shards.commit_build(config.output_dir, build_dir, config.overwrite)
    return BuildResult(info=dataset_info.read(config.output_dir),
                       counters=runners.counters(result, METRICS_NAMESPACE))


def _run(config: BuildConfig, options, beam_info: dict, build_dir: str, weights: Optional[str],
         start_time: float):
    """Runs the pipeline into `build_dir`: (Beam result, the DatasetInfo it wrote)."""
    if weights is None:
        weights = os.path.join(build_dir, "vggface_random_seed0.h5")
        vggface.random_vggface_weights(weights, seed=0)
    random_init = config.random_weights_for_tests
    weights_info = {
        "path": os.path.basename(weights) if config.vggface_weights is None else weights,
        "sha256": sha256_of(weights),
        "random_init": random_init,
        "note": ("RANDOM VGG-Face weights (--allow_random_weights_for_tests): the face features "
                 "are those of an untrained network; for tests only" if random_init
                 else "user-supplied weights"),
    }
    run_info = {"vggface_weights": weights_info, "beam": beam_info}
    tf_threads = config.tf_threads
    if tf_threads is None:
        tf_threads = 0
        if beam_info.get("direct_running_mode") == "multi_processing":
            tf_threads = max(1, (os.cpu_count() or 1) // beam_info["direct_num_workers"])
    run_info["beam"]["tf_threads_per_worker"] = tf_threads
    pipeline = runners.make_pipeline(options)
    build_pipeline(pipeline, config, weights, run_info, start_time, tf_threads, build_dir)
    with runners.local_ports_on_loopback(options):
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except RuntimeError as e:
            # Ctrl-C inside a transform: Beam cannot add its step to a KeyboardInterrupt (it
            # has no message) and raises "KeyboardInterrupt [while running ...]" instead.
            if str(e).startswith("KeyboardInterrupt"):
                raise KeyboardInterrupt(str(e)) from e
            raise
    return result, dataset_info.read(build_dir)


def _nothing_built(info: dataset_info.DatasetInfo, config: BuildConfig, build_dir: str,
                   created: bool) -> str:
    """The one-line reason of an EmptyBuildError."""
    rejects = info.details["rejects"]
    read = info.details["items_read"]
    if not read:
        why = "the manifest lists no clip (only blank or comment lines)"
    else:
        reasons = sorted(((n, r) for r, n in rejects["by_reason"].items() if n), reverse=True)
        why = (f"all {read} items were rejected ("
               + ", ".join(f"{r}: {n}" for n, r in reasons[:4])
               + (", ..." if len(reasons) > 4 else "") + ")")
    kept = ("nothing was there before" if created else
            "its previous contents are untouched")
    return (f"no example written: {why}; the list is {os.path.join(build_dir, shards.REJECTS)} "
            f"(delete that directory when done); {config.output_dir}: {kept}")
