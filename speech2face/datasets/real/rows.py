"""Manifest rows to the clips a build makes, the first stage of the pipeline (`build`):
read the manifest(s) (or list the VoxCeleb2 tree), parse each line (`manifests`), keep one clip
per clip id and, with a test manifest, keep train and test speaker-disjoint. Every row that does
not become a clip becomes a `manifests.Reject` on the `REJECTS_TAG` output.
"""

import dataclasses
from typing import Optional

import apache_beam as beam

from speech2face.datasets.real import manifests
from speech2face.datasets.real.config import BuildConfig
from speech2face.datasets.real.manifests import Reason
from speech2face.datasets.real.shards import METRICS_NAMESPACE

REJECTS_TAG = "rejects"


def reject_counter(reason: str):
    """The Beam counter of rejects for `reason` (`rejected_<reason>`)."""
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rejected_{reason}")


class _ParseLine(beam.DoFn):
    """Manifest line (bytes) -> Clip (main output) or Reject (`rejects` output), both of `split`
    (that of the manifest, or None for the speaker hash)."""

    def __init__(self, manifest_format: str, media_dir: str, split: Optional[str] = None):
        self._format, self._media_dir, self._split = manifest_format, media_dir, split

    def process(self, line: bytes):
        try:
            item = manifests.parse_or_reject(line.decode("utf-8"), self._format,
                                             self._media_dir, self._split)
        except UnicodeDecodeError as e:
            item = manifests.Reject(line.decode("utf-8", errors="replace").strip()[:500],
                                    Reason.MALFORMED_ROW,
                                    f"not UTF-8 text ({e.reason} at byte {e.start})",
                                    self._format, split=self._split or "")
        if isinstance(item, manifests.Reject):
            reject_counter(item.reason).inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, item)
        elif item is not None:
            yield item


class _DropDuplicates(beam.DoFn):
    """(clip_id, its clips from every manifest) -> one clip; the others are Rejects
    `duplicate_row`. The test manifest's row is the one kept if there is one, so that a clip
    listed in both manifests is built once, in test (then its speaker's train rows go as
    `speaker_in_test`); between rows of one split the choice is fixed by their contents."""

    def process(self, id_clips):
        clip_id, group = id_clips
        group = sorted(group, key=lambda c: (c.split != "test", repr(c)))
        kept = group[0]
        for clip in group[1:]:
            same = dataclasses.replace(clip, split=None) == dataclasses.replace(kept, split=None)
            where = " (the test manifest's row is built)" if kept.split != clip.split else ""
            reject_counter(Reason.DUPLICATE_ROW).inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, manifests.Reject(
                clip_id, Reason.DUPLICATE_ROW,
                f"{len(group)} manifest rows have clip id {clip_id!r}; one is built{where}, "
                f"this one is {'an exact repeat' if same else 'a conflicting row'} of it",
                clip.source, clip.speaker_id, clip.split or ""))
        yield kept


class _DropSpeakersInTest(beam.DoFn):
    """(speaker_id, its clips from both manifests) -> the clips, except that a speaker with test
    rows loses its train rows (Reject `speaker_in_test`): train and test stay speaker-disjoint,
    and the test split is the test manifest's, whole."""

    def __init__(self, test_manifest: str):
        self._test_manifest = test_manifest

    def process(self, speaker_clips):
        speaker, group = speaker_clips
        group = list(group)
        num_test = sum(c.split == "test" for c in group)
        num_train = len(group) - num_test
        if num_test and num_train:
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, "speakers_in_both_manifests").inc()
        for clip in group:
            if clip.split == "test" or not num_test:
                yield clip
                continue
            reject_counter(Reason.SPEAKER_IN_TEST).inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, manifests.Reject(
                clip.clip_id, Reason.SPEAKER_IN_TEST,
                f"speaker {speaker!r} also has {num_test} row(s) in the test manifest "
                f"{self._test_manifest}: its {num_train} train row(s) are dropped so that train "
                "and test share no speaker", clip.source, clip.speaker_id, "train"))


def _read_items(pipeline, config: BuildConfig):
    """Manifest lines (or VoxCeleb2 relative paths from listing the tree), as a PCollection."""
    if config.manifest is not None:
        return pipeline | "ReadManifest" >> _read_lines(config.manifest)
    speakers = manifests.list_voxceleb2_speakers(config.media_dir)
    media_dir = config.media_dir
    return (pipeline
            | "Speakers" >> beam.Create(speakers)
            | "SpreadSpeakers" >> beam.Reshuffle()  # each worker lists its own speakers
            | "ListTree" >> beam.FlatMap(lambda s: manifests.list_voxceleb2_clips(media_dir, s))
            | "AsBytes" >> beam.Map(lambda path: path.encode("utf-8")))


def _read_lines(path: str):
    """A manifest's lines as bytes: a line that is not UTF-8 becomes a `malformed_row` reject
    (`_ParseLine`) instead of stopping the job."""
    return beam.io.ReadFromText(path, coder=beam.coders.BytesCoder())


def _deduplicate(clips, name: str = "Dedup"):
    """Clips -> (one clip per clip id, duplicate_row rejects): `_DropDuplicates`."""
    kept = (clips
            | f"{name}ById" >> beam.Map(lambda clip: (clip.clip_id, clip))
            | f"{name}Group" >> beam.GroupByKey()
            | f"{name}Drop" >> beam.ParDo(_DropDuplicates()).with_outputs(REJECTS_TAG,
                                                                          main="clips"))
    return kept.clips, kept[REJECTS_TAG]


def parse_items(pipeline, config: BuildConfig):
    """(Clips, [Rejects, ...]): of the manifest (or tree), or with `test_manifest` of both
    manifests, each row of its manifest's split, without the train rows of test speakers."""
    if not config.split_by_manifest:
        parsed = (_read_items(pipeline, config)
                  | "Parse" >> beam.ParDo(_ParseLine(config.manifest_format, config.media_dir))
                  .with_outputs(REJECTS_TAG, main="clips"))
        clips, duplicates = _deduplicate(parsed.clips)
        return clips, [parsed[REJECTS_TAG], duplicates]
    parsed = []
    for split, path in (("train", config.manifest), ("test", config.test_manifest)):
        name = split.capitalize()
        parsed.append(pipeline
                      | f"Read{name}Manifest" >> _read_lines(path)
                      | f"Parse{name}" >> beam.ParDo(_ParseLine(config.manifest_format,
                                                                 config.media_dir, split))
                      .with_outputs(REJECTS_TAG, main="clips"))
    clips, duplicates = _deduplicate((parsed[0].clips, parsed[1].clips)
                                     | "BothManifests" >> beam.Flatten())
    kept = (clips
            | "BySpeaker" >> beam.Map(lambda clip: (clip.speaker_id, clip))
            | "GroupSpeakers" >> beam.GroupByKey()
            | "DisjointSpeakers" >> beam.ParDo(_DropSpeakersInTest(config.test_manifest))
            .with_outputs(REJECTS_TAG, main="clips"))
    return kept.clips, [p[REJECTS_TAG] for p in parsed] + [duplicates, kept[REJECTS_TAG]]
