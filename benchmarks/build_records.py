"""Dataset-builder throughput: where a clip's time goes, the faces each path finds, and clips/s
of the Beam pipeline, the new path against the old one in the same run.

    python benchmarks/build_records.py [--num_clips=36] [--workers=2] [--json=PATH]

Makes `num_clips` AVSpeech-like clips at test time (640×360 H.264/AAC videos, 25 fps, a keyframe
every 2 s, of the astronaut photo's face (tests/support/fake_media.py) at a varying place, 8 s of
synthesised speech, a 6 s segment each, one AVSpeech CSV with face hints), the test suite's
kinds of media (two faces and a hint for each, a face turned by 60° that HOG misses, a face too
small, no face, silence, a 1280×720 frame) and seeded random VGG-Face weights (speed does not
depend on their values). "old" is the builder before the window near the hint
(`--nodetect_near_hint`: dlib's CNN scans every frame whole); "new" the default
(`faces.FaceFinder.detect_near_hint`). It prints:

1. Stages, one clip at a time in this process, seconds per clip.
2. Faces found by each path on every clip, the reject reasons, and how far apart the two paths'
   landmarks and crops are.
3. The whole pipeline (`build.build_records`, DirectRunner multi-processing, CNN detector), old
   and new, for each worker count: wall time and clips/s of a run on all clips, and the marginal
   rate (num_clips - k) / (wall(num_clips) - wall(k)) against a run on k = 2 × workers clips,
   which removes the fixed cost (worker processes, imports, loading dlib and VGG-Face in every
   worker) and is what a million-clip job sees; faces per VGG-Face batch.
"""

import collections
import json
import logging
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The test suite's media makers (tests/support) live in the checkout, not in the installed
# package: `python benchmarks/build_records.py` puts only benchmarks/ on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging as absl_logging  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face.datasets.real import build as lib  # noqa: E402
from speech2face.datasets.real import clips, faces, manifests, runners  # noqa: E402
from speech2face.datasets.real.manifests import SkipClip  # noqa: E402
from speech2face import audio, media, records  # noqa: E402
from speech2face.models import vggface  # noqa: E402
from tests.support import fake_media, helpers  # noqa: E402

flags.DEFINE_integer("num_clips", 36, "Clips of the big pipeline run: 36 = 4 + 16 × 2, one "
                     "full VGG-Face batch per worker more than the small run of 2 × 2 clips, so "
                     "that the marginal rate carries VGG-Face's whole cost.")
flags.DEFINE_integer("stage_clips", 6, "Clips timed stage by stage.")
flags.DEFINE_list("workers", ["2"], "DirectRunner worker counts to time.")
flags.DEFINE_multi_enum("part", ["stages", "faces", "pipeline"], ["stages", "faces", "pipeline"],
                        "Parts to run (repeat the flag); the pipeline takes minutes.")
flags.DEFINE_float("video_seconds", 8.0, "Length of each video (the segment is its middle 6 s).")
flags.DEFINE_string("json", None, "Also write the numbers here as JSON.")
flags.DEFINE_alias("json_out", "json")
FLAGS = flags.FLAGS

WIDTH, HEIGHT = 640, 360
PATHS = {"old": False, "new": True}  # detect_near_hint


def _frame(i):
    """640×360: a grey-brown backdrop with the 320×320 astronaut head pasted at a varying x."""
    canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    canvas[:] = (120, 110, 100)
    x = 40 + (i * 37) % (WIDTH - 320 - 40)
    canvas[20:340, x:x + 320] = fake_media.face_frame()
    return canvas, (x + 0.45 * 320) / WIDTH, (20 + 0.36 * 320) / HEIGHT


def _write_video(path, frame, waveform, gop=50):
    still = fake_media.write_image(path + ".png", frame)
    wav = helpers.write_wav(path + ".wav", waveform)
    helpers.run_ffmpeg(["-loop", "1", "-framerate", 25, "-t", len(waveform) / 16000, "-i", still,
                        "-i", wav, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264",
                        "-preset", "veryfast", "-g", gop, "-pix_fmt", "yuv420p", "-c:a", "aac",
                        "-b:a", "64k", "-shortest", path])
    os.remove(still)
    os.remove(wav)


def _make_clips(directory, n):
    lines = []
    for i in range(n):
        frame, hx, hy = _frame(i)
        _write_video(os.path.join(directory, f"vid{i:03d}.mp4"), frame,
                     fake_media.voice(FLAGS.video_seconds, seed=i))
        start = (FLAGS.video_seconds - 6.0) / 2
        lines.append(f"vid{i:03d},{start:.3f},{start + 6.0:.3f},{hx:.4f},{hy:.4f}")
    manifest = os.path.join(directory, "avspeech.csv")
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return manifest


def _test_media(directory):
    """AVSpeech rows for the test suite's kinds of media, with their hints."""
    frame, hx, hy = _frame(3)
    tilted = np.asarray(Image.fromarray(frame).rotate(60, center=(hx * WIDTH, hy * HEIGHT),
                                                      fillcolor=(120, 110, 100)))
    cases = {"twofaces": (fake_media.two_face_frame(), [(0.75, 0.4), (0.25, 0.4)]),
             "oneface": (fake_media.face_frame(), [(0.45, 0.36)]),
             "turned60": (tilted, [(hx, hy)]),
             "big": (np.asarray(Image.fromarray(frame).resize((1280, 720))), [(hx, hy)]),
             "photo": (fake_media.astronaut(), [(0.42, 0.23)]),
             "smallface": (fake_media.small_face_frame(320), [(0.42, 0.23)]),
             "noface": (fake_media.no_face_frame(), [(0.5, 0.5)])}
    rows = []
    for name, (image, hints) in cases.items():
        _write_video(os.path.join(directory, f"{name}.mp4"), np.ascontiguousarray(image),
                     fake_media.voice(3.0, seed=7))
        rows += [f"{name},{0.1 * i:.1f},3,{x},{y}" for i, (x, y) in enumerate(hints)]
    _write_video(os.path.join(directory, "silent.mp4"), fake_media.face_frame(),
                 np.zeros(3 * 16000, np.float32))
    return rows + ["silent,0,3,0.45,0.36"]


def _config(**kwargs):
    return lib.BuildConfig(manifest=None, manifest_format="avspeech", media_dir="",
                           output_dir="", vggface_weights=None, **kwargs)


def _stage_times(items, weights, output_dir):
    """Seconds per clip of each step, in this process, one clip at a time."""
    finders = {"old": faces.FaceFinder("cnn", near_hint=False), "new": faces.FaceFinder("cnn"),
               "hog": faces.FaceFinder("hog")}
    extractor = vggface.FaceFeatureExtractor(weights, batch_size=16, log_every=0)
    extractor(np.zeros((1, 224, 224, 3), np.uint8))  # trace once
    totals = collections.defaultdict(float)
    crops, prepared = [], []

    def timed(key, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        totals[key] += time.perf_counter() - start
        return out

    for clip in items:
        path = manifests.resolve_media(clip.audio_path)
        timed("ffmpeg: probe", clips.probe_media, path)
        wave, _ = timed("ffmpeg: audio decode", clips.decode_audio_segment, path, clip.start,
                        clip.end - clip.start)
        times = timed("frame selection", faces.frame_times, clip.start, clip.end, 3)
        frame = timed("ffmpeg: frame decode", faces.read_frame, path, times[0])
        timed("detect: HOG, whole frame", finders["hog"].detect, frame)
        boxes = timed("detect: CNN, whole frame (old)", finders["old"].detect, frame)
        near = timed("detect: CNN near the hint (new)", finders["new"].detect_near_hint, frame,
                     clip.hint)
        box = (near or boxes)[faces.pick_face(near or boxes, frame.shape, clip.hint)]
        marks = timed("landmarks (dlib 68)", finders["new"].landmarks, frame, box)
        lo, hi = marks.min(axis=0), marks.max(axis=0)
        crop, crop_box = timed("crop + resize to 224", faces.crop_face, frame,
                               (*(0.5 * (lo + hi)), *(hi - lo + 1)))
        jpeg = timed("JPEG encode", media.encode_jpeg, crop, faces.JPEG_QUALITY)
        spec = timed("spectrogram", lambda w: audio.spectrogram_np(
            audio.fit_to_length(w, audio.SEGMENT_SAMPLES)).astype(np.float16), wave)
        crops.append(media.decode_jpeg(jpeg))
        prepared.append((clip, spec, wave, jpeg, faces.to_crop_coords(marks, crop_box)))
    n = len(items)
    features = extractor(np.stack(crops))
    full = np.resize(np.stack(crops), (16, 224, 224, 3))
    timed("VGG-Face fc7, full batches of 16", extractor, full)
    totals["VGG-Face fc7, full batches of 16"] *= n / 16
    for crop in crops[:2]:  # what the old adaptive batching often sent: one face, padded
        timed("VGG-Face fc7, 1 face per batch", extractor, crop[None])
    totals["VGG-Face fc7, 1 face per batch"] *= n / 2

    def write():
        with records.ShardedWriter(os.path.join(output_dir, "bench")) as writer:
            for (clip, spec, wave, jpeg, marks), feature in zip(prepared, features):
                tiled = audio.fit_to_length(wave, max(wave.size, audio.SEGMENT_SAMPLES))
                writer.write(records.Example(spec, feature, clip.speaker_id, clip.clip_id,
                                             "avspeech", jpeg, marks, tiled))

    timed("encode + write the example", write)
    return {k: v / n for k, v in totals.items()}


def _faces_found(items):
    """Each path's outcome per clip (a face, or the reject reason) and how the two agree."""
    outcomes, seconds = {}, {}
    for name, near in PATHS.items():
        finder = faces.FaceFinder("cnn", near_hint=near)
        start = time.perf_counter()
        outcomes[name] = {}
        for clip in items:
            try:
                outcomes[name][clip.clip_id] = clips.prepare_clip(clip, finder, _config())
            except SkipClip as e:
                outcomes[name][clip.clip_id] = e.reason
        seconds[name] = time.perf_counter() - start
        if near:
            counts = dict(finder.counts)
    summary = {}
    for name, found in outcomes.items():
        kept = [k for k, v in found.items() if isinstance(v, clips.Prepared)]
        summary[name] = {"faces_found": len(kept), "seconds": seconds[name],
                         "rejects": dict(collections.Counter(
                             v for v in found.values() if isinstance(v, str)))}
    same, landmark_diffs, pixel_diffs = True, [], []
    for clip_id, old in outcomes["old"].items():
        new = outcomes["new"][clip_id]
        if isinstance(old, str) or isinstance(new, str):
            same = same and old == new
            continue
        landmark_diffs.append(float(np.abs(old.landmarks - new.landmarks).mean()))
        pixel_diffs.append(float(np.abs(media.decode_jpeg(old.face_jpeg).astype(np.float32)
                                        - media.decode_jpeg(new.face_jpeg)).mean()))
    summary["same_outcome_for_every_clip"] = same
    summary["landmarks_mean_abs_diff_crop_px"] = {"mean": float(np.mean(landmark_diffs)),
                                                  "max": float(np.max(landmark_diffs))}
    summary["crop_mean_abs_diff_of_255"] = {"mean": float(np.mean(pixel_diffs)),
                                            "max": float(np.max(pixel_diffs))}
    summary["new_path_answered"] = counts
    return summary


def _pipeline_run(manifest, media_dir, weights, output_dir, workers, near_hint):
    config = lib.BuildConfig(manifest=manifest, manifest_format="avspeech", media_dir=media_dir,
                             output_dir=output_dir, vggface_weights=weights,
                             random_weights_for_tests=True, detector="cnn",
                             test_fraction=0.1, detect_near_hint=near_hint)
    start, before = time.perf_counter(), os.times()
    result = lib.build_records(config, runners.pipeline_options([], num_workers=workers))
    wall, after = time.perf_counter() - start, os.times()
    # CPU seconds of this process and its finished children (the worker processes): what the
    # other jobs on a shared machine change least.
    cpu = sum(b - a for a, b in zip(before[:4], after[:4]))
    counts = result.info.counts
    return wall, cpu, counts["train"]["clips"] + counts["test"]["clips"], result.counters


def _pipelines(manifest, media_dir, weights, tmp):
    with open(manifest) as f:
        lines = f.readlines()
    print("\nThe pipeline (DirectRunner, multi_processing, CNN detector)")
    print(f"  {'path':>4} {'workers':>7} {'clips':>6} {'wall s':>7} {'clips/s':>8} "
          f"{'small run':>14} {'marginal clips/s':>17} {'faces/batch':>11} "
          f"{'core-s/clip':>11} {'clips/s, idle':>14}")
    print("  (core-s/clip: marginal CPU seconds of all processes per clip; clips/s, idle: "
          "the cores / that, the rate with the machine to ourselves)")
    out = {}
    for workers in map(int, FLAGS.workers):
        k = min(2 * workers, len(lines) - 1)
        small = os.path.join(tmp, f"small{workers}.csv")
        with open(small, "w") as f:
            f.writelines(lines[:k])
        for name, near in PATHS.items():
            tag = f"{name}{workers}"
            wall_k, cpu_k, _, _ = _pipeline_run(small, media_dir, weights,
                                                os.path.join(tmp, "s" + tag), workers, near)
            wall, cpu, n, counters = _pipeline_run(manifest, media_dir, weights,
                                                   os.path.join(tmp, "o" + tag), workers, near)
            marginal = (n - k) / max(wall - wall_k, 1e-6)
            core_s = (cpu - cpu_k) / (n - k)
            per_batch = n / max(counters.get("face_batches", 0), 1)
            out[tag] = {"path": name, "workers": workers, "clips": n, "wall_s": wall,
                        "clips_per_s": n / wall, "small_run_clips": k, "small_run_wall_s": wall_k,
                        "marginal_clips_per_s": marginal, "faces_per_vgg_batch": per_batch,
                        "hours_per_million_clips": 1e6 / marginal / 3600,
                        "cpu_s": cpu, "small_run_cpu_s": cpu_k, "marginal_core_s_per_clip": core_s}
            print(f"  {name:>4} {workers:>7} {n:>6} {wall:7.1f} {n / wall:8.2f} "
                  f"{f'{k} in {wall_k:.1f} s':>14} {marginal:17.2f} {per_batch:11.1f} "
                  f"{core_s:11.2f} {os.cpu_count() / core_s:14.2f}")
        old, new = out[f"old{workers}"], out[f"new{workers}"]
        ratio = new["marginal_clips_per_s"] / old["marginal_clips_per_s"]
        cpu_ratio = old["marginal_core_s_per_clip"] / new["marginal_core_s_per_clip"]
        out[f"ratio_new_over_old_{workers}"] = ratio
        out[f"cpu_ratio_old_over_new_{workers}"] = cpu_ratio
        print(f"  {workers} workers: new/old marginal rate {ratio:.2f}×, CPU per clip old/new "
              f"{cpu_ratio:.2f}×; hours per million clips "
              f"{out[f'old{workers}']['hours_per_million_clips']:,.0f} -> "
              f"{out[f'new{workers}']['hours_per_million_clips']:,.0f}")
    return out


def main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)  # Beam's per-worker INFO lines
    load = os.getloadavg()
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {FLAGS.num_clips} clips of "
          f"{WIDTH}x{HEIGHT}, 25 fps, 6 s segments")
    out = {"cpu_cores": os.cpu_count(), "num_clips": FLAGS.num_clips, "load_average_start": load}
    with tempfile.TemporaryDirectory() as tmp:
        media_dir = os.path.join(tmp, "videos")
        os.makedirs(media_dir)
        manifest = _make_clips(media_dir, FLAGS.num_clips)
        weights = vggface.random_vggface_weights(os.path.join(tmp, "vgg.h5"), seed=0)
        with open(manifest) as f:
            rows = f.read().split() + _test_media(media_dir)
        items = [manifests.parse_line(r, "avspeech", media_dir) for r in rows]

        if "stages" in FLAGS.part:
            _print_stages(out, _stage_times(items[:FLAGS.stage_clips], weights, tmp))
        if "faces" in FLAGS.part:
            _print_faces(out, _faces_found(items), len(items))
        if "pipeline" in FLAGS.part:
            out["pipeline"] = _pipelines(manifest, media_dir, weights, tmp)
    out["load_average_end"] = os.getloadavg()
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in out['load_average_end'])}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"wrote {FLAGS.json}")


def _print_stages(out, stages):
    out["stage_seconds_per_clip"] = stages
    print("\nWhere the time goes, one clip at a time in one process (s per clip)")
    for name, seconds in stages.items():
        print(f"  {name:<34} {seconds:8.3f}")
    common = sum(v for k, v in stages.items() if not k.startswith(("detect", "VGG")))
    vgg = stages["VGG-Face fc7, full batches of 16"]
    old = common + stages["detect: CNN, whole frame (old)"] + vgg
    new = common + stages["detect: CNN near the hint (new)"] + vgg
    out["stage_total_old_s"], out["stage_total_new_s"] = old, new
    print(f"  {'total, old (whole frame)':<34} {old:8.3f}  ({1 / old:.2f} clips/s)\n"
          f"  {'total, new (near the hint)':<34} {new:8.3f}  ({1 / new:.2f} clips/s, "
          f"{old / new:.2f}× the old)")


def _print_faces(out, found, num_items):
    out["faces"] = found
    print(f"\nFaces found on {num_items} clips ({FLAGS.num_clips} benchmark clips and "
          f"{num_items - FLAGS.num_clips} of the test suite's kinds)")
    for name in PATHS:
        f = found[name]
        print(f"  {name}: {f['faces_found']} faces, rejects {f['rejects']}, "
              f"{f['seconds'] / num_items:.2f} s per clip")
    print(f"  same outcome (a face, or the same reject reason) for every clip: "
          f"{found['same_outcome_for_every_clip']}; the new path answered by "
          f"{found['new_path_answered']}\n  new vs old landmarks, mean abs diff in crop px: "
          f"{found['landmarks_mean_abs_diff_crop_px']}\n  crops, mean abs diff of 255: "
          f"{found['crop_mean_abs_diff_of_255']}")


if __name__ == "__main__":
    app.run(main)
