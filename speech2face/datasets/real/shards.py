"""What a build writes into its output directory, and how.

    {train,test}-SSSSS-of-NNNNN.tfrecord   the one schema (speech2face.records), ~150 MB each
    rejects.jsonl                          one `manifests.Reject` per line
    dataset_info.json                      counts per split, source and reject reason, schema
                                           version, weights hash, command line; its presence
                                           means the build finished

The whole build is written beside any previous one, in `output_dir/.build-<id>/` (the build
directory, `start_build`), and moved into output_dir only once it has finished with at least one
example (`commit_build`, which with --overwrite replaces the previous build's files then): a
failed or empty build leaves output_dir as it was. Inside the build directory, shards are written
by `WriteShards` into `.incomplete/` (records.ShardedWriter: a `.tmp` name, renamed when
closed), named once all are known (`plan_names`) and renamed into the build directory
(`commit_shard`); `InfoCombineFn` counts shard summaries and rejects, and `write_dataset_info`
writes the info file last (.tmp + rename) and removes what failed bundle attempts left in
`.incomplete/`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import TYPE_CHECKING

import apache_beam as beam
import tensorflow as tf

from speech2face.datasets.real import faces, manifests
from speech2face import audio, errors, records
from speech2face.records import dataset_info

if TYPE_CHECKING:
    from speech2face.datasets.real.config import BuildConfig

REJECTS = "rejects.jsonl"
INCOMPLETE_DIR = ".incomplete"  # shards being written, inside output_dir; never globbed
METRICS_NAMESPACE = "speech2face.build_records"
SPLITS = ("train", "test")
BUILD_PREFIX = ".build-"  # a build in progress (or one that wrote nothing), inside output_dir
# Our outputs in an output directory: replaced by --overwrite, nothing else is.
_OUTPUT_PATTERN = re.compile(r"^((train|test)-.*\.tfrecord(\.tmp)?|dataset_info\.json(\.tmp)?|"
                             r"rejects\.jsonl|beam-temp-.*|\.incomplete|\.build-.*|\.replaced-.*|"
                             r"vggface_random_seed\d+\.h5)$")


def _entries(directory: str):
    return sorted(e.rstrip("/") for e in tf.io.gfile.listdir(directory))


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Raises (writing nothing) unless a build may go to output_dir: FileExistsError for a file,
    or a directory holding anything but the `.build-*` leftovers of builds that wrote nothing
    (unless `overwrite`); PermissionError for a local directory this user cannot write."""
    if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
        raise FileExistsError(f"output_dir {output_dir} is a file, not a directory: choose a "
                              "directory (it is created if missing)")
    if tf.io.gfile.isdir(output_dir) and not overwrite:
        entries = [e for e in _entries(output_dir) if not e.startswith(BUILD_PREFIX)]
        if entries:
            raise FileExistsError(
                f"output_dir {output_dir} is not empty ({len(entries)} entries, e.g. "
                f"{entries[0]!r}): choose an empty directory, or pass --overwrite to replace a "
                "previous build (other files are kept)")
    if "://" in output_dir:
        return
    problem = errors.unwritable_reason(output_dir)
    if problem and "is a file" in problem:
        raise FileExistsError(f"output_dir {output_dir}: {problem}")
    if problem:
        raise PermissionError(f"output_dir {output_dir}: {problem}; choose a directory you can "
                              "write to")


def start_build(output_dir: str) -> str:
    """Creates output_dir if needed and a fresh `.build-<id>` directory in it, where the whole
    build is written (the previous build, if any, stays untouched until `commit_build`)."""
    tf.io.gfile.makedirs(output_dir)
    build_dir = os.path.join(output_dir, BUILD_PREFIX + uuid.uuid4().hex[:12])
    tf.io.gfile.makedirs(build_dir)
    return build_dir


def commit_build(output_dir: str, build_dir: str, overwrite: bool) -> None:
    """Moves a finished build from `build_dir` into output_dir. With `overwrite` the previous
    build's files (and other builds' leftovers) are set aside first and deleted once the new
    ones are in; files that are not a build's are never touched. Without it, finding outputs
    there (a build that ran at the same time) raises FileExistsError and keeps `build_dir`."""
    old = [e for e in _entries(output_dir)
           if _OUTPUT_PATTERN.match(e) and os.path.join(output_dir, e) != build_dir
           and (overwrite or not e.startswith(BUILD_PREFIX))]
    if old and not overwrite:
        raise FileExistsError(f"output_dir {output_dir} received {old[0]!r} and more while this "
                              f"build ran (another build?): this build is kept in {build_dir}")
    replaced = os.path.join(output_dir, ".replaced-" + os.path.basename(build_dir))
    for entry in old:
        path = os.path.join(output_dir, entry)
        if tf.io.gfile.isdir(path):  # leftovers of unfinished builds only
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.makedirs(replaced)
            tf.io.gfile.rename(path, os.path.join(replaced, entry), overwrite=True)
    for entry in _entries(build_dir):
        tf.io.gfile.rename(os.path.join(build_dir, entry), os.path.join(output_dir, entry),
                           overwrite=True)
    tf.io.gfile.rmtree(build_dir)
    if tf.io.gfile.exists(replaced):
        tf.io.gfile.rmtree(replaced)


def discard_build(output_dir: str, build_dir: str, created: bool) -> None:
    """Deletes a failed build's `build_dir`, and output_dir too when the build created it and
    it is empty again: a failed build leaves the output directory as it found it."""
    if tf.io.gfile.exists(build_dir):
        tf.io.gfile.rmtree(build_dir)
    if created and tf.io.gfile.isdir(output_dir) and not tf.io.gfile.listdir(output_dir):
        tf.io.gfile.rmtree(output_dir)


class _Shard:
    """One shard being written: a ShardedWriter that never rolls over, and what it holds."""

    def __init__(self, directory: str, name: str, layout: str):
        self.writer = records.ShardedWriter(os.path.join(directory, name), 2**62, layout)
        self.speakers, self.sources = set(), collections.Counter()

    def write(self, example: records.Example):
        self.writer.write(example)
        self.speakers.add(example.speaker_id)
        self.sources[example.source] += 1

    def close(self) -> str:
        self.writer.close()
        return self.writer.paths[0]


class WriteShards(beam.DoFn):
    """(split, Example) -> shard files in `output_dir/.incomplete/`, one open shard per split per
    bundle, closed at `target_shard_bytes`; yields one summary per shard at the bundle's end.

    Shards are written under `.tmp` names and renamed when closed (records.ShardedWriter), and
    only shards reported by a successful bundle are committed (renamed into output_dir by
    `commit_shard`): a failed or retried bundle's files stay in `.incomplete/` and are deleted
    at the end. Remote outputs (gs://...) are written locally and copied when a shard closes.
    """

    def __init__(self, output_dir: str, target_shard_bytes: int, layout: str):
        self._incomplete = os.path.join(output_dir, INCOMPLETE_DIR)
        self._target, self._layout = target_shard_bytes, layout
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
            shard = self._open[split] = _Shard(self._local or self._incomplete, name, self._layout)
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


def plan_names(summaries):
    """All shard summaries -> the same with `final`: `{split}-{i:05d}-of-{n:05d}.tfrecord`."""
    by_split = collections.defaultdict(list)
    for summary in summaries:
        by_split[summary["split"]].append(summary)
    for split, shards in by_split.items():
        shards.sort(key=lambda s: s["file"])
        for i, summary in enumerate(shards):
            yield dict(summary, final=records.shard_name(split, i, len(shards)))


def commit_shard(summary, output_dir: str):
    """Renames one finished shard into output_dir (idempotent: a retry finds it done)."""
    source = os.path.join(output_dir, INCOMPLETE_DIR, summary["file"])
    final = os.path.join(output_dir, summary["final"])
    if tf.io.gfile.exists(source) or not tf.io.gfile.exists(final):
        tf.io.gfile.rename(source, final, overwrite=True)
    return dict(summary, file=summary["final"])


class InfoCombineFn(beam.CombineFn):
    """Shard summaries and rejects -> the counts of dataset_info.json."""

    def create_accumulator(self):
        return {"splits": {}, "rejects": collections.Counter(), "reject_sources": {},
                "reject_splits": {}, "shared_speakers": set()}

    def add_input(self, acc, item):
        if isinstance(item, manifests.Reject):
            acc["rejects"][item.reason] += 1
            acc["reject_sources"].setdefault(item.source, collections.Counter())[item.reason] += 1
            if item.split:  # the manifests fix the split
                acc["reject_splits"].setdefault(item.split, collections.Counter())[item.reason] += 1
            if item.reason == manifests.Reason.SPEAKER_IN_TEST:
                acc["shared_speakers"].add(item.speaker_id)
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
            for split, counts in acc["reject_splits"].items():
                out["reject_splits"].setdefault(split, collections.Counter()).update(counts)
            out["shared_speakers"].update(acc["shared_speakers"])
            for split, s in acc["splits"].items():
                self.add_input(out, {"split": split, **s})
        return out

    def extract_output(self, acc):
        return acc


def write_dataset_info(acc, _rejects_files, config: BuildConfig, run_info: dict,
                        start_time: float, directory: str):
    """Writes dataset_info.json into `directory`, the build's (via .tmp + rename); runs after
    everything else."""
    counts, files, num_bytes = {}, {}, {}
    for split in SPLITS:
        s = acc["splits"].get(split, {"examples": 0, "bytes": 0, "files": [], "speakers": (),
                                      "sources": {}})
        counts[split] = {"clips": s["examples"], "speakers": len(s["speakers"]),
                         "by_source": dict(sorted(s["sources"].items()))}
        files[split], num_bytes[split] = sorted(s["files"]), s["bytes"]
    rejected = sum(acc["rejects"].values())
    examples = sum(c["clips"] for c in counts.values())
    details = {
        "manifest_format": config.manifest_format,
        "items_read": examples + rejected,
        "rejects": {
            "total": rejected,
            "by_reason": {r: acc["rejects"].get(r, 0) for r in manifests.REASONS},
            "by_source": {src: dict(c) for src, c in sorted(acc["reject_sources"].items())},
            "file": REJECTS,
            "reasons": manifests.REASONS,
        },
        "split": _split_details(acc, counts, config),
        "waveform": {"stored": config.store_waveform,
                     "content": f"int16 16 kHz, the clip's first {config.max_seconds:g} s, "
                                "tiled to at least 6 s"},
        "face": {"detector": config.detector, "upsample": config.upsample,
                 "max_detect_side": config.max_detect_side,
                 "min_face_size": config.min_face_size, "crop_scale": faces.CROP_SCALE,
                 "size": faces.FACE_SIZE, "jpeg_quality": faces.JPEG_QUALITY,
                 "crop": "square, centred on the 68 landmarks' box, side crop_scale × its "
                         "longer side; v_f is VGG-Face fc7 of the stored JPEG"},
        "command_line": config.command_line,
        "beam": run_info["beam"],
    }
    info = dataset_info.DatasetInfo(
        name=f"speech2face records ({config.manifest_format})", builder="build_records",
        counts=counts, files=files, bytes=num_bytes,
        layout=config.records_layout,
        spectrogram={"dtype": records.spectrogram_dtype_of(config.records_layout) or "float32",
                     "shape": [audio.num_frames(audio.SEGMENT_SAMPLES), audio.NUM_FREQ_BINS, 2],
                     "content": "first 6 s of the clip, tiled if shorter (docs/data.md)",
                     "stored": config.records_layout != records.WAVEFORM_LAYOUT},
        vggface_weights=run_info["vggface_weights"], config=dataclasses.asdict(config),
        build_seconds=round(time.time() - start_time, 1), details=details)
    incomplete = os.path.join(directory, INCOMPLETE_DIR)
    if tf.io.gfile.exists(incomplete):  # what is left there: files of failed bundle attempts
        tf.io.gfile.rmtree(incomplete)
    info.write(directory)


def _split_details(acc, counts, config: BuildConfig) -> dict:
    """How the split was drawn; with test_manifest, the rows read and rejected per split."""
    if not config.split_by_manifest:
        return {"method": "test if sha1(speaker_id)[:8] / 2^64 < test_fraction (stable, "
                          "speaker-disjoint; AVSpeech speaker = YouTube id)",
                "test_fraction": config.hash_test_fraction}
    rows = {}
    for split in SPLITS:
        rejected = acc["reject_splits"].get(split, collections.Counter())
        rows[split] = {"items_read": counts[split]["clips"] + sum(rejected.values()),
                       "rejected": sum(rejected.values()),
                       "rejects_by_reason": {r: n for r, n in sorted(rejected.items())}}
    return {"method": "manifests: every row of manifest is train, every row of test_manifest "
                      "is test; train rows of a speaker in test_manifest are rejected "
                      f"({manifests.Reason.SPEAKER_IN_TEST})",
            "manifests": {"train": config.manifest, "test": config.test_manifest},
            "speakers_in_both": len(acc["shared_speakers"]), "rows": rows}


def format_summary(info: dataset_info.DatasetInfo) -> str:
    """A few lines for the console: examples per split, rejects per reason, where things are."""
    counts, rejects = info.counts, info.details["rejects"]
    lines = [f"{info.name}: {info.details['items_read']} items read, "
             f"{sum(c['clips'] for c in counts.values())} examples, {rejects['total']} rejected"]
    for split, c in counts.items():
        lines.append(f"  {split:<5} {c['clips']:>8} clips  {c['speakers']:>7} speakers  "
                     f"{len(info.files[split]):>4} shards  "
                     f"{info.bytes[split] / 2**20:8.1f} MiB")
    for reason, n in rejects["by_reason"].items():
        if n:
            lines.append(f"  rejected {reason:<22} {n:>8}")
    if info.config.get("test_manifest"):
        lines.append("  split: --manifest rows -> train, --test_manifest rows -> test")
    shared = info.details.get("split", {}).get("speakers_in_both")
    if shared:
        lines.append(f"  WARNING: {shared} speakers in both manifests: their train rows were "
                     f"rejected ({manifests.Reason.SPEAKER_IN_TEST})")
    if info.vggface_weights["random_init"]:
        lines.append("  WARNING: random VGG-Face weights (test build)")
    lines.append(f"  built in {info.build_seconds:.0f} s; see {REJECTS} and "
                 f"{dataset_info.FILENAME}")
    return "\n".join(lines)
