"""Checks a VoxCeleb2 tree the user downloaded and writes the manifest the builder reads.

VoxCeleb2 cannot be fetched anonymously (access is granted on request, docs/data.md), so the
downloader only verifies a copy: the layout `<speaker>/<video>/<utt>.mp4` under `media_dir`
(e.g. `dev/mp4`), each file opening in ffmpeg with an audio and a video stream of at least
`MIN_SECONDS`. It writes, in `output_dir`:

    voxceleb2.txt     the good files, one relative path per line (`--manifest` of build_records
                      with --manifest_format=voxceleb2 and --media_dir=<the tree>)
    speakers.csv      speaker_id, videos, utterances (good ones), problems
    failures.jsonl    every file left out, with its reason (`REASONS`)
"""

import collections
import concurrent.futures
import dataclasses
import json
import os
import statistics
from typing import Dict, List, Optional, Tuple

from speech2face.datasets.real import clips as clip_media, download_journal, manifests

MANIFEST = "voxceleb2.txt"
SPEAKERS_CSV = "speakers.csv"
FAILURES = "failures.jsonl"
MIN_SECONDS = 1.0  # the builder's shortest clip (docs/data.md)

BAD_LAYOUT = "bad_layout"
NOT_VIDEO = "not_video"
UNREADABLE = "unreadable"
NO_AUDIO = "no_audio"
NO_VIDEO = "no_video"
TOO_SHORT = "too_short"
REASONS = {
    BAD_LAYOUT: "not at <speaker>/<video>/<utt>.mp4 under --media_dir",
    NOT_VIDEO: "not a video (.mp4, .mkv, .webm): VoxCeleb2's aac/ tree has no faces, use mp4/",
    UNREADABLE: "ffmpeg cannot open the file (cut off or corrupt: download it again)",
    NO_AUDIO: "the file has no audio stream",
    NO_VIDEO: "the file has no video stream",
    TOO_SHORT: f"shorter than {MIN_SECONDS:g} s",
}


@dataclasses.dataclass
class VerifySummary:
    """Counts of a verified tree; `per_speaker` holds the good utterances of each speaker."""

    files: int = 0
    good: int = 0
    videos: int = 0
    per_speaker: Dict[str, int] = dataclasses.field(default_factory=dict)
    problems: Dict[str, int] = dataclasses.field(default_factory=dict)

    def format(self) -> str:
        counts = sorted(self.per_speaker.values())
        spread = (f"utterances per speaker: min {counts[0]}, median "
                  f"{statistics.median(counts):g}, max {counts[-1]}" if counts else "no speakers")
        problems = ", ".join(f"{k} {v}" for k, v in sorted(self.problems.items())) or "none"
        return (f"{self.files} files: {self.good} good utterances of {len(self.per_speaker)} "
                f"speakers in {self.videos} videos ({spread}); problems: {problems}")


def _walk(media_dir: str) -> List[str]:
    """Every file under media_dir, as sorted relative paths with '/'."""
    found = []
    for root, dirs, files in os.walk(media_dir):
        dirs.sort()
        rel = os.path.relpath(root, media_dir)
        for name in files:
            found.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
    return sorted(found)


def check_file(media_dir: str, rel: str) -> Optional[Tuple[str, str]]:
    """None for a good utterance, else (reason, detail)."""
    parts = rel.split("/")
    ext = os.path.splitext(rel)[1].lower()
    if ext not in manifests.VIDEO_EXTENSIONS:
        return NOT_VIDEO, f"{rel}: {ext or 'no extension'} is not a video"
    if len(parts) != 3:
        return BAD_LAYOUT, f"{rel}: {len(parts) - 1} directories deep, expected 2"
    try:
        info = clip_media.probe_media(os.path.join(media_dir, rel))
    except manifests.SkipClip as e:
        return UNREADABLE, str(e)
    if not info.has_audio:
        return NO_AUDIO, f"{rel}: no audio stream"
    if not info.has_video:
        return NO_VIDEO, f"{rel}: no video stream"
    if info.duration is not None and info.duration < MIN_SECONDS:
        return TOO_SHORT, f"{rel}: {info.duration:.2f} s"
    return None


def verify(media_dir: str, output_dir: str, workers: int = 4) -> VerifySummary:
    """Checks every file under media_dir (module docstring); writes the three files."""
    if not os.path.isdir(media_dir):
        raise FileNotFoundError(f"--media_dir {media_dir} is not a directory (the mp4/ directory "
                                "of a VoxCeleb2 split, e.g. .../vox2/dev/mp4)")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FileExistsError(f"--output_dir {output_dir} is a file, not a directory")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    files = _walk(media_dir)
    if not files:
        raise FileNotFoundError(f"--media_dir {media_dir} holds no files")
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda rel: check_file(media_dir, rel), files))
    summary = VerifySummary(files=len(files))
    good, failures = [], []
    speakers = collections.defaultdict(lambda: [set(), 0, 0])  # videos, utterances, problems
    for rel, problem in zip(files, results):
        parts = rel.split("/")
        entry = speakers[parts[0]] if len(parts) == 3 else None
        if problem is None:
            good.append(rel)
            entry[0].add(parts[1])
            entry[1] += 1
            continue
        reason, detail = problem
        summary.problems[reason] = summary.problems.get(reason, 0) + 1
        failures.append({"item": rel, "reason": reason, "detail": detail})
        if entry is not None:
            entry[2] += 1
    summary.good = len(good)
    summary.videos = sum(len(v) for v, _, _ in speakers.values())
    summary.per_speaker = {s: n for s, (_, n, _) in speakers.items() if n}
    os.makedirs(output_dir, exist_ok=True)
    download_journal.write_lines(os.path.join(output_dir, MANIFEST), (rel + "\n" for rel in good))
    download_journal.write_lines(os.path.join(output_dir, SPEAKERS_CSV), [
        "speaker_id,videos,utterances,problems\n",
        *(f"{s},{len(v)},{n},{p}\n" for s, (v, n, p) in sorted(speakers.items()))])
    download_journal.write_lines(os.path.join(output_dir, FAILURES),
           (json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n" for f in failures))
    return summary
