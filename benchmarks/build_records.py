"""Dataset-builder throughput: clips/s of the Beam pipeline with 1 and 2 workers, and where the
time goes per clip.

    python benchmarks/build_records.py [--num_clips=16] [--detector=cnn] [--workers=1,2]

Makes `num_clips` AVSpeech-like clips at test time (tests/support/fake_media.py: 640×360 H.264/AAC videos,
25 fps, a keyframe every 2 s, of the astronaut photo's face at a varying place, 8 s of
synthesised speech, a 6 s segment each; one AVSpeech CSV with face hints) and seeded random
VGG-Face weights (speed does not depend on their values), then prints:

1. Stages, one clip at a time in this process, seconds per clip: probe, audio decode,
   spectrogram, frame decode, face detection (CNN and HOG), landmarks + crop + JPEG, VGG-Face
   fc7 (batches of 16, per face), encode + write the example.
2. The whole pipeline (`build.build_records`, DirectRunner multi-processing, the
   chosen detector) for each worker count: wall time and clips/s of a run on all clips, and the
   marginal rate (num_clips - k) / (wall(num_clips) - wall(k)) against a run on k = 2 × workers
   clips, which removes the fixed cost (worker processes, imports, loading dlib and VGG-Face in
   every worker) and is what a million-clip job sees.
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from speech2face.datasets.real import build as lib  # noqa: E402
from speech2face.datasets.real import clips, faces, manifests, runners  # noqa: E402
from speech2face import audio, media, records  # noqa: E402
from speech2face.models import vggface  # noqa: E402
from tests.support import fake_media, helpers  # noqa: E402

flags.DEFINE_integer("num_clips", 16, "Clips of the big pipeline run.")
flags.DEFINE_integer("stage_clips", 8, "Clips timed stage by stage.")
flags.DEFINE_enum("detector", "cnn", list(faces.DETECTORS), "Detector of the pipeline runs.")
flags.DEFINE_list("workers", ["1", "2"], "DirectRunner worker counts to time.")
flags.DEFINE_float("video_seconds", 8.0, "Length of each video (the segment is its middle 6 s).")
flags.DEFINE_string("json_out", None, "Also write the numbers here as JSON.")
FLAGS = flags.FLAGS

WIDTH, HEIGHT = 640, 360


def _frame(i):
    """640×360: a grey-brown backdrop with the 320×320 astronaut head pasted at a varying x."""
    canvas = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    canvas[:] = (120, 110, 100)
    x = 40 + (i * 37) % (WIDTH - 320 - 40)
    canvas[20:340, x:x + 320] = fake_media.face_frame()
    return canvas, (x + 0.45 * 320) / WIDTH, (20 + 0.36 * 320) / HEIGHT


def _make_clips(directory, n):
    lines = []
    for i in range(n):
        frame, hx, hy = _frame(i)
        still = fake_media.write_image(os.path.join(directory, f"f{i}.png"), frame)
        wav = helpers.write_wav(os.path.join(directory, f"v{i}.wav"),
                                fake_media.voice(FLAGS.video_seconds, seed=i))
        helpers.run_ffmpeg(["-loop", "1", "-framerate", 25, "-t", FLAGS.video_seconds, "-i", still,
                            "-i", wav, "-map", "0:v:0", "-map", "1:a:0", "-c:v", "libx264",
                            "-preset", "veryfast", "-g", 50, "-pix_fmt", "yuv420p", "-c:a", "aac",
                            "-b:a", "64k", "-shortest", os.path.join(directory, f"vid{i:03d}.mp4")])
        os.remove(still)
        os.remove(wav)
        start = (FLAGS.video_seconds - 6.0) / 2
        lines.append(f"vid{i:03d},{start:.3f},{start + 6.0:.3f},{hx:.4f},{hy:.4f}")
    manifest = os.path.join(directory, "avspeech.csv")
    with open(manifest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return manifest


def _stage_times(manifest, media_dir, weights, output_dir):
    """Seconds per clip of each step, in this process, one clip at a time."""
    items = list(manifests.read_manifest(manifest, "avspeech", media_dir))[:FLAGS.stage_clips]
    finders = {name: faces.FaceFinder(name) for name in faces.DETECTORS}
    extractor = vggface.FaceFeatureExtractor(weights, batch_size=16, log_every=0)
    extractor(np.zeros((16, 224, 224, 3), np.uint8))  # trace once
    totals = {k: 0.0 for k in ("probe", "audio decode", "spectrogram", "frame decode",
                               "detect (cnn)", "detect (hog)", "landmarks + crop + jpeg",
                               "VGG-Face fc7", "encode + write")}
    crops, prepared = [], []

    def timed(key, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        totals[key] += time.perf_counter() - start
        return out

    for clip in items:
        path = manifests.resolve_media(clip.audio_path)
        timed("probe", clips.probe_media, path)
        wave, _ = timed("audio decode", clips.decode_audio_segment, path, clip.start,
                        clip.end - clip.start)
        spec = timed("spectrogram", lambda w: audio.spectrogram_np(
            audio.fit_to_length(w, audio.SEGMENT_SAMPLES)).astype(np.float16), wave)
        frame = timed("frame decode", faces.read_frame, path, 0.5 * (clip.start + clip.end))
        timed("detect (hog)", finders["hog"].detect, frame)
        boxes = timed("detect (cnn)", finders["cnn"].detect, frame)
        box = boxes[faces.pick_face(boxes, frame.shape, clip.hint)]

        def crop_and_landmarks(frame=frame, box=box):
            marks = finders["cnn"].landmarks(frame, box)
            lo, hi = marks.min(axis=0), marks.max(axis=0)
            crop, crop_box = faces.crop_face(frame, (*(0.5 * (lo + hi)), *(hi - lo + 1)))
            return (media.encode_jpeg(crop, faces.JPEG_QUALITY),
                    faces.to_crop_coords(marks, crop_box))

        jpeg, marks = timed("landmarks + crop + jpeg", crop_and_landmarks)
        crops.append(media.decode_jpeg(jpeg))
        prepared.append((clip, spec, wave, jpeg, marks))
    features = timed("VGG-Face fc7", extractor, np.stack(crops))

    def write():
        with records.ShardedWriter(os.path.join(output_dir, "bench")) as writer:
            for (clip, spec, wave, jpeg, marks), feature in zip(prepared, features):
                tiled = audio.fit_to_length(wave, max(wave.size, audio.SEGMENT_SAMPLES))
                writer.write(records.Example(spec, feature, clip.speaker_id, clip.clip_id,
                                             "avspeech", jpeg, marks, tiled))

    timed("encode + write", write)
    return {k: v / len(items) for k, v in totals.items()}


def _pipeline_run(manifest, media_dir, weights, output_dir, workers):
    config = lib.BuildConfig(manifest=manifest, manifest_format="avspeech", media_dir=media_dir,
                             output_dir=output_dir, vggface_weights=weights,
                             random_weights_for_tests=True, detector=FLAGS.detector,
                             test_fraction=0.1)
    start = time.perf_counter()
    result = lib.build_records(config, runners.pipeline_options([], num_workers=workers))
    wall = time.perf_counter() - start
    counts = result.info.counts
    return wall, counts["train"]["clips"] + counts["test"]["clips"]


def main(_):
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; {FLAGS.num_clips} clips of "
          f"{WIDTH}x{HEIGHT}, 25 fps, 6 s segments")
    out = {"cpu_cores": os.cpu_count(), "num_clips": FLAGS.num_clips, "detector": FLAGS.detector}
    with tempfile.TemporaryDirectory() as tmp:
        media_dir = os.path.join(tmp, "videos")
        os.makedirs(media_dir)
        manifest = _make_clips(media_dir, FLAGS.num_clips)
        weights = vggface.random_vggface_weights(os.path.join(tmp, "vgg.h5"), seed=0)

        stages = _stage_times(manifest, media_dir, weights, tmp)
        out["stage_seconds_per_clip"] = stages
        print("\nWhere the time goes, one clip at a time in one process (s per clip)")
        for name, seconds in stages.items():
            print(f"  {name:<26} {seconds:8.3f}")
        serial = sum(v for k, v in stages.items() if k != "detect (hog)")
        print(f"  {'total with CNN':<26} {serial:8.3f}  ({1 / serial:.2f} clips/s)")

        with open(manifest) as f:
            lines = f.readlines()
        print(f"\nThe pipeline (DirectRunner, multi_processing, {FLAGS.detector} detector)")
        print(f"  {'workers':>7} {'clips':>6} {'wall s':>8} {'clips/s':>8} {'small run':>16} "
              f"{'marginal clips/s':>17}")
        out["pipeline"] = {}
        for workers in map(int, FLAGS.workers):
            small = os.path.join(tmp, f"small{workers}.csv")
            k = min(2 * workers, len(lines) - 1)
            with open(small, "w") as f:
                f.writelines(lines[:k])
            wall_k, _ = _pipeline_run(small, media_dir, weights,
                                      os.path.join(tmp, f"small{workers}"), workers)
            wall, n = _pipeline_run(manifest, media_dir, weights,
                                    os.path.join(tmp, f"out{workers}"), workers)
            marginal = (n - k) / max(wall - wall_k, 1e-6)
            out["pipeline"][workers] = {"clips": n, "wall_s": wall, "clips_per_s": n / wall,
                                        "small_run_clips": k, "small_run_wall_s": wall_k,
                                        "marginal_clips_per_s": marginal}
            small_run = f"{k} in {wall_k:.1f} s"
            print(f"  {workers:>7} {n:>6} {wall:8.1f} {n / wall:8.2f} {small_run:>16} "
                  f"{marginal:17.2f}")
            print(f"          hours per million clips at the marginal rate: "
                  f"{1e6 / marginal / 3600:,.0f}")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    app.run(main)
