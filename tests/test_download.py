"""The segment downloader (python -m data_prep.download) and the VoxCeleb2 check, offline.

Every fetch goes to a local HTTP server on 127.0.0.1 (tests/support/http_media.py) that serves
talking-face mp4s made at test time (tests/support/fake_media.py) with range requests, through
`--url_template`: yt-dlp's generic extractor resolves the URL as it would any direct media link.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from speech2face.datasets.real import clips, download, download_errors as errors, faces
from speech2face.datasets.real import manifests, voxceleb_verify
from speech2face import records
from tests.support import fake_media, helpers, http_media

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_SECONDS = 12.0


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _segments(directory):
    return list(manifests.read_manifest(os.path.join(directory, download.SEGMENTS_CSV),
                                        "avspeech", str(directory)))


def _config(manifest, out, server, **kwargs):
    return download.DownloadConfig(manifest=str(manifest), output_dir=str(out),
                                   url_template=server.url_template,
                                   **{"retries": 0, "backoff_seconds": 0.05, "workers": 2,
                                      **kwargs})


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A directory of videos: two talking faces of SOURCE_SECONDS (one of them also cut off by
    the server), the voice of each kept to compare the cuts with."""
    root = tmp_path_factory.mktemp("served")
    voices = {"vid1": fake_media.voice(SOURCE_SECONDS, 0), "vid2": fake_media.voice(8.0, 1)}
    for name, voice in voices.items():
        fake_media.write_talking_video(root / f"{name}.mp4", fake_media.face_frame(), voice)
    os.link(root / "vid1.mp4", root / "cutoff.mp4")
    return root, voices


# ----------------------------------------------------------------------------------------------
# Fast: the manifest row, the reasons, the checks before any work


def test_segments_row_keeps_speaker_and_hint_with_its_own_file():
    clip = manifests.parse_line("abc,0.500,4.000,0.45,0.36,abc_10.000_13.500.mp4", "avspeech",
                                "/seg")
    assert clip.speaker_id == "abc" and clip.clip_id == "abc_10.000_13.500"
    assert clip.audio_path == clip.image_path == "/seg/abc_10.000_13.500.mp4"
    assert (clip.start, clip.end, clip.hint) == (0.5, 4.0, (0.45, 0.36))
    plain = manifests.parse_line("abc,10,13.5,0.45,0.36", "avspeech", "/v")
    assert plain.clip_id == clip.clip_id and plain.audio_path == "/v/abc"
    for line, message in [("abc,0.5,4,0.4,0.3,", r"sixth column\) is empty"),
                          ("abc,0.5,4,0.4", "4 columns, expected 5 or 6")]:
        with pytest.raises(manifests.ManifestError, match=message):
            manifests.parse_line(line, "avspeech", "/seg")


@pytest.mark.parametrize("message, reason", [
    ("[generic] nope: Unable to download webpage: HTTP Error 404: Not Found", errors.NOT_FOUND),
    ("[youtube] abc: Private video. Sign in if you've been granted access", errors.PRIVATE),
    ("[youtube] abc: Video unavailable. This video has been removed by the uploader",
     errors.UNAVAILABLE),
    ("[youtube] abc: Sign in to confirm you're not a bot", errors.RATE_LIMITED),
    ("[youtube] abc: Sign in to confirm your age", errors.AGE_RESTRICTED),
    ("[generic] abc: Unable to download webpage: The read operation timed out",
     errors.TIMEOUT),
    ("[youtube] abc: HTTP Error 503: Service Unavailable", errors.NETWORK),
    ("something new", errors.DOWNLOAD_ERROR),
])
def test_yt_dlp_messages_map_to_reasons(message, reason):
    assert errors._classify(message, errors._YT_DLP, errors.DOWNLOAD_ERROR) == reason
    assert reason in errors.REASONS


def test_ffmpeg_messages_map_to_reasons():
    assert errors.ffmpeg_failure("Stream map '1:a:0' matches no streams.").reason == \
        errors.NO_AUDIO
    assert errors.ffmpeg_failure("[http @ 0x1] Stream ends prematurely at 282710, should be "
                                 "286828\nmoov atom not found").reason == errors.TRUNCATED
    assert errors.ffmpeg_failure("Server returned 404 Not Found").reason == errors.NOT_FOUND
    failure = errors.ffmpeg_failure("Connection timed out")
    assert failure.reason == errors.TIMEOUT and failure.transient
    assert not errors.Failure(errors.NOT_FOUND, "x").transient


def test_bad_settings_fail_before_anything_is_written(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("abc,1,4,0.5,0.5\n")
    out = tmp_path / "out"
    cases = [({"url_template": "http://host/video"}, "has no {id}"),
             ({"workers": 0}, "--workers must be at least 1"),
             # NaN passes every "< 0" test: it would start fetching with no rate limit.
             ({"rate_limit": float("nan")}, "--rate_limit must be a finite number >= 0"),
             ({"margin_seconds": float("inf")}, "--margin_seconds must be a finite"),
             ({"timeout_seconds": float("nan")}, "--timeout_seconds must be a finite"),
             ({"manifest": str(tmp_path / "nope.csv")}, "does not exist")]
    for change, message in cases:
        config = download.DownloadConfig(**{"manifest": str(manifest), "output_dir": str(out),
                                            **change})
        with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
            download.download(config)
    assert not out.exists()


def test_rate_limit_spaces_the_starts():
    limit = download._RateLimit(20.0)
    started = time.monotonic()
    for _ in range(5):
        limit.wait()
    assert time.monotonic() - started >= 4 / 20.0 - 0.01


# ----------------------------------------------------------------------------------------------
# Against the local server


@pytest.fixture(scope="module")
def fetched(media, tmp_path_factory):
    """One download run: two rows of vid1, one of vid2, a missing id, a cut-off transfer and
    a malformed row."""
    root, _ = media
    work = tmp_path_factory.mktemp("download")
    rows = ["vid1,2.0,5.5,0.45,0.36", "vid1,7.25,11.0,0.45,0.36", "vid2,0.2,3.0,0.45,0.36",
            "missing,1,4,0.5,0.5", "cutoff,2,5,0.5,0.5", "vid2,x,3,0.5,0.5"]
    manifest = work / "avspeech.csv"
    manifest.write_text("\n".join(rows) + "\n")
    with http_media.MediaServer(root, truncate={"cutoff.mp4"}) as server:
        summary = download.download(_config(manifest, work / "out", server, retries=1))
        first = dict(server.requests)
        server.reset()
        again = download.download(_config(manifest, work / "out", server, retries=1))
        second = dict(server.requests)
    return {"out": work / "out", "summary": summary, "again": again, "first": first,
            "second": second, "manifest": manifest}


def test_segments_are_cut_where_the_rows_say(fetched, media):
    _, voices = media
    out = fetched["out"]
    segments = {clip.clip_id: clip for clip in _segments(out)}
    assert set(segments) == {"vid1_2.000_5.500", "vid1_7.250_11.000", "vid2_0.200_3.000"}
    finder = faces.FaceFinder("hog")
    for clip_id, clip in segments.items():
        youtube_id, start, end = clip_id.split("_")[0], *map(float, clip_id.split("_")[1:])
        assert clip.speaker_id == youtube_id and clip.hint == (0.45, 0.36)
        cut_start = max(0.0, start - 0.5)
        assert clip.start == pytest.approx(start - cut_start, abs=1e-3)
        assert clip.end == pytest.approx(end - cut_start, abs=1e-3)
        info = clips.probe_media(clip.audio_path)
        assert info.has_audio and info.has_video
        # The audio is as long as asked (the picture runs to the next frame, 0.2 s at 5 fps).
        cut, _ = clips.decode_audio_segment(clip.audio_path, 0.0, None)
        assert cut.size / 16000 == pytest.approx(end + 0.5 - cut_start, abs=0.05)
        assert info.duration >= cut.size / 16000 - 0.05
        # The cut's voice is the source's from cut_start on: best aligned within 40 ms.
        source = voices[youtube_id][int(cut_start * 16000):][:cut.size]
        corr = [np.corrcoef(cut[lag:lag + 16000], source[1000:17000])[0, 1]
                for lag in range(360, 1641, 40)]
        assert max(corr) > 0.9 and abs(360 + 40 * int(np.argmax(corr)) - 1000) <= 640
        frame = faces.read_frame(clip.audio_path, (clip.start + clip.end) / 2)
        assert frame.shape[0] <= 480 and finder.find(frame, clip.hint).crop.shape == (224, 224, 3)


def test_failures_are_listed_with_reasons_and_nothing_good_is_lost(fetched):
    out, summary = fetched["out"], fetched["summary"]
    failures = {f["item"]: f for f in _read_jsonl(out / download.FAILURES)}
    assert {item: f["reason"] for item, f in failures.items()} == {
        "missing_1.000_4.000": errors.NOT_FOUND, "cutoff_2.000_5.000": errors.TRUNCATED,
        "vid2,x,3,0.5,0.5": manifests.Reason.MALFORMED_ROW}
    assert failures["cutoff_2.000_5.000"]["attempts"] == 2  # retried once
    assert all(f["detail"] for f in failures.values())
    assert (summary.rows, summary.downloaded, summary.malformed) == (6, 3, 1)
    assert summary.failed == {errors.NOT_FOUND: 1, errors.TRUNCATED: 1}
    assert summary.bytes_written == sum(os.path.getsize(out / f"{c}.mp4") for c in (
        "vid1_2.000_5.500", "vid1_7.250_11.000", "vid2_0.200_3.000"))
    assert not list(out.glob("*" + download.PART))


def test_rerun_fetches_nothing_that_is_done_or_failed_for_good(fetched):
    again, second = fetched["again"], fetched["second"]
    assert fetched["first"]["vid1.mp4"] >= 2 and fetched["first"]["missing.mp4"] == 1
    # Only the transient failure (the cut-off transfer) is tried again.
    assert set(second) == {"cutoff.mp4"}
    assert (again.downloaded, again.already_present, again.failed_before) == (0, 3, 1)
    assert again.failed == {errors.TRUNCATED: 1}
    assert len(_segments(fetched["out"])) == 3


def test_max_items_and_a_second_manifest_of_the_same_video(fetched, media, tmp_path):
    root, _ = media
    out = tmp_path / "out"
    shutil.copytree(fetched["out"], out)
    manifest = tmp_path / "more.csv"
    manifest.write_text("vid1,2.0,5.5,0.45,0.36\nvid1,0.0,2.0,0.45,0.36\nvid2,1,2,0.5,0.5\n")
    with http_media.MediaServer(root) as server:
        summary = download.download(_config(manifest, out, server, max_items=2))
        assert set(server.requests) == {"vid1.mp4"}
    assert (summary.rows, summary.already_present, summary.downloaded) == (2, 1, 1)
    assert {c.clip_id for c in _segments(out)} == {
        "vid1_2.000_5.500", "vid1_7.250_11.000", "vid2_0.200_3.000", "vid1_0.000_2.000"}


@pytest.mark.slow
def test_killed_run_then_rerun_loses_only_what_was_in_flight(media, tmp_path):
    root, _ = media
    ids = [f"v{i}" for i in range(5)]
    for name in ids:
        os.link(root / "vid2.mp4", tmp_path / f"{name}.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text("".join(f"{name},1.0,3.0,0.45,0.36\n" for name in ids))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": REPO}
    with http_media.MediaServer(tmp_path, delay=0.3) as server:
        command = [sys.executable, "-m", "data_prep.download", f"--manifest={manifest}",
                   f"--output_dir={out}", f"--url_template={server.url_template}",
                   "--workers=1", "--retries=0"]
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        journal = out / download.JOURNAL
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Finished: renamed from .part.mp4 (a journal line may precede the rename).
        done_first = {p.name.split("_")[0] for p in out.glob("*.mp4")
                      if not p.name.endswith(download.PART)}
        assert 2 <= len(done_first) < len(ids)
        assert not (out / download.SEGMENTS_CSV).exists()  # written at the end only
        server.reset()
        result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert not any(server.requests[f"{name}.mp4"] for name in done_first)
        assert all(server.requests[f"{name}.mp4"] for name in set(ids) - done_first)
    assert f"{len(done_first)} already there" in result.stdout
    rows = [c.clip_id for c in _segments(out)]
    assert sorted(rows) == sorted(f"{name}_1.000_3.000" for name in ids)  # no duplicates
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{r}.mp4" for r in rows)


@pytest.mark.slow
def test_download_then_build_records_one_record_per_good_segment(fetched, tmp_path,
                                                                shared_random_weights):
    from speech2face.datasets.real import build, runners  # pylint: disable=import-outside-toplevel
    out = fetched["out"]
    config = build.BuildConfig(manifest=str(out / download.SEGMENTS_CSV),
                               manifest_format="avspeech", media_dir=str(out),
                               output_dir=str(tmp_path / "records"), vggface_weights=None,
                               random_weights_for_tests=True, detector="hog",
                               min_face_size=80)
    result = build.build_records(config, runners.pipeline_options(
        ["--direct_running_mode=in_memory", "--direct_num_workers=1"]))
    examples = [records.decode_example(raw.numpy()) for path in
                sorted(glob.glob(os.path.join(config.output_dir, "*.tfrecord")))
                for raw in tf.data.TFRecordDataset(path)]
    expected = {c.clip_id for c in _segments(out)}
    assert sorted(e.clip_id for e in examples) == sorted(expected) and len(expected) == 3
    assert {e.clip_id: e.speaker_id for e in examples} == {c: c.split("_")[0] for c in expected}
    assert result.info.details["rejects"]["total"] == 0


# ----------------------------------------------------------------------------------------------
# VoxCeleb2: a tree the user downloaded


def test_voxceleb2_tree_is_checked_and_its_manifest_written(tmp_path, media):
    root, _ = media
    tree, out = tmp_path / "mp4", tmp_path / "checked"
    for rel in ("id00001/vidA/00001.mp4", "id00001/vidA/00002.mp4", "id00001/vidB/00001.mp4",
                "id00002/vidC/00001.mp4", "loose.mp4"):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(root / "vid2.mp4", tree / rel)
    helpers.write_video_without_audio(tree / "id00002/vidC/00002.mp4", 2.0)
    fake_media.write_corrupt_file(tree / "id00002/vidC/00003.mp4")
    (tree / "id00002/vidC/00004.m4a").write_bytes(b"audio only")
    summary = voxceleb_verify.verify(str(tree), str(out), workers=2)
    manifest = (out / voxceleb_verify.MANIFEST).read_text().split()
    assert manifest == ["id00001/vidA/00001.mp4", "id00001/vidA/00002.mp4",
                        "id00001/vidB/00001.mp4", "id00002/vidC/00001.mp4"]
    problems = {f["item"]: f["reason"] for f in _read_jsonl(out / voxceleb_verify.FAILURES)}
    assert problems == {"loose.mp4": voxceleb_verify.BAD_LAYOUT,
                        "id00002/vidC/00002.mp4": voxceleb_verify.NO_AUDIO,
                        "id00002/vidC/00003.mp4": voxceleb_verify.UNREADABLE,
                        "id00002/vidC/00004.m4a": voxceleb_verify.NOT_VIDEO}
    assert (out / voxceleb_verify.SPEAKERS_CSV).read_text().splitlines() == [
        "speaker_id,videos,utterances,problems", "id00001,2,3,0", "id00002,1,1,3"]
    assert summary.per_speaker == {"id00001": 3, "id00002": 1} and summary.videos == 3
    # What the builder reads: the manifest's lines parse as VoxCeleb2 clips of the tree.
    clip = manifests.parse_line(manifest[0], "voxceleb2", str(tree))
    assert clip.speaker_id == "id00001" and os.path.exists(clip.audio_path)


@pytest.mark.slow
def test_cli_errors_are_one_line_and_verify_writes_the_manifest(tmp_path, media):
    env = {**os.environ, "PYTHONPATH": REPO}
    base = [sys.executable, "-m", "data_prep.download", f"--output_dir={tmp_path / 'out'}"]

    def run(*args):
        return subprocess.run(base + list(args), cwd=REPO, env=env, capture_output=True,
                              text=True, check=False)

    result = run(f"--manifest={tmp_path / 'nope.csv'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "download.py: error: --manifest")
    result = run("--manifest_format=voxceleb2")
    assert result.returncode != 0 and "cannot be downloaded anonymously" in result.stderr
    assert not (tmp_path / "out").exists()
    tree = tmp_path / "mp4" / "id00007" / "vid"
    tree.mkdir(parents=True)
    os.link(media[0] / "vid2.mp4", tree / "00001.mp4")
    result = run("--manifest_format=voxceleb2", "--verify", f"--media_dir={tmp_path / 'mp4'}")
    assert result.returncode == 0, result.stderr
    assert "1 good utterances of 1 speakers" in result.stdout
    assert (tmp_path / "out" / voxceleb_verify.MANIFEST).read_text() == "id00007/vid/00001.mp4\n"


def test_a_plain_http_server_without_ranges_is_enough(media, tmp_path):
    """Python's own `http.server` answers every request with the whole file (no range
    requests): each video is fetched once and cut locally; the missing id is a failure; a
    rerun sends no request at all."""
    import collections
    import functools
    import http.server
    import threading

    root, _ = media
    served = collections.Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            served[self.path.split("?")[0].lstrip("/")] += 1
            super().do_GET()

        def log_message(self, *args):
            del args

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        manifest = tmp_path / "rows.csv"
        manifest.write_text("vid1,2.0,5.5,0.45,0.36\nvid2,0.2,3.0,0.45,0.36\nnope,1,4,0.5,0.5\n")
        config = download.DownloadConfig(
            manifest=str(manifest), output_dir=str(tmp_path / "out"), retries=0,
            backoff_seconds=0.05, workers=2,
            url_template=f"http://127.0.0.1:{server.server_address[1]}/{{id}}.mp4")
        summary = download.download(config)
        assert summary.downloaded == 2 and summary.failed == {errors.NOT_FOUND: 1}
        failures = _read_jsonl(tmp_path / "out" / download.FAILURES)
        assert [f["reason"] for f in failures] == [errors.NOT_FOUND]
        assert {c.clip_id for c in _segments(tmp_path / "out")} == {
            "vid1_2.000_5.500", "vid2_0.200_3.000"}
        served.clear()
        again = download.download(config)
        assert again.downloaded == 0 and again.already_present == 2 and not served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
