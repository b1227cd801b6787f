"""Real data to records (issue 6): AVSpeech, VoxCeleb2 or a pairs CSV -> TFRecord shards, with
Apache Beam, on one machine (DirectRunner, several processes) or on any Beam runner.

    manifest lines (or the VoxCeleb2 tree)
      -> Clip | Reject             manifests.parse_or_reject
      -> Reshuffle                 spreads the clips over the workers
      -> Prepared | Reject         _PrepareClip: probe, audio segment -> 6 s -> spectrogram;
                                   frame -> dlib face -> 224 crop, 68 landmarks, JPEG
      -> batches of <= vgg_batch_size
      -> (split, Example)          _FaceFeatures: VGG-Face fc7 of the stored JPEGs; the split
      -> shard files               _WriteShards: per split per bundle, ~150 MB each, in
                                   output_dir/.incomplete/ (records.ShardedWriter: .tmp, renamed)
      -> committed shards          named, then renamed into output_dir (_commit_shard)
    rejects -> rejects.jsonl;  shard summaries + rejects -> dataset_info.json (written last)

Everything up to the shard files is one fused stage: examples (~0.9 MB each) are never
shuffled or held in memory by the runner, so a local run's memory does not grow with the data.

Output directory:
    {train,test}-SSSSS-of-NNNNN.tfrecord   the one schema (speech2face.records)
    rejects.jsonl                          one `manifests.Reject` per line
    dataset_info.json                      counts per split, source and reject reason, schema
                                           version, weights hash, command line; its presence
                                           means the build finished

Bad input never stops the job: every per-clip failure becomes a `Reject` with a reason from
`manifests.REASONS` (an unexpected exception too, as `processing_error`), counted in Beam
metrics (namespace `METRICS_NAMESPACE`) and in dataset_info.json.
"""

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import traceback
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.options import pipeline_options as beam_options
import h5py
import numpy as np
import tensorflow as tf

from data_prep import faces, manifests
from data_prep.manifests import Reason, SkipClip
from speech2face import audio, records
from speech2face.models import vggface

DATASET_INFO = "dataset_info.json"
REJECTS = "rejects.jsonl"
INCOMPLETE_DIR = ".incomplete"  # shards being written, inside output_dir; never globbed
METRICS_NAMESPACE = "speech2face.build_records"
SPLITS = ("train", "test")
SEGMENT_TOLERANCE = 0.5  # s a segment may run past the media end (rounding in manifests)
_REJECTS_TAG = "rejects"
# Our outputs in an output directory: removed by --overwrite, nothing else is.
_OUTPUT_PATTERN = re.compile(r"^((train|test)-.*\.tfrecord(\.tmp)?|dataset_info\.json(\.tmp)?|"
                             r"rejects\.jsonl|beam-temp-.*|\.incomplete|"
                             r"vggface_random_seed\d+\.h5)$")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build depends on (written into dataset_info.json).

    Attributes:
      manifest: manifest file (see `manifests`); None only for voxceleb2 (the tree is listed).
      manifest_format: "avspeech", "voxceleb2" or "pairs".
      media_dir: where the manifest's relative paths point (local, or gs:// etc. on a runner).
      output_dir: the records' directory; must be empty unless `overwrite`.
      vggface_weights: rcmalli_vggface_tf_vgg16.h5 (required unless `random_weights_for_tests`).
      random_weights_for_tests: allow seeded random VGG-Face weights: with vggface_weights None
        they are written to output_dir; either way dataset_info.json marks the features random.
      test_fraction: share of speakers (by hash) in the test split, in [0, 1]; 0.08 is the
        paper's 0.15 M test / 1.85 M pairs.
      detector, upsample, max_detect_side, min_face_size, face_tries: see `faces.FaceFinder`;
        face_tries frames are tried around the segment's middle, 0.5 s apart.
      min_seconds: shorter clips are rejected (`too_short`).
      max_seconds: longer clips keep their first max_seconds (the stored waveform).
      spectrogram_dtype: "float16" (0.6 MB per 6 s example) or "float32".
      store_waveform: also store the clip (tiled to >= 6 s) as int16, for random-crop training.
      vgg_batch_size: faces per VGG-Face forward pass.
      tf_threads: TensorFlow intra-op threads per worker for VGG-Face; 0 keeps TF's default
        (all cores), which oversubscribes the CPU when every core runs a worker. None: cores /
        workers on the multi-processing DirectRunner, else 0 (on Dataflow, which runs a
        process per vCPU, pass 1).
      target_shard_bytes: a shard is closed once it holds this many bytes (SPEC §9: 100-200 MB);
        each worker bundle also ends with one smaller shard per split.
      overwrite: replace a previous build in output_dir.
      command_line: recorded in dataset_info.json.
    """

    manifest: Optional[str]
    manifest_format: str
    media_dir: str
    output_dir: str
    vggface_weights: Optional[str]
    random_weights_for_tests: bool = False
    test_fraction: float = 0.08
    detector: str = "cnn"
    upsample: int = 0
    max_detect_side: int = faces.DEFAULT_MAX_DETECT_SIDE
    min_face_size: int = faces.DEFAULT_MIN_FACE_SIZE
    face_tries: int = 3
    min_seconds: float = 1.0
    max_seconds: float = 10.0
    spectrogram_dtype: str = records.DEFAULT_SPECTROGRAM_DTYPE
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
        if self.manifest is not None and not tf.io.gfile.exists(self.manifest):
            raise FileNotFoundError(f"manifest {self.manifest} not found")
        if not tf.io.gfile.isdir(self.media_dir):
            raise FileNotFoundError(f"media_dir {self.media_dir} is not a directory")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        if self.detector not in faces.DETECTORS:
            raise ValueError(f"detector must be one of {faces.DETECTORS}, got {self.detector!r}")
        if self.spectrogram_dtype not in records.SPECTROGRAM_DTYPES:
            raise ValueError(f"spectrogram_dtype must be one of {records.SPECTROGRAM_DTYPES}")
        if not 0.1 <= self.min_seconds <= self.max_seconds:
            raise ValueError(f"need 0.1 <= min_seconds <= max_seconds, got {self.min_seconds}, "
                             f"{self.max_seconds}")
        if self.vgg_batch_size < 1 or self.face_tries < 1 or self.target_shard_bytes < 1:
            raise ValueError("vgg_batch_size, face_tries and target_shard_bytes must be >= 1")


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


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Creates output_dir; refuses a non-empty one unless `overwrite`, which deletes the
    outputs of a previous build (records, .tmp files, rejects, info; nothing else)."""
    if tf.io.gfile.isdir(output_dir):
        entries = [e.rstrip("/") for e in tf.io.gfile.listdir(output_dir)]
        if entries and not overwrite:
            raise FileExistsError(
                f"output_dir {output_dir} is not empty ({len(entries)} entries, e.g. "
                f"{sorted(entries)[0]!r}): choose an empty directory, or pass --overwrite to "
                "replace a previous build")
        for entry in entries:
            if _OUTPUT_PATTERN.match(entry):
                path = os.path.join(output_dir, entry)
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
    tf.io.gfile.makedirs(output_dir)


def split_for(speaker_id: str, test_fraction: float) -> str:
    """"test" when sha1(speaker_id), read as a fraction of 2^64, is below test_fraction.

    Stable across runs, machines and data-set sizes (adding clips never moves a speaker), and
    speaker-disjoint by construction.
    """
    digest = hashlib.sha1(speaker_id.encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction else "train"


# ----------------------------------------------------------------------------------------------
# Media: probe and audio segment (ffmpeg of imageio-ffmpeg)

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+\S*: (Audio|Video): (.*)")


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    duration: Optional[float]  # seconds; None if the container does not say
    has_audio: bool
    has_video: bool


def probe_media(path: str) -> MediaInfo:
    """Duration and streams of a media file; SkipClip(UNREADABLE_MEDIA) if ffmpeg cannot open it."""
    command = [faces.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i",
               "file:" + os.path.abspath(path)]
    stderr = subprocess.run(command, capture_output=True, check=False).stderr.decode(
        "utf-8", errors="replace")
    if "Input #0" not in stderr:
        lines = [line for line in stderr.splitlines()
                 if line.strip() and "output file" not in line]
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: ffmpeg cannot open it "
                       f"({lines[-1].strip() if lines else 'no message'})")
    match = _DURATION.search(stderr)
    duration = None
    if match:
        h, m, s = match.groups()
        duration = int(h) * 3600 + int(m) * 60 + float(s)
    streams = _STREAM.findall(stderr)
    return MediaInfo(duration=duration, has_audio=any(kind == "Audio" for kind, _ in streams),
                     has_video=any(kind == "Video" and "attached pic" not in rest
                                   for kind, rest in streams))


def decode_audio_segment(path: str, start: float, seconds: Optional[float]):
    """Decodes [start, start + seconds) (to the end if seconds is None) to mono 16 kHz.

    Returns:
      (float32 [n] waveform, ffmpeg's error output: "" for a clean decode; a truncated file
      decodes part-way and says "partial file" or similar here).
    """
    command = [faces.ffmpeg_exe(), "-nostdin", "-v", "error"]
    if start > 0:
        command += ["-ss", f"{start:.3f}"]  # before -i: seek, then decode from there (fast)
    command += ["-i", "file:" + os.path.abspath(path)]
    if seconds is not None:
        command += ["-t", f"{seconds:.3f}"]
    command += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(audio.SAMPLE_RATE), "-f", "f32le",
                "-"]
    result = subprocess.run(command, capture_output=True, check=False)
    stderr = result.stderr.decode("utf-8", errors="replace").strip()
    usable = len(result.stdout) // 4 * 4  # a decoder cut off mid-sample
    waveform = np.frombuffer(result.stdout[:usable], "<f4").astype(np.float32)
    if result.returncode != 0 and waveform.size == 0:
        raise SkipClip(Reason.UNREADABLE_MEDIA,
                       f"{path}: audio does not decode ({faces.last_line(stderr)})")
    return waveform, stderr


@contextlib.contextmanager
def _local_copy(path: str):
    """A local path for `path`: itself, or a temporary copy of a remote (gs://...) file, since
    ffmpeg, PIL and dlib read local files only."""
    if "://" not in path:
        yield path
        return
    directory = tempfile.mkdtemp(prefix="s2f_media_")
    local = os.path.join(directory, os.path.basename(path))
    try:
        tf.io.gfile.copy(path, local, overwrite=True)
        yield local
    except SkipClip as e:  # name the file the user knows, not the temporary copy
        raise type(e)(e.reason, str(e).replace(local, path)) from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# One clip: audio segment and face


@dataclasses.dataclass
class Prepared:
    """A clip ready for VGG-Face: everything of its Example but the face feature.

    Attributes:
      clip: the manifest item.
      spectrogram: [598, 257, 2] in the storage dtype, of the first 6 s (tiled if shorter).
      waveform: int16 [n >= 96000] 16 kHz (the clip tiled to at least 6 s), or None.
      face_jpeg: JPEG of the 224×224 RGB crop (VGG-Face sees this very image, decoded).
      landmarks: float32 [68, 2] (x, y) in crop pixels.
      frame_seconds: time of the frame the face came from (None for a still image).
    """

    clip: manifests.Clip
    spectrogram: np.ndarray
    waveform: Optional[np.ndarray]
    face_jpeg: bytes
    landmarks: np.ndarray
    frame_seconds: Optional[float]


def _missing(path: str) -> SkipClip:
    tried = "" if os.path.splitext(path)[1] else f" (tried {', '.join(manifests.VIDEO_EXTENSIONS)})"
    return SkipClip(Reason.MISSING_MEDIA, f"{path}: file not found{tried}")


def _read_segment(path: str, info: MediaInfo, clip: manifests.Clip, config: BuildConfig):
    """The clip's audio (at most max_seconds of it): float32 [n], checked for every reason."""
    start, length = clip.start, (None if clip.end is None else clip.end - clip.start)
    if info.duration is not None:
        if start >= info.duration:
            raise SkipClip(Reason.SEGMENT_OUTSIDE_MEDIA, f"{path}: segment starts at {start:.2f} "
                           f"s, after the end of the media ({info.duration:.2f} s)")
        if clip.end is not None and clip.end > info.duration + SEGMENT_TOLERANCE:
            raise SkipClip(Reason.SEGMENT_OUTSIDE_MEDIA, f"{path}: segment ends at {clip.end:.2f}"
                           f" s, after the end of the media ({info.duration:.2f} s)")
        available = info.duration - start
        length = available if length is None else min(length, available)
    if length is not None and length < config.min_seconds:
        raise SkipClip(Reason.TOO_SHORT, f"{path}: {length:.2f} s of audio, below the minimum "
                       f"of {config.min_seconds:g} s")
    wanted = config.max_seconds if length is None else min(length, config.max_seconds)
    waveform, problems = decode_audio_segment(path, start, wanted)
    decoded = waveform.size / audio.SAMPLE_RATE
    if problems and decoded < wanted - SEGMENT_TOLERANCE:
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: truncated or corrupt: decoded "
                       f"{decoded:.2f} s of {wanted:.2f} s (ffmpeg: {faces.last_line(problems)})")
    if decoded < config.min_seconds:
        raise SkipClip(Reason.TOO_SHORT, f"{path}: {decoded:.2f} s of audio decoded, below the "
                       f"minimum of {config.min_seconds:g} s")
    if not np.all(np.isfinite(waveform)):
        raise SkipClip(Reason.UNREADABLE_MEDIA, f"{path}: audio has NaN or infinite samples")
    peak = float(np.max(np.abs(waveform)))
    if peak < audio.SILENCE_PEAK:
        raise SkipClip(Reason.SILENT_AUDIO, f"{path}: the segment is silent (peak {peak:.3g})")
    return waveform


def _face_in_video(path: str, info: MediaInfo, start: float, seconds: float, hint,
                   finder: faces.FaceFinder, config: BuildConfig):
    if not info.has_video:
        raise SkipClip(Reason.NO_VIDEO_STREAM, f"{path}: no video stream")
    return finder.find_in_video(path, faces.frame_times(start, start + seconds, config.face_tries),
                                hint)


def prepare_clip(clip: manifests.Clip, finder: faces.FaceFinder, config: BuildConfig
                 ) -> Prepared:
    """Audio first (cheap, and most rejects are found there), then the face.

    Raises:
      SkipClip: with the reason the clip cannot become an example.
    """
    audio_path = manifests.resolve_media(clip.audio_path)
    if audio_path is None:
        raise _missing(clip.audio_path)
    face_in_audio_file = clip.image_path == clip.audio_path
    with _local_copy(audio_path) as local:
        info = probe_media(local)
        if not info.has_audio:
            raise SkipClip(Reason.NO_AUDIO_STREAM, f"{audio_path}: no audio stream")
        waveform = _read_segment(local, info, clip, config)
        seconds = waveform.size / audio.SAMPLE_RATE
        if face_in_audio_file:
            face, frame_seconds = _face_in_video(local, info, clip.start, seconds, clip.hint,
                                                 finder, config)
    if not face_in_audio_file:
        image_path = manifests.resolve_media(clip.image_path)
        if image_path is None:
            raise _missing(clip.image_path)
        with _local_copy(image_path) as local:
            if clip.image_is_still:
                face, frame_seconds = finder.find(faces.load_image(local), clip.hint), None
            else:
                info = probe_media(local)
                seconds = info.duration or 0.0
                face, frame_seconds = _face_in_video(local, info, 0.0, seconds, clip.hint,
                                                     finder, config)

    spectrogram = audio.spectrogram_np(audio.fit_to_length(waveform, audio.SEGMENT_SAMPLES))
    stored = None
    if config.store_waveform:
        tiled = audio.fit_to_length(waveform, max(waveform.size, audio.SEGMENT_SAMPLES))
        stored = np.round(np.clip(tiled, -1.0, 1.0) * 32767.0).astype(np.int16)
    return Prepared(clip=clip, spectrogram=spectrogram.astype(config.spectrogram_dtype),
                    waveform=stored, face_jpeg=faces.encode_jpeg(face.crop),
                    landmarks=face.landmarks, frame_seconds=frame_seconds)


# ----------------------------------------------------------------------------------------------
# Beam transforms


def _reject_counter(reason: str):
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rejected_{reason}")


class _ParseLine(beam.DoFn):
    """Manifest line -> Clip (main output) or Reject (`rejects` output)."""

    def __init__(self, manifest_format: str, media_dir: str):
        self._format, self._media_dir = manifest_format, media_dir

    def process(self, line: str):
        item = manifests.parse_or_reject(line, self._format, self._media_dir)
        if isinstance(item, manifests.Reject):
            _reject_counter(item.reason).inc()
            yield beam.pvalue.TaggedOutput(_REJECTS_TAG, item)
        elif item is not None:
            yield item


class _PrepareClip(beam.DoFn):
    """Clip -> Prepared, or a Reject; the dlib models load once per worker (setup)."""

    def __init__(self, config: BuildConfig):
        self._config = config

    def setup(self):
        c = self._config
        self._finder = faces.FaceFinder(c.detector, c.upsample, c.max_detect_side,
                                        c.min_face_size)

    def process(self, clip: manifests.Clip):
        try:
            prepared = prepare_clip(clip, self._finder, self._config)
        except SkipClip as e:
            _reject_counter(e.reason).inc()
            yield beam.pvalue.TaggedOutput(_REJECTS_TAG, manifests.Reject(
                clip.clip_id, e.reason, str(e), clip.source, clip.speaker_id))
            return
        except Exception as e:  # pylint: disable=broad-except
            # One bad clip must not stop a million-clip job: record it, keep going.
            detail = f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)[-600:]}"
            _reject_counter(Reason.PROCESSING_ERROR).inc()
            yield beam.pvalue.TaggedOutput(_REJECTS_TAG, manifests.Reject(
                clip.clip_id, Reason.PROCESSING_ERROR, detail, clip.source, clip.speaker_id))
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
        features = self._extractor(np.stack([faces.decode_jpeg(p.face_jpeg) for p in batch]))
        for p, feature in zip(batch, features):
            split = split_for(p.clip.speaker_id, self._test_fraction)
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"examples_{split}").inc()
            yield split, records.Example(
                spectrogram=p.spectrogram, face_feature=feature, speaker_id=p.clip.speaker_id,
                clip_id=p.clip.clip_id, source=p.clip.source, face_jpeg=p.face_jpeg,
                landmarks=p.landmarks, waveform=p.waveform)


class _Shard:
    """One shard being written: a ShardedWriter that never rolls over, and what it holds."""

    def __init__(self, directory: str, name: str, dtype: str):
        self.writer = records.ShardedWriter(os.path.join(directory, name), 2**62, dtype)
        self.speakers, self.sources = set(), collections.Counter()

    def write(self, example: records.Example):
        self.writer.write(example)
        self.speakers.add(example.speaker_id)
        self.sources[example.source] += 1

    def close(self) -> str:
        self.writer.close()
        return self.writer.paths[0]


class _WriteShards(beam.DoFn):
    """(split, Example) -> shard files in `output_dir/.incomplete/`, one open shard per split per
    bundle, closed at `target_shard_bytes`; yields one summary per shard at the bundle's end.

    Shards are written under `.tmp` names and renamed when closed (records.ShardedWriter), and
    only shards reported by a successful bundle are committed (renamed into output_dir by
    `_commit_shard`): a failed or retried bundle's files stay in `.incomplete/` and are deleted
    at the end. Remote outputs (gs://...) are written locally and copied when a shard closes.
    """

    def __init__(self, output_dir: str, target_shard_bytes: int, spectrogram_dtype: str):
        self._incomplete = os.path.join(output_dir, INCOMPLETE_DIR)
        self._target, self._dtype = target_shard_bytes, spectrogram_dtype
        self._remote = "://" in output_dir

    def start_bundle(self):
        self._bundle = uuid.uuid4().hex[:12]
        self._open, self._done, self._count = {}, [], 0
        self._local = tempfile.mkdtemp(prefix="s2f_shards_") if self._remote else None
        if not self._remote:
            tf.io.gfile.makedirs(self._incomplete)

    def process(self, split_example):
        split, example = split_example
        shard = self._open.get(split)
        if shard is None:
            name = f"{split}-{self._bundle}-{self._count:04d}"
            self._count += 1
            shard = self._open[split] = _Shard(self._local or self._incomplete, name, self._dtype)
        shard.write(example)
        if shard.writer.num_bytes >= self._target:
            self._close(split)

    def _close(self, split):
        shard = self._open.pop(split)
        path = shard.close()
        if self._remote:
            final = os.path.join(self._incomplete, os.path.basename(path))
            tf.io.gfile.copy(path, final + ".tmp", overwrite=True)
            tf.io.gfile.rename(final + ".tmp", final, overwrite=True)
            os.remove(path)
        beam.metrics.Metrics.counter(METRICS_NAMESPACE, "shards_written").inc()
        self._done.append({"split": split, "file": os.path.basename(path),
                           "examples": shard.writer.num_examples, "bytes": shard.writer.num_bytes,
                           "speakers": sorted(shard.speakers), "sources": dict(shard.sources)})

    def finish_bundle(self):
        for split in list(self._open):
            self._close(split)
        if self._local:
            shutil.rmtree(self._local, ignore_errors=True)
        for summary in self._done:
            yield beam.transforms.window.GlobalWindows.windowed_value(summary)


def _plan_names(summaries):
    """All shard summaries -> the same with `final`: `{split}-{i:05d}-of-{n:05d}.tfrecord`."""
    by_split = collections.defaultdict(list)
    for summary in summaries:
        by_split[summary["split"]].append(summary)
    for split, shards in by_split.items():
        shards.sort(key=lambda s: s["file"])
        for i, summary in enumerate(shards):
            yield dict(summary, final=f"{split}-{i:05d}-of-{len(shards):05d}.tfrecord")


def _commit_shard(summary, output_dir: str):
    """Renames one finished shard into output_dir (idempotent: a retry finds it done)."""
    source = os.path.join(output_dir, INCOMPLETE_DIR, summary["file"])
    final = os.path.join(output_dir, summary["final"])
    if tf.io.gfile.exists(source) or not tf.io.gfile.exists(final):
        tf.io.gfile.rename(source, final, overwrite=True)
    return dict(summary, file=summary["final"])


class _InfoCombineFn(beam.CombineFn):
    """Shard summaries and rejects -> the counts of dataset_info.json."""

    def create_accumulator(self):
        return {"splits": {}, "rejects": collections.Counter(), "reject_sources": {}}

    def add_input(self, acc, item):
        if isinstance(item, manifests.Reject):
            acc["rejects"][item.reason] += 1
            acc["reject_sources"].setdefault(item.source, collections.Counter())[item.reason] += 1
            return acc
        s = acc["splits"].setdefault(item["split"], {"examples": 0, "bytes": 0, "files": [],
                                                     "speakers": set(), "sources": {}})
        s["examples"] += item["examples"]
        s["bytes"] += item["bytes"]
        s["files"] += item["files"] if "files" in item else [item["file"]]
        s["speakers"].update(item["speakers"])
        for source, n in item["sources"].items():
            s["sources"][source] = s["sources"].get(source, 0) + n
        return acc

    def merge_accumulators(self, accumulators):
        out = self.create_accumulator()
        for acc in accumulators:
            out["rejects"].update(acc["rejects"])
            for source, counts in acc["reject_sources"].items():
                out["reject_sources"].setdefault(source, collections.Counter()).update(counts)
            for split, s in acc["splits"].items():
                self.add_input(out, {"split": split, **s})
        return out

    def extract_output(self, acc):
        return acc


def _write_dataset_info(acc, _rejects_files, config: BuildConfig, run_info: dict,
                        start_time: float):
    """Writes dataset_info.json (via .tmp + rename); runs after everything else."""
    counts, files, num_bytes = {}, {}, {}
    for split in SPLITS:
        s = acc["splits"].get(split, {"examples": 0, "bytes": 0, "files": [], "speakers": (),
                                      "sources": {}})
        counts[split] = {"clips": s["examples"], "speakers": len(s["speakers"]),
                         "by_source": dict(sorted(s["sources"].items()))}
        files[split], num_bytes[split] = sorted(s["files"]), s["bytes"]
    rejected = sum(acc["rejects"].values())
    examples = sum(c["clips"] for c in counts.values())
    info = {
        "name": f"speech2face records ({config.manifest_format})",
        "schema_version": records.SCHEMA_VERSION,
        "manifest_format": config.manifest_format,
        "counts": counts,
        "items_read": examples + rejected,
        "rejects": {
            "total": rejected,
            "by_reason": {r: acc["rejects"].get(r, 0) for r in manifests.REASONS},
            "by_source": {src: dict(c) for src, c in sorted(acc["reject_sources"].items())},
            "file": REJECTS,
            "reasons": manifests.REASONS,
        },
        "split": {"method": "test if sha1(speaker_id)[:8] / 2^64 < test_fraction (stable, "
                            "speaker-disjoint; AVSpeech speaker = YouTube id)",
                  "test_fraction": config.test_fraction},
        "spectrogram": {"dtype": config.spectrogram_dtype,
                        "shape": [audio.num_frames(audio.SEGMENT_SAMPLES), audio.NUM_FREQ_BINS, 2],
                        "content": "first 6 s of the clip, tiled if shorter (SPEC §2)"},
        "waveform": {"stored": config.store_waveform,
                     "content": f"int16 16 kHz, the clip's first {config.max_seconds:g} s, "
                                "tiled to at least 6 s"},
        "face": {"detector": config.detector, "upsample": config.upsample,
                 "max_detect_side": config.max_detect_side,
                 "min_face_size": config.min_face_size, "crop_scale": faces.CROP_SCALE,
                 "size": faces.FACE_SIZE, "jpeg_quality": faces.JPEG_QUALITY,
                 "crop": "square, centred on the 68 landmarks' box, side crop_scale × its "
                         "longer side; v_f is VGG-Face fc7 of the stored JPEG"},
        "vggface_weights": run_info["vggface_weights"],
        "files": files,
        "bytes": num_bytes,
        "config": dataclasses.asdict(config),
        "command_line": config.command_line,
        "beam": run_info["beam"],
        "build_seconds": round(time.time() - start_time, 1),
    }
    incomplete = os.path.join(config.output_dir, INCOMPLETE_DIR)
    if tf.io.gfile.exists(incomplete):  # what is left there: files of failed bundle attempts
        tf.io.gfile.rmtree(incomplete)
    path = os.path.join(config.output_dir, DATASET_INFO)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write(json.dumps(info, indent=2, ensure_ascii=False))
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return info


# ----------------------------------------------------------------------------------------------
# The pipeline


def _read_items(pipeline, config: BuildConfig):
    """Manifest lines (or VoxCeleb2 relative paths from listing the tree), as a PCollection."""
    if config.manifest is not None:
        return pipeline | "ReadManifest" >> beam.io.ReadFromText(config.manifest)
    speakers = manifests.list_voxceleb2_speakers(config.media_dir)
    media_dir = config.media_dir
    return (pipeline
            | "Speakers" >> beam.Create(speakers)
            | "SpreadSpeakers" >> beam.Reshuffle()  # each worker lists its own speakers
            | "ListTree" >> beam.FlatMap(lambda s: manifests.list_voxceleb2_clips(media_dir, s)))


def build_pipeline(pipeline, config: BuildConfig, weights: str, run_info: dict,
                   start_time: float, tf_threads: int = 0) -> None:
    """Adds the whole build to `pipeline` (see the module docstring)."""
    parsed = (_read_items(pipeline, config)
              | "Parse" >> beam.ParDo(_ParseLine(config.manifest_format, config.media_dir))
              .with_outputs(_REJECTS_TAG, main="clips"))
    prepared = (parsed.clips
                | "SpreadClips" >> beam.Reshuffle()
                | "PrepareClip" >> beam.ParDo(_PrepareClip(config))
                .with_outputs(_REJECTS_TAG, main="prepared"))
    examples = (prepared.prepared
                | "BatchFaces" >> beam.BatchElements(min_batch_size=1,
                                                     max_batch_size=config.vgg_batch_size)
                | "FaceFeatures" >> beam.ParDo(_FaceFeatures(weights, config.vgg_batch_size,
                                                             config.test_fraction,
                                                             tf_threads)))
    shards = (examples
              | "WriteShards" >> beam.ParDo(_WriteShards(config.output_dir,
                                                         config.target_shard_bytes,
                                                         config.spectrogram_dtype))
              | "AllShards" >> beam.combiners.ToList()
              | "NameShards" >> beam.FlatMap(_plan_names)
              | "SpreadCommits" >> beam.Reshuffle()
              | "CommitShards" >> beam.Map(_commit_shard, config.output_dir))
    rejects = ((parsed[_REJECTS_TAG], prepared[_REJECTS_TAG])
               | "AllRejects" >> beam.Flatten())
    rejects_files = (rejects
                     | "RejectJson" >> beam.Map(lambda r: r.to_json())
                     | "WriteRejects" >> beam.io.WriteToText(
                         os.path.join(config.output_dir, REJECTS), num_shards=1,
                         shard_name_template=""))
    _ = ((shards, rejects)
         | "Outcomes" >> beam.Flatten()
         | "Count" >> beam.CombineGlobally(_InfoCombineFn())
         # The rejects file as a side input makes this step wait until it is complete.
         | "WriteInfo" >> beam.Map(_write_dataset_info, beam.pvalue.AsList(rejects_files),
                                   config, run_info, start_time))


_DIRECT_RUNNERS = (None, "DirectRunner", "direct", "Direct")


def pipeline_options(beam_args=(), num_workers: Optional[int] = None):
    """Beam options from command-line style args, with this builder's DirectRunner defaults.

    Raises ValueError for an argument Beam does not know either (a mistyped flag).

    Without --runner (or with the DirectRunner): `direct_num_workers` = num_workers (default:
    the machine's cores) and `direct_running_mode=multi_processing` (one process per worker:
    dlib and VGG-Face hold the GIL, so threads would not run in parallel), unless the args set
    them. Other runners (Dataflow, Flink, Spark, ...) take their own options unchanged.
    """
    beam_args = list(beam_args)
    options = beam_options.PipelineOptions(beam_args)
    # Beam only warns about arguments it does not know; a mistyped flag of this builder would
    # land here and be ignored, so refuse them instead.
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    unknown += [a for a in beam_args if not a.startswith("-")]
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}: neither a flag of the "
                         "builder (see --helpfull) nor an Apache Beam pipeline option")
    if options.view_as(beam_options.StandardOptions).runner in _DIRECT_RUNNERS:
        direct = options.view_as(beam_options.DirectOptions)
        if not any(a.startswith("--direct_num_workers") for a in beam_args):
            direct.direct_num_workers = num_workers or os.cpu_count() or 1
        if not any(a.startswith("--direct_running_mode") for a in beam_args):
            direct.direct_running_mode = "multi_processing"
    return options


def make_pipeline(options) -> beam.Pipeline:
    """A Pipeline on the runner the options name; for the DirectRunner, Beam's local FnApiRunner.

    Beam 2.77's DirectRunner first tries the Prism runner, which it downloads from GitHub at run
    time (a silent network fetch, and a failure on offline machines before it falls back) and
    which ignores `direct_num_workers`; the FnApiRunner is what it falls back to, run directly.
    """
    if options.view_as(beam_options.StandardOptions).runner not in _DIRECT_RUNNERS:
        return beam.Pipeline(options=options)
    # pylint: disable=import-outside-toplevel
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability import portable_runner
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    # As the DirectRunner does it: the workers get the pipeline options through provision info.
    encoded = portable_runner.JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return beam.Pipeline(runner=fn_runner.FnApiRunner(provision_info=provision), options=options)


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


@dataclasses.dataclass
class BuildResult:
    """What a finished build reports: dataset_info.json's content, and the Beam metric counters
    of namespace METRICS_NAMESPACE summed over steps (`rejected_<reason>`, `examples_<split>`,
    `shards_written`; empty where the runner does not report metrics)."""

    info: dict
    counters: dict


def _counters(result) -> dict:
    try:
        query = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE))
    except (NotImplementedError, AttributeError):
        return {}
    out = collections.Counter()
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] += int(value or 0)
    return dict(out)


def build_records(config: BuildConfig, options=None) -> BuildResult:
    """Checks everything cheap first, then runs the pipeline to the end.

    Raises (before any work): vggface.WeightsFileError (no or bad weights), FileExistsError
    (output_dir not empty and not `overwrite`), FileNotFoundError / ValueError (bad config).
    """
    start_time = time.time()
    config.validate()
    weights = config.vggface_weights
    if weights is None and not config.random_weights_for_tests:
        check_weights(None)
    if weights is not None:
        check_weights(weights)
    prepare_output_dir(config.output_dir, config.overwrite)
    if weights is None:
        weights = os.path.join(config.output_dir, "vggface_random_seed0.h5")
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
    options = options if options is not None else pipeline_options()
    beam_info = options.get_all_options(drop_default=True)
    beam_info["runner"] = options.view_as(beam_options.StandardOptions).runner or "DirectRunner"
    if beam_info["runner"] in _DIRECT_RUNNERS:
        direct = options.view_as(beam_options.DirectOptions)
        beam_info.update(direct_num_workers=direct.direct_num_workers,
                         direct_running_mode=direct.direct_running_mode)
    run_info = {"vggface_weights": weights_info,
                "beam": {k: v for k, v in sorted(beam_info.items()) if _jsonable(v)}}
    tf_threads = config.tf_threads
    if tf_threads is None:
        tf_threads = 0
        if beam_info.get("direct_running_mode") == "multi_processing":
            tf_threads = max(1, (os.cpu_count() or 1) // beam_info["direct_num_workers"])
    run_info["beam"]["tf_threads_per_worker"] = tf_threads
    pipeline = make_pipeline(options)
    build_pipeline(pipeline, config, weights, run_info, start_time, tf_threads)
    result = pipeline.run()
    result.wait_until_finish()
    with tf.io.gfile.GFile(os.path.join(config.output_dir, DATASET_INFO)) as f:
        return BuildResult(info=json.load(f), counters=_counters(result))


def format_summary(info: dict) -> str:
    """A few lines for the console: examples per split, rejects per reason, where things are."""
    counts, rejects = info["counts"], info["rejects"]
    lines = [f"{info['name']}: {info['items_read']} items read, "
             f"{sum(c['clips'] for c in counts.values())} examples, {rejects['total']} rejected"]
    for split, c in counts.items():
        lines.append(f"  {split:<5} {c['clips']:>8} clips  {c['speakers']:>7} speakers  "
                     f"{len(info['files'][split]):>4} shards  "
                     f"{info['bytes'][split] / 2**20:8.1f} MiB")
    for reason, n in rejects["by_reason"].items():
        if n:
            lines.append(f"  rejected {reason:<22} {n:>8}")
    if info["vggface_weights"]["random_init"]:
        lines.append("  WARNING: random VGG-Face weights (test build)")
    lines.append(f"  built in {info['build_seconds']:.0f} s; see {REJECTS} and {DATASET_INFO}")
    return "\n".join(lines)
