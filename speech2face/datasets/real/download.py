"""Fetches only the segments an AVSpeech manifest names (docs/data.md, "Getting the data").

Per video, yt-dlp (optional extra `[download]`) resolves the media URLs of a format of at most
`max_height` lines with audio; ffmpeg (imageio-ffmpeg's) then reads only the segment, plus a
margin, from those URLs with HTTP range requests and cuts it to `<clip_id>.mp4` (H.264 + AAC).
The output directory is then a `--media_dir` for the builder, with `segments.csv` its manifest.

    <output_dir>/<clip_id>.mp4      one cut per manifest row (`<youtube_id>_<start>_<end>`)
    <output_dir>/segments.csv       avspeech rows `youtube_id, start, end, x, y, file`: times
                                    relative to the cut, the face hint as given
    <output_dir>/failures.jsonl     every row that failed, with its reason (`REASONS`)
    <output_dir>/downloaded.jsonl   the journal of finished cuts (what a rerun skips)

A cut is written as `<clip_id>.part.mp4`, checked (duration, audio and video streams), logged in
the journal and only then renamed, so a killed run loses the cuts in flight and nothing else; a
rerun fetches nothing that is done, and skips the rows that failed for good (not_found, private,
...) unless `retry_failed`.
"""

import concurrent.futures
import dataclasses
import glob
import os
import random
import subprocess
import threading
import time
from typing import Dict, List, Optional, Tuple

from absl import logging

from speech2face import media
from speech2face.datasets.real import clips as clip_media, manifests
from speech2face.datasets.real import download_errors as errors
from speech2face.datasets.real.download_journal import (  # noqa: F401 (the file names)
    FAILURES, JOURNAL, SEGMENTS_CSV, State)

PART = ".part.mp4"
WHOLE = ".part.whole"  # a whole video, from a server without range requests
DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={id}"


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """What to fetch and how.

    Attributes:
      manifest: the AVSpeech CSV (`youtube_id, start, end, x, y` rows).
      output_dir: where the cuts, segments.csv, failures.jsonl and the journal go.
      url_template: the page or media URL of a video, `{id}` replaced by its YouTube id.
      margin_seconds: seconds kept before and after each segment.
      max_height: the highest video resolution fetched, in lines (224x224 face crops need
        little: 480 is plenty).
      workers: videos fetched at the same time.
      retries: further tries after a transient failure (timeout, network, rate limit, cut-off
        transfer), each after a backoff that doubles.
      backoff_seconds: the first backoff.
      rate_limit: at most this many fetches (a page or a cut) start per second, all workers
        together; 0 for no limit.
      timeout_seconds: the most one page or one cut may take.
      max_items: at most this many manifest rows are looked at (0: all).
      retry_failed: also retry the rows that failed for good in an earlier run.
      log_every: a progress line every this many rows.
    """

    manifest: str
    output_dir: str
    url_template: str = DEFAULT_URL_TEMPLATE
    margin_seconds: float = 0.5
    max_height: int = 480
    workers: int = 4
    retries: int = 3
    backoff_seconds: float = 2.0
    rate_limit: float = 0.0
    timeout_seconds: float = 120.0
    max_items: int = 0
    retry_failed: bool = False
    log_every: int = 100


@dataclasses.dataclass
class Summary:
    """What a run did; `failed` counts the rows whose fetch failed this run, per reason
    (malformed rows are in failures.jsonl too, counted apart)."""

    rows: int = 0
    downloaded: int = 0
    already_present: int = 0
    failed_before: int = 0
    duplicates: int = 0
    malformed: int = 0
    failed: Dict[str, int] = dataclasses.field(default_factory=dict)
    bytes_written: int = 0
    seconds: float = 0.0

    def format(self) -> str:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "none"
        return (f"{self.rows} rows: {self.downloaded} downloaded ({self.bytes_written / 2**20:.1f}"
                f" MiB), {self.already_present} already there, {self.failed_before} failed in an "
                f"earlier run (skipped), {self.duplicates} duplicate and {self.malformed} malformed "
                f"rows; failed: {failed} ({self.seconds:.0f} s)")


@dataclasses.dataclass(frozen=True)
class _Item:
    clip: manifests.Clip

    @property
    def file(self) -> str:
        return self.clip.clip_id + ".mp4"


def check_config(config: DownloadConfig) -> None:
    """Raises ValueError naming the setting and the fix; nothing is written before it passes."""
    if "{id}" not in config.url_template:
        raise ValueError(f"--url_template {config.url_template!r} has no {{id}}")
    for name in ("workers", "max_height", "log_every"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(config, name)}")
    # "not 0 <= x < inf", not "x < 0": a NaN passes every comparison.
    for name in ("retries", "max_items", "margin_seconds", "backoff_seconds", "rate_limit"):
        if not 0 <= getattr(config, name) < float("inf"):
            raise ValueError(f"--{name} must be a finite number >= 0, got "
                             f"{getattr(config, name)}")
    if not 0 < config.timeout_seconds < float("inf"):
        raise ValueError(f"--timeout_seconds must be a finite number > 0, got "
                         f"{config.timeout_seconds}")
    if not os.path.isfile(config.manifest):
        raise FileNotFoundError(f"--manifest {config.manifest} does not exist (AVSpeech's "
                                "avspeech_train.csv or avspeech_test.csv, docs/data.md)")
    if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
        raise FileExistsError(f"--output_dir {config.output_dir} is a file, not a directory")
    errors.import_yt_dlp()


# ----------------------------------------------------------------------------------------------
# One video: its URLs once, then one cut per row


class _RateLimit:
    """At most `per_second` starts per second across threads (0: no limit)."""

    def __init__(self, per_second: float):
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        time.sleep(start - now)


class _Fetcher:
    """Resolves and cuts; one yt-dlp instance per thread (YoutubeDL is not thread-safe)."""

    def __init__(self, config: DownloadConfig, state: State):
        self.config, self.state = config, state
        self.rate = _RateLimit(config.rate_limit)
        self._local = threading.local()

    def _with_retries(self, what: str, fn):
        """fn() with the retries and backoff of transient `errors.Failure`s."""
        for attempt in range(self.config.retries + 1):
            self.rate.wait()
            try:
                return fn()
            except errors.Failure as e:
                e.attempts = attempt + 1
                if not e.transient or attempt == self.config.retries:
                    raise
                delay = self.config.backoff_seconds * 2**attempt * random.uniform(1.0, 1.25)
                logging.info("%s: %s (%s), try %d of %d in %.1f s", what, e.reason, e.detail,
                             attempt + 2, self.config.retries + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _ydl(self):
        if not hasattr(self._local, "ydl"):
            self._local.ydl = errors.youtube_dl(self.config.max_height,
                                                self.config.timeout_seconds)
        return self._local.ydl

    def video(self, youtube_id: str, items: List[_Item]) -> List[Tuple[_Item, Optional[dict]]]:
        """Every item of one video -> (item, None) when cut, (item, failure entry) when not."""
        url = self.config.url_template.format(id=youtube_id)
        try:
            inputs = self._with_retries(youtube_id, lambda: errors.resolve(self._ydl(), url))
        except errors.Failure as e:
            return [(item, _failure(item, e, url)) for item in items]
        timeout = self.config.timeout_seconds
        if not all(errors.ranges_supported(u, h, timeout) for u, h in inputs):
            # Only a static file server does this (not YouTube): the whole file, once per
            # video, then the cuts from the local copy (docs/data.md, "Getting the data").
            logging.info("%s: the server ignores range requests; fetching the whole video", url)
            local = []
            try:
                for n, (u, h) in enumerate(inputs):
                    local.append(os.path.join(self.config.output_dir, f"{youtube_id}.{n}{WHOLE}"))
                    self._with_retries(youtube_id, lambda: errors.fetch_whole(
                        u, h, local[-1], timeout))
                return self._cuts(items, [("file:" + p, None) for p in local], url)
            except errors.Failure as e:
                return [(item, _failure(item, e, url)) for item in items]
            finally:
                for path in local:
                    if os.path.exists(path):
                        os.remove(path)
        return self._cuts(items, inputs, url)

    def _cuts(self, items: List[_Item], inputs, url: str):
        results = []
        for item in items:
            try:
                self._with_retries(item.clip.clip_id, lambda: self._cut(item, inputs))
                results.append((item, None))
            except errors.Failure as e:
                results.append((item, _failure(item, e, url)))
        return results

    def _cut(self, item: _Item, inputs) -> None:
        clip, margin = item.clip, self.config.margin_seconds
        cut_start = max(0.0, clip.start - margin)
        length = clip.end + margin - cut_start
        final = os.path.join(self.config.output_dir, item.file)
        part = final[:-len(".mp4")] + PART
        command = [media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", "-y"]
        for url, headers in inputs:
            command += ["-rw_timeout", str(int(self.config.timeout_seconds * 1e6))]
            if headers:
                command += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
            command += ["-ss", f"{cut_start:.3f}", "-t", f"{length:.3f}", "-i", url]
        height = self.config.max_height
        command += ["-map", "0:v:0", "-map", f"{len(inputs) - 1}:a:0",
                    "-vf", f"scale=-2:'2*trunc(min(ih,{height})/2)'",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "mp4", part]
        try:
            try:
                result = subprocess.run(command, capture_output=True, check=False,
                                        timeout=self.config.timeout_seconds)
            except subprocess.TimeoutExpired:
                raise errors.Failure(errors.TIMEOUT, f"the cut took over "
                                     f"{self.config.timeout_seconds:.0f} s") from None
            stderr = result.stderr.decode("utf-8", errors="replace")
            if result.returncode != 0 or not os.path.exists(part):
                raise errors.ffmpeg_failure(stderr)
            if "Stream ends prematurely" in stderr:  # ffmpeg may still write what it got
                raise errors.ffmpeg_failure(stderr)
            self._check(part, clip.end - cut_start)
            rel = (clip.start - cut_start, clip.end - cut_start)
            x, y = clip.hint
            row = f"{clip.speaker_id},{rel[0]:.3f},{rel[1]:.3f},{x!r},{y!r},{item.file}"
            self.state.finish(clip.clip_id, item.file, row)
            os.replace(part, final)
        finally:
            if os.path.exists(part):
                os.remove(part)

    @staticmethod
    def _check(path: str, needed: float) -> None:
        try:
            info = clip_media.probe_media(path)
        except manifests.SkipClip as e:
            raise errors.Failure(errors.TRUNCATED, f"the cut does not open ({e})") from None
        if not info.has_audio:
            raise errors.Failure(errors.NO_AUDIO, "the cut has no audio stream")
        if not info.has_video:
            raise errors.Failure(errors.NO_VIDEO, "the cut has no video stream")
        if info.duration is None or info.duration < needed - clip_media.SEGMENT_TOLERANCE:
            raise errors.Failure(errors.TOO_SHORT, f"the cut holds {info.duration} s, the "
                                 f"segment ends at {needed:.3f} s (the video is shorter)")


def _failure(item: _Item, e: "errors.Failure", url: str) -> dict:
    return {"item": item.clip.clip_id, "youtube_id": item.clip.speaker_id, "url": url,
            "reason": e.reason, "detail": e.detail[:500], "transient": e.transient,
            "attempts": e.attempts}


# ----------------------------------------------------------------------------------------------
# The run


def _videos(config: DownloadConfig, state: State, summary: Summary):
    """(youtube_id, items) for consecutive rows of one video still to fetch; counts the rest.
    Malformed rows become failures (`malformed_row`)."""
    seen, group = set(), []
    for item in manifests.read_manifest(config.manifest, "avspeech", config.output_dir):
        if config.max_items and summary.rows >= config.max_items:
            break
        summary.rows += 1
        if isinstance(item, manifests.Reject):
            state.fail({"item": item.item, "reason": item.reason, "detail": item.detail,
                        "transient": False, "attempts": 0})
            summary.malformed += 1
            continue
        clip_id = item.clip_id
        if clip_id in seen:
            summary.duplicates += 1
            continue
        seen.add(clip_id)
        before = state.failures.get(clip_id)
        if clip_id in state.done:
            summary.already_present += 1
        elif before and not before.get("transient") and not config.retry_failed:
            summary.failed_before += 1
        else:
            if group and group[0].clip.speaker_id != item.speaker_id:
                yield group[0].clip.speaker_id, group
                group = []
            group.append(_Item(item))
    if group:
        yield group[0].clip.speaker_id, group


def _count_rows(path: str, max_items: int) -> int:
    with open(path, encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip() and not line.lstrip().startswith("#"))
    return min(n, max_items) if max_items else n


def download(config: DownloadConfig) -> Summary:
    """Fetches the segments of `config.manifest` into `config.output_dir` (module docstring)."""
    check_config(config)
    os.makedirs(config.output_dir, exist_ok=True)
    for stale in (glob.glob(os.path.join(glob.escape(config.output_dir), "*" + PART)) +
                  glob.glob(os.path.join(glob.escape(config.output_dir), "*" + WHOLE))):
        os.remove(stale)  # the cuts in flight when an earlier run was killed
    started, total = time.monotonic(), _count_rows(config.manifest, config.max_items)
    summary, state = Summary(), State(config.output_dir)
    fetcher = _Fetcher(config, state)
    logging.info("%d rows in %s; %d cuts already in %s", total, config.manifest,
                 len(state.done), config.output_dir)
    try:
        with concurrent.futures.ThreadPoolExecutor(config.workers) as pool:
            pending = set()
            for youtube_id, items in _videos(config, state, summary):
                pending.add(pool.submit(fetcher.video, youtube_id, items))
                while len(pending) >= 2 * config.workers:
                    pending = _collect(pending, state, summary, config, started, total)
            while pending:
                pending = _collect(pending, state, summary, config, started, total)
    finally:
        state.close()
    summary.seconds = time.monotonic() - started
    return summary


def _collect(pending, state: State, summary: Summary, config: DownloadConfig, started: float,
             total: int):
    done, pending = concurrent.futures.wait(pending,
                                            return_when=concurrent.futures.FIRST_COMPLETED)
    for future in done:
        for item, failure in future.result():
            before = summary.downloaded + sum(summary.failed.values())
            if failure is None:
                summary.downloaded += 1
                summary.bytes_written += os.path.getsize(
                    os.path.join(config.output_dir, item.file))
            else:
                state.fail(failure)
                summary.failed[failure["reason"]] = summary.failed.get(failure["reason"], 0) + 1
            _progress(summary, before + 1, started, total, config.log_every)
    return pending


def _progress(summary: Summary, fetched: int, started: float, total: int, every: int) -> None:
    if fetched % every:
        return
    elapsed = time.monotonic() - started
    rate = fetched / elapsed if elapsed > 0 else 0.0
    left = max(0, total - (summary.already_present + summary.failed_before + summary.duplicates
                           + fetched))
    eta = left / rate if rate > 0 else float("inf")
    logging.info("%d fetched (%d cut, %d failed) of %d rows, %.2f rows/s, ETA %.0f min",
                 fetched, summary.downloaded, fetched - summary.downloaded, total, rate, eta / 60)
