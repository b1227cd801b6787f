"""The real-data builder: manifests, faces, the Beam pipeline end to end, the CLI.

Media are made at test time (tests/support/fake_media.py): mp4/mkv videos of a real face photo with a
synthesised voice, plus every kind of bad input. The pipeline runs in-process on the DirectRunner
(`in_memory`, one worker) with dlib's HOG detector for speed; the CLI test runs the defaults
(multi-processing DirectRunner, CNN detector). VGG-Face weights are seeded random (one file per
module).
"""

import collections
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from speech2face.datasets.real import build as lib
from speech2face.datasets.real import clips, config as build_config, faces, manifests, runners
from speech2face.datasets.real import shards
from speech2face.datasets.real.manifests import Reason
from speech2face import audio, media, records
from speech2face.records import dataset_info
from speech2face.models import vggface
from tests.support import fake_media, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IN_PROCESS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


# ----------------------------------------------------------------------------------------------
# Shared fixtures


@pytest.fixture(scope="module")
def weights(tiny_weights):
    """The session's one full random-weight VGG-Face file (~553 MiB): the tiny world's."""
    return tiny_weights


@pytest.fixture(scope="module")
def hog():
    return faces.FaceFinder("hog")


def _ids_in_each_split(prefix, test_fraction=0.5):
    """A speaker id that `split_for` puts in train and one it puts in test."""
    found = {}
    for i in range(100):
        found.setdefault(lib.split_for(f"{prefix}{i}", test_fraction), f"{prefix}{i}")
    return found["train"], found["test"]


def _read_examples(directory):
    out = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(directory, "*.tfrecord"))):
        for raw in tf.data.TFRecordDataset(path):
            example = records.decode_example(raw.numpy())
            out[example.clip_id] = (os.path.basename(path), example)
    return out


def _read_rejects(directory):
    with open(os.path.join(directory, shards.REJECTS)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _check_example(example, hog):
    """Shapes and dtypes of one stored example, and that its crop still holds a face."""
    assert example.spectrogram.shape == (598, 257, 2) and example.spectrogram.dtype == np.float16
    assert example.face_feature.shape == (4096,) and np.all(np.isfinite(example.face_feature))
    assert np.all(example.face_feature >= 0) and example.face_feature.max() > 0  # fc7 after ReLU
    assert example.waveform.dtype == np.int16 and example.waveform.size >= audio.SEGMENT_SAMPLES
    # The stored spectrogram is that of the first 6 s of the stored (tiled) waveform; compared
    # with the power law undone, since |x|^0.3 magnifies the int16 rounding near 0.
    wav = example.waveform[:audio.SEGMENT_SAMPLES].astype(np.float32) / 32767.0

    def linear(s):
        return np.sign(s) * np.abs(s.astype(np.float64)) ** (1 / audio.POWER)

    expected = linear(audio.spectrogram_np(wav))
    np.testing.assert_allclose(linear(example.spectrogram), expected,
                               atol=2e-3 * np.abs(expected).max())
    crop = media.decode_jpeg(example.face_jpeg)
    assert crop.shape == (224, 224, 3)
    assert example.landmarks.shape == (68, 2)
    assert np.all(example.landmarks >= -0.5) and np.all(example.landmarks <= 223.5)
    assert hog.detect(crop), "the stored crop no longer holds a detectable face"
    return crop


# ----------------------------------------------------------------------------------------------
# Manifests


def test_avspeech_row_parses_to_a_clip():
    clip = manifests.parse_line("--x_Y1,30.000000,37.500000,0.523437,0.275000", "avspeech", "/m")
    assert clip == manifests.Clip(clip_id="--x_Y1_30.000_37.500", speaker_id="--x_Y1",
                                  source="avspeech", audio_path="/m/--x_Y1",
                                  image_path="/m/--x_Y1", start=30.0, end=37.5,
                                  hint=(0.523437, 0.275))


@pytest.mark.parametrize("line, message", [
    ("abc,1,2,0.5", "4 columns"),
    ("abc,one,2,0.5,0.5", "not a number"),
    ("abc,3,2,0.5,0.5", "empty or negative"),
    ("abc,1,2,1.5,0.5", "outside [0, 1]"),
    ("abc,nan,2,0.5,0.5", "not finite"),
    (",1,2,0.5,0.5", "not a YouTube id"),
])
def test_malformed_avspeech_rows_become_rejects(line, message):
    reject = manifests.parse_or_reject(line, "avspeech", "/m")
    assert isinstance(reject, manifests.Reject)
    assert reject.reason == Reason.MALFORMED_ROW and message in reject.detail
    assert reject.item == line


def test_voxceleb2_and_pairs_rows(tmp_path):
    clip = manifests.parse_line("./id00012/21Uxsk56VDQ/00001.mp4", "voxceleb2", "/vox")
    assert (clip.clip_id, clip.speaker_id, clip.audio_path) == (
        "id00012/21Uxsk56VDQ/00001", "id00012", "/vox/id00012/21Uxsk56VDQ/00001.mp4")
    assert manifests.parse_or_reject("id00012/00001.mp4", "voxceleb2", "/vox").reason == (
        Reason.MALFORMED_ROW)
    assert manifests.parse_line("audio_path,image_path,speaker_id", "pairs", "/p") is None
    clip = manifests.parse_line("a.wav, /abs/b.png, spk", "pairs", "/p")
    assert (clip.audio_path, clip.image_path, clip.speaker_id, clip.image_is_still) == (
        "/p/a.wav", "/abs/b.png", "spk", True)
    assert manifests.parse_or_reject("a.wav,,spk", "pairs", "/p").reason == Reason.MALFORMED_ROW
    path = tmp_path / "m.csv"
    path.write_text("# comment\n\nabc,0,3,0.5,0.5\nabc,x,3,0.5,0.5\n")
    items = list(manifests.read_manifest(str(path), "avspeech", "/m"))
    assert [type(i).__name__ for i in items] == ["Clip", "Reject"]
    with pytest.raises(ValueError, match="manifest_format"):
        manifests.parse_line("x", "youtube", "/m")


# ----------------------------------------------------------------------------------------------
# Split, weights, output directory, options


def test_split_is_a_stable_speaker_hash():
    # sha1 of the id as a fraction of 2^64, pinned: a speaker's split must never change between
    # versions, machines or data-set sizes.
    for speaker, fraction in (("id00012", 0.7237341374745271), ("--x_Y1", 0.0035047997252221),
                              ("alice", 0.3209709772394684)):
        assert lib.split_for(speaker, fraction + 1e-9) == "test"
        assert lib.split_for(speaker, fraction - 1e-9) == "train"
    speakers = [f"spk{i}" for i in range(4000)]
    share = np.mean([lib.split_for(s, 0.2) == "test" for s in speakers])
    assert 0.18 < share < 0.22
    assert all(lib.split_for(s, 0.0) == "train" for s in speakers[:50])
    assert all(lib.split_for(s, 1.0) == "test" for s in speakers[:50])


def test_weights_are_checked_before_any_work(tmp_path):
    with pytest.raises(vggface.WeightsFileError, match="rcmalli_vggface_tf_vgg16.h5"):
        lib.check_weights(None)
    with pytest.raises(vggface.WeightsFileError, match="not found"):
        lib.check_weights(str(tmp_path / "nope.h5"))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(vggface.WeightsFileError, match="not an HDF5"):
        lib.check_weights(str(tmp_path / "text.h5"))
    with h5py.File(tmp_path / "notop.h5", "w") as f:
        f.create_group("conv1_1")
    with pytest.raises(vggface.WeightsFileError, match="no fc7"):
        lib.check_weights(str(tmp_path / "notop.h5"))


def test_output_dir_must_be_empty_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    shards.check_output_dir(str(out), overwrite=False)
    assert not out.exists()  # nothing written by the check
    out.mkdir()
    for name in ("train-00000-of-00001.tfrecord", "rejects.jsonl", "dataset_info.json",
                 "notes.txt"):
        (out / name).write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        shards.check_output_dir(str(out), overwrite=False)
    shards.check_output_dir(str(out), overwrite=True)
    build_dir = shards.start_build(str(out))
    for name in ("train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord",
                 "dataset_info.json"):
        (tmp_path / "out" / os.path.basename(build_dir) / name).write_text("new")
    assert (out / "dataset_info.json").read_text() == "old"  # untouched until the commit
    shards.commit_build(str(out), build_dir, overwrite=True)
    assert sorted(os.listdir(out)) == ["dataset_info.json", "notes.txt",
                                       "train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
    assert (out / "dataset_info.json").read_text() == "new"
    assert (out / "notes.txt").read_text() == "old"  # only a build's own files are replaced
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        shards.check_output_dir(str(tmp_path / "file"), overwrite=True)
    with pytest.raises(FileExistsError, match="is a file"):
        shards.check_output_dir(str(tmp_path / "file" / "sub"), overwrite=False)


def test_direct_runner_defaults_to_one_process_per_core():
    direct = runners.pipeline_options([]).view_as(runners.beam_options.DirectOptions)
    assert direct.direct_running_mode == "multi_processing"
    assert direct.direct_num_workers == os.cpu_count()
    direct = runners.pipeline_options(IN_PROCESS, num_workers=4).view_as(runners.beam_options.DirectOptions)
    assert (direct.direct_running_mode, direct.direct_num_workers) == ("in_memory", 1)
    options = runners.pipeline_options(["--runner=FlinkRunner", "--flink_master=host:8081"])
    assert options.view_as(runners.beam_options.DirectOptions).direct_running_mode == "in_memory"
    with pytest.raises(ValueError, match="--helpfull"):
        runners.pipeline_options(["--test_fracton=0.5"])  # a typo must not be silently ignored


@pytest.mark.parametrize("remote", [False, True])
def test_only_shards_of_finished_bundles_are_committed(tmp_path, remote):
    def example(i, speaker):
        return records.Example(np.zeros((10, 257, 2), np.float32), np.ones(4096, np.float32),
                               speaker, f"c{i}", "pairs")

    # TensorFlow's in-memory file system stands in for gs://: written locally, then copied.
    out = f"ram://{tmp_path.name}" if remote else str(tmp_path)
    # ~27 kB per example against a 30 kB target: shards of two examples.
    writer = shards.WriteShards(out, 30_000, "spectrogram_float16")
    writer.start_bundle()  # a bundle that dies before finishing: nothing of it may be committed
    writer.process(("train", example(99, "x")))
    writer.start_bundle()
    for i in range(5):
        writer.process(("train", example(i, f"s{i % 2}")))
    writer.process(("test", example(5, "t")))
    summaries = [v.value for v in writer.finish_bundle()]
    assert sorted((s["split"], s["examples"]) for s in summaries) == [
        ("test", 1), ("train", 1), ("train", 2), ("train", 2)]
    if not remote:  # the dead bundle's unfinished shard: a .tmp file, never globbed
        incomplete = tf.io.gfile.listdir(os.path.join(out, shards.INCOMPLETE_DIR))
        assert sum(name.endswith(".tfrecord.tmp") for name in incomplete) == 1
    for planned in shards.plan_names(summaries):
        shards.commit_shard(planned, out)
        shards.commit_shard(planned, out)  # a retry: no-op
    assert sorted(f for f in tf.io.gfile.listdir(out) if f.endswith(".tfrecord")) == [
        "test-00000-of-00001.tfrecord", "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert sorted(_read_examples(out)) == [f"c{i}" for i in range(6)]


# ----------------------------------------------------------------------------------------------
# Faces


def test_cnn_detector_crop_and_landmarks():
    finder = faces.FaceFinder("cnn")
    face = finder.find(fake_media.face_frame())
    x0, y0, side = face.crop_box
    cx, cy, w, h, _ = face.box
    assert 80 < w < 120 and x0 < cx < x0 + side and y0 < cy < y0 + side
    assert face.crop.shape == (224, 224, 3)
    assert np.all((face.landmarks > 0) & (face.landmarks < 223))
    # Landmarks follow the crop: the nose tip (30) between the eyes' outer corners (36, 45) in x,
    # below the eyes and above the chin (8) in y.
    lm = face.landmarks
    assert lm[36, 0] < lm[30, 0] < lm[45, 0] and lm[36, 1] < lm[30, 1] < lm[8, 1]
    assert finder.detect(face.crop)  # the crop itself still holds a face for the CNN


def test_dlib_model_files_are_found_without_pkg_resources(monkeypatch):
    # face_recognition_models' __init__ imports pkg_resources (gone from setuptools >= 81):
    # finding the files must not import it.
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # importing it now raises
    for name in (faces.CNN_DETECTOR_FILE, faces.LANDMARKS_FILE):
        assert os.path.getsize(faces.dlib_model_file(name)) > 100_000
    with pytest.raises(FileNotFoundError, match="no_such_model.dat"):
        faces.dlib_model_file("no_such_model.dat")


def test_face_nearest_the_hint_is_chosen(hog):
    frame = fake_media.two_face_frame()
    assert len(hog.detect(frame)) == 2
    assert not fake_media.is_blue_face(hog.find(frame, hint=(0.2, 0.4)).crop)
    assert fake_media.is_blue_face(hog.find(frame, hint=(0.8, 0.4)).crop)
    # Without a hint, the surest face: in the JPEG-compressed photo HOG also "finds" the
    # mission patch on the astronaut's suit, bigger than her face but with a far lower score.
    photo = media.decode_jpeg(media.encode_jpeg(fake_media.astronaut(), quality=75))
    assert len(hog.detect(photo)) == 2
    assert hog.find(photo).box.cy < 200
    with pytest.raises(faces.FaceError) as e:
        hog.find(fake_media.no_face_frame())
    assert e.value.reason == Reason.NO_FACE
    small = faces.FaceFinder("hog", min_face_size=80)
    with pytest.raises(faces.FaceError, match="below the minimum of 80") as e:
        small.find(fake_media.small_face_frame(320))
    assert e.value.reason == Reason.FACE_TOO_SMALL


def _landmarks_in_frame(face):
    x0, y0, side = face.crop_box
    return (face.landmarks + 0.5) * side / faces.FACE_SIZE - 0.5 + (x0, y0)


def _backdrop_frame(x=77):
    """640×360 (an AVSpeech-sized frame) with the face at x, and the hint of its centre."""
    frame = np.empty((360, 640, 3), np.uint8)
    frame[:] = (120, 110, 100)
    frame[20:340, x:x + 320] = fake_media.face_frame()
    return frame, ((x + 0.45 * 320) / 640, (20 + 0.36 * 320) / 360)


@pytest.mark.slow
def test_cnn_window_near_the_hint_finds_the_whole_frames_face():
    whole, near = faces.FaceFinder("cnn", near_hint=False), faces.FaceFinder("cnn")
    frame, hint = _backdrop_frame()
    two = fake_media.two_face_frame()
    for image, point in ((frame, hint), (two, (0.75, 0.4))):
        expected, got = whole.find(image, point), near.find(image, point)
        # The same face, its landmarks about as close as the whole frame's own answer is to
        # itself when the video moves by a pixel (~0.2-1.1 px on these frames).
        assert abs(got.box.cx - expected.box.cx) < 0.25 * expected.box.w
        assert abs(got.box.cy - expected.box.cy) < 0.25 * expected.box.h
        diff = np.abs(_landmarks_in_frame(got) - _landmarks_in_frame(expected))
        assert diff.mean() < 1.5, diff.mean()
        assert abs(got.crop_box[2] / expected.crop_box[2] - 1) < 0.06
    assert fake_media.is_blue_face(near.find(two, (0.75, 0.4)).crop)
    assert near.counts == {"near_hint": 3} and whole.counts == {"whole_frame": 2}


def test_window_near_the_hint_leaves_doubtful_frames_to_the_whole_frame(hog):
    near = faces.FaceFinder("cnn")
    frame, hint = _backdrop_frame()
    assert near.detect_near_hint(frame, (0.95, 0.9)) is None  # no face holds the hint
    assert near.detect_near_hint(fake_media.no_face_frame(), (0.5, 0.5)) is None
    # HOG misses the face turned by 60 degrees: the whole frame decides.
    tilted = np.asarray(Image.fromarray(frame).rotate(60, center=(hint[0] * 640, hint[1] * 360),
                                                      fillcolor=(120, 110, 100)))
    assert not hog.detect(tilted) and near.detect_near_hint(tilted, hint) is None
    # A window as large as half the frame saves nothing.
    tight = np.ascontiguousarray(fake_media.face_frame()[30:250, 30:250])
    assert hog.detect(tight) and near.detect_near_hint(tight, (0.52, 0.39)) is None
    assert hog.detect_near_hint(frame, hint) is None  # the shortcut is the CNN's
    with pytest.raises(faces.FaceError) as e:
        near.find(fake_media.no_face_frame(), (0.5, 0.5))
    assert e.value.reason == Reason.NO_FACE and near.counts == {"whole_frame": 1}


def test_crop_geometry():
    frame = np.full((100, 100, 3), 255, np.uint8)
    crop, (x0, y0, side) = faces.crop_face(frame, (10.0, 50.0, 40.0, 40.0), crop_scale=1.5)
    assert (x0, y0, side) == (-19, 21, 60)
    assert crop[112, 10].max() == 0 and crop[112, 200].min() == 255  # black outside the frame
    # Pixel centres map to pixel centres: the crop's first and last pixels.
    np.testing.assert_allclose(faces.to_crop_coords([[-19, 21], [40, 80]], (x0, y0, side)),
                               [[(0.5 * 224 / 60) - 0.5] * 2, [223.5 - 0.5 * 224 / 60] * 2],
                               atol=1e-4)
    assert faces.frame_times(0.0, 4.0, 3) == [2.0, 1.5, 2.5]
    assert faces.frame_times(0.0, 0.6, 3) == [0.3]


def test_unexpected_error_becomes_a_processing_error_reject(tmp_path, weights):
    video = fake_media.write_talking_video(tmp_path / "v.mp4", fake_media.face_frame(), fake_media.voice(2.0))
    config = lib.BuildConfig(None, "voxceleb2", str(tmp_path), str(tmp_path / "out"), weights)
    clip = manifests.Clip("v", "s", "voxceleb2", str(video), str(video))

    class Broken:
        def find_in_video(self, *args):
            raise RuntimeError("boom")

    dofn = lib._PrepareClip(config)  # pylint: disable=protected-access
    dofn.setup()
    assert dofn._finder.near_hint  # pylint: disable=protected-access
    dofn._finder = Broken()  # pylint: disable=protected-access
    (out,) = list(dofn.process(clip))
    assert out.tag == "rejects" and out.value.reason == Reason.PROCESSING_ERROR
    assert "RuntimeError: boom" in out.value.detail


# ----------------------------------------------------------------------------------------------
# AVSpeech end to end: every reject reason, the hint, the split, the shards


@pytest.fixture(scope="module")
def avspeech(tmp_path_factory, weights):
    root = tmp_path_factory.mktemp("avspeech")
    videos = root / "videos"
    videos.mkdir()
    train_id, test_id = _ids_in_each_split("yt")
    fake_media.write_talking_video(videos / f"{train_id}.mp4", fake_media.two_face_frame(), fake_media.voice(5.0))
    fake_media.write_talking_video(videos / f"{test_id}.mkv", fake_media.face_frame(), fake_media.voice(4.0, 1))
    fake_media.write_talking_video(videos / "noface.mp4", fake_media.no_face_frame(), fake_media.voice(3.0, 2))
    fake_media.write_talking_video(videos / "smallface.mp4", fake_media.small_face_frame(320),
                              fake_media.voice(3.0, 3))
    fake_media.write_talking_video(videos / "silent.mp4", fake_media.face_frame(),
                              np.zeros(3 * 16000, np.float32))
    full = fake_media.write_talking_video(root / "full.mp4", fake_media.face_frame(), fake_media.voice(4.0, 4),
                                     faststart=True)
    fake_media.write_truncated_copy(full, videos / "truncated.mp4", 0.5)
    fake_media.write_corrupt_file(videos / "corrupt.mp4")
    helpers.write_video_without_audio(videos / "mute.mp4", 2.0)
    rows = {
        f"{train_id}_0.500_4.500": f"{train_id},0.5,4.5,0.75,0.4",  # right (blue) face
        f"{train_id}_1.000_3.500": f"{train_id},1.0,3.5,0.25,0.4",  # left face, 2.5 s (tiled)
        f"{test_id}_0.000_4.000": f"{test_id},0.0,4.0,0.45,0.36",
    }
    bad = {
        "noface_0.000_3.000": ("noface,0,3,0.5,0.5", Reason.NO_FACE),
        "smallface_0.000_3.000": ("smallface,0,3,0.5,0.5", Reason.FACE_TOO_SMALL),
        "silent_0.000_3.000": ("silent,0,3,0.5,0.5", Reason.SILENT_AUDIO),
        "truncated_0.000_4.000": ("truncated,0,4,0.5,0.5", Reason.UNREADABLE_MEDIA),
        "corrupt_0.000_3.000": ("corrupt,0,3,0.5,0.5", Reason.UNREADABLE_MEDIA),
        "mute_0.000_2.000": ("mute,0,2,0.5,0.5", Reason.NO_AUDIO_STREAM),
        "missing_0.000_3.000": ("missing,0,3,0.5,0.5", Reason.MISSING_MEDIA),
        f"{train_id}_100.000_103.000": (f"{train_id},100,103,0.5,0.5",
                                        Reason.SEGMENT_OUTSIDE_MEDIA),
        f"{train_id}_2.000_9.000": (f"{train_id},2,9,0.5,0.5", Reason.SEGMENT_OUTSIDE_MEDIA),
        f"{train_id}_0.000_0.500": (f"{train_id},0,0.5,0.5,0.5", Reason.TOO_SHORT),
        "xx,notanumber,1,0.5,0.5": ("xx,notanumber,1,0.5,0.5", Reason.MALFORMED_ROW),
    }
    manifest = root / "avspeech.csv"
    manifest.write_text("# a comment\n\n" + "\n".join(list(rows.values()) +
                                                      [line for line, _ in bad.values()]) + "\n")
    # No weights given: the builder writes random ones beside the records. What it asks
    # random_vggface_weights for is recorded, and the file is a link to the session's (the
    # writer itself is tested in test_vggface.py), not another 553 MiB.
    asked = []

    def random_weights(path, seed):
        asked.append((path, seed))
        os.link(weights, path)
        return path

    config = lib.BuildConfig(manifest=str(manifest), manifest_format="avspeech",
                             media_dir=str(videos), output_dir=str(root / "out"),
                             vggface_weights=None, random_weights_for_tests=True,
                             test_fraction=0.5, detector="hog", min_face_size=80,
                             target_shard_bytes=2**19)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vggface, "random_vggface_weights", random_weights)
        result = lib.build_records(config, runners.pipeline_options(IN_PROCESS))
    # Written in the build directory, then moved into output_dir with the records.
    assert [(os.path.basename(path), seed) for path, seed in asked] == [
        ("vggface_random_seed0.h5", 0)]
    assert os.path.dirname(os.path.dirname(asked[0][0])) == config.output_dir
    assert os.path.exists(os.path.join(config.output_dir, "vggface_random_seed0.h5"))
    return {"config": config, "result": result, "good": rows, "bad": bad,
            "train_id": train_id, "test_id": test_id}


def test_avspeech_rejects_every_bad_item_with_its_reason(avspeech):
    out = avspeech["config"].output_dir
    rejects = _read_rejects(out)
    assert {r["item"]: r["reason"] for r in rejects} == {
        item: reason for item, (_, reason) in avspeech["bad"].items()}
    assert all(r["detail"] for r in rejects)
    info = avspeech["result"].info
    expected = collections.Counter(reason for _, reason in avspeech["bad"].values())
    assert info.details["rejects"]["by_reason"] == {r: expected.get(r, 0) for r in manifests.REASONS}
    assert info.details["rejects"]["total"] == len(avspeech["bad"])
    assert info.details["items_read"] == len(avspeech["bad"]) + len(avspeech["good"])
    # Beam's counters mirror the file.
    counters = avspeech["result"].counters
    for reason, n in expected.items():
        assert counters[f"rejected_{reason}"] == n
    assert counters["examples_train"] == 2 and counters["examples_test"] == 1
    assert counters["face_batches"] == 1  # one bundle: all three faces in one VGG-Face batch


def test_avspeech_shards_hold_the_faces_and_voices(avspeech, hog):
    out = avspeech["config"].output_dir
    examples = _read_examples(out)
    assert set(examples) == set(avspeech["good"])
    crops = {}
    for clip_id, (_, example) in examples.items():
        assert example.source == "avspeech"
        crops[clip_id] = _check_example(example, hog)
    train_id, test_id = avspeech["train_id"], avspeech["test_id"]
    # The face nearest the (x, y) hint: right (channel-swapped) for 0.75, left for 0.25.
    assert fake_media.is_blue_face(crops[f"{train_id}_0.500_4.500"])
    assert not fake_media.is_blue_face(crops[f"{train_id}_1.000_3.500"])
    # 4 s and 2.5 s of audio, stored tiled to 6 s.
    assert examples[f"{train_id}_1.000_3.500"][1].waveform.size == audio.SEGMENT_SAMPLES
    # Speaker-disjoint split by the stable hash, shards named by split.
    for clip_id, (filename, example) in examples.items():
        split = lib.split_for(example.speaker_id, 0.5)
        assert filename.startswith(split + "-")
        assert example.speaker_id == (train_id if split == "train" else test_id)


def test_avspeech_dataset_info_and_shard_files(avspeech, weights):
    out = avspeech["config"].output_dir
    info = avspeech["result"].info
    with open(os.path.join(out, dataset_info.FILENAME)) as f:
        assert json.load(f) == info.to_dict()
    assert info.schema_version == records.SCHEMA_VERSION
    assert (info.info_version, info.builder) == (dataset_info.VERSION, "build_records")
    assert info.counts["train"] == {"clips": 2, "speakers": 1, "by_source": {"avspeech": 2}}
    assert info.counts["test"] == {"clips": 1, "speakers": 1, "by_source": {"avspeech": 1}}
    assert info.vggface_weights["random_init"] is True
    assert info.vggface_weights["path"] == "vggface_random_seed0.h5"  # beside the records
    assert info.vggface_weights["sha256"] == lib.sha256_of(weights)
    assert info.weights_path(out) == os.path.join(out, "vggface_random_seed0.h5")
    assert "WARNING: random VGG-Face weights" in shards.format_summary(info)
    assert info.spectrogram["shape"] == [598, 257, 2]
    # Examples of ~0.85 MB against a 0.5 MiB target: a shard each (closed once past the target).
    assert info.files == {"train": ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"],
                             "test": ["test-00000-of-00001.tfrecord"]}
    on_disk = sorted(f for f in os.listdir(out) if f.endswith(".tfrecord"))
    assert on_disk == sorted(info.files["train"] + info.files["test"])
    leftovers = [f for f in os.listdir(out) if f.endswith(".tmp") or f.startswith("beam-temp")
                 or f == shards.INCOMPLETE_DIR]
    assert not leftovers
    records.read_spec(os.path.join(out, on_disk[0]))  # readable by the training input pipeline


# ----------------------------------------------------------------------------------------------
# AVSpeech's own split: --manifest rows -> train, --test_manifest rows -> test


def test_test_manifest_replaces_test_fraction(tmp_path):
    for name in ("train.csv", "test.csv"):
        (tmp_path / name).write_text("abc,0,3,0.5,0.5\n")
    base = dict(manifest=str(tmp_path / "train.csv"), manifest_format="avspeech",
                media_dir=str(tmp_path), output_dir=str(tmp_path / "out"), vggface_weights=None)
    assert lib.BuildConfig(**base).hash_test_fraction == 0.08  # unset: the paper's share
    config = lib.BuildConfig(**base, test_manifest=str(tmp_path / "test.csv"))
    config.validate()
    assert config.split_by_manifest and config.test_fraction is None
    with pytest.raises(ValueError, match="--test_fraction or --test_manifest, not both"):
        lib.BuildConfig(**base, test_manifest=str(tmp_path / "test.csv"),
                        test_fraction=0.08).validate()
    with pytest.raises(FileNotFoundError, match="test_manifest .*nope.csv not found"):
        lib.BuildConfig(**base, test_manifest=str(tmp_path / "nope.csv")).validate()
    with pytest.raises(ValueError, match="needs --manifest"):
        lib.BuildConfig(**{**base, "manifest": None, "manifest_format": "voxceleb2"},
                        test_manifest=str(tmp_path / "test.csv")).validate()
    clip, reject = manifests.read_manifest(str(_write(tmp_path / "m.csv", "a,0,3,0.5,0.5",
                                                      "a,x,3,0.5,0.5")), "avspeech", "/m", "test")
    assert (clip.split, reject.split) == ("test", "test")


def _write(path, *lines):
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("options", [IN_PROCESS, ["--direct_running_mode=multi_threading",
                                                  "--direct_num_workers=2"]])
@pytest.mark.slow
def test_avspeech_own_train_and_test_csvs(tmp_path, weights, options):
    videos = tmp_path / "videos"
    videos.mkdir()
    # The train CSV's speaker is one the hash would put in test, the test CSV's one it would
    # put in train: the manifests decide, not the hash.
    hash_train, hash_test = _ids_in_each_split("own", build_config.DEFAULT_TEST_FRACTION)
    for seed, name in enumerate((hash_test, hash_train, "shared")):
        fake_media.write_talking_video(videos / f"{name}.mp4", fake_media.face_frame(),
                                       fake_media.voice(4.0, seed))
    train_csv = _write(tmp_path / "avspeech_train.csv", f"{hash_test},0,3,0.45,0.36",
                       f"{hash_test},1,4,0.45,0.36", "shared,0,3,0.45,0.36", "a,x,3,0.5,0.5")
    test_csv = _write(tmp_path / "avspeech_test.csv", f"{hash_train},0,3,0.45,0.36",
                      "shared,0.5,3.5,0.45,0.36", "missing,0,3,0.5,0.5")
    config = lib.BuildConfig(str(train_csv), "avspeech", str(videos), str(tmp_path / "out"),
                             weights, random_weights_for_tests=True, detector="hog",
                             test_manifest=str(test_csv))
    result = lib.build_records(config, runners.pipeline_options(options))
    splits = {clip_id: filename.split("-")[0]
              for clip_id, (filename, _) in _read_examples(config.output_dir).items()}
    assert splits == {f"{hash_test}_0.000_3.000": "train", f"{hash_test}_1.000_4.000": "train",
                      f"{hash_train}_0.000_3.000": "test", "shared_0.500_3.500": "test"}
    # The shared speaker's train row is rejected (per row, with its split), so that train and
    # test share no speaker and the test CSV is built whole.
    rejects = {(r["item"], r["reason"], r["split"]) for r in _read_rejects(config.output_dir)}
    assert rejects == {("shared_0.000_3.000", Reason.SPEAKER_IN_TEST, "train"),
                       ("a,x,3,0.5,0.5", Reason.MALFORMED_ROW, "train"),
                       ("missing_0.000_3.000", Reason.MISSING_MEDIA, "test")}
    info = result.info
    assert info.counts["train"] == {"clips": 2, "speakers": 1, "by_source": {"avspeech": 2}}
    assert info.counts["test"] == {"clips": 2, "speakers": 2, "by_source": {"avspeech": 2}}
    split = info.details["split"]
    assert split["method"].startswith("manifests") and split["speakers_in_both"] == 1
    assert split["manifests"] == {"train": str(train_csv), "test": str(test_csv)}
    assert split["rows"] == {
        "train": {"items_read": 4, "rejected": 2, "rejects_by_reason": {
            Reason.MALFORMED_ROW: 1, Reason.SPEAKER_IN_TEST: 1}},
        "test": {"items_read": 3, "rejected": 1, "rejects_by_reason": {Reason.MISSING_MEDIA: 1}}}
    assert info.details["items_read"] == 7 and info.details["rejects"]["total"] == 3
    assert (info.config["test_manifest"], info.config["test_fraction"]) == (str(test_csv), None)
    assert "WARNING: 1 speakers in both manifests" in shards.format_summary(info)
    counters = result.counters
    assert counters["rejected_speaker_in_test"] == 1 and counters["speakers_in_both_manifests"] == 1
    assert counters["examples_train"] == 2 and counters["examples_test"] == 2


@pytest.mark.slow
def test_cli_refuses_test_fraction_with_test_manifest(tmp_path):
    _write(tmp_path / "train.csv", "abc,0,3,0.5,0.5")
    _write(tmp_path / "test.csv", "xyz,0,3,0.5,0.5")
    result = _run_cli("--manifest", tmp_path / "train.csv", "--test_manifest",
                      tmp_path / "test.csv", "--test_fraction=0.1", "--manifest_format=avspeech",
                      "--media_dir", tmp_path, "--output_dir", tmp_path / "out")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not both" in result.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Pairs (in-process) and VoxCeleb2 through the CLI (defaults: multi-processing, CNN)


@pytest.mark.slow
def _build_pairs(manifest, tmp_path, weights):
    """(config, info) of a pairs build of `manifest` in-process into tmp_path/out, every
    speaker in train."""
    config = lib.BuildConfig(str(manifest), "pairs", str(tmp_path), str(tmp_path / "out"),
                             weights, random_weights_for_tests=True, detector="hog",
                             test_fraction=0.0)
    return config, lib.build_records(config, runners.pipeline_options(IN_PROCESS)).info


def test_pairs_manifest(tmp_path, weights, hog):
    (tmp_path / "voices").mkdir()
    (tmp_path / "faces").mkdir()
    helpers.write_wav(tmp_path / "voices" / "a.wav", fake_media.voice(3.0))
    helpers.write_wav(tmp_path / "voices" / "b.flac", fake_media.voice(7.0, 1))
    fake_media.write_image(tmp_path / "faces" / "a.png", fake_media.face_frame())
    fake_media.write_image(tmp_path / "faces" / "b.jpg", fake_media.astronaut())
    fake_media.write_talking_video(tmp_path / "faces" / "c.mp4", fake_media.face_frame(), fake_media.voice(2.0))
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("audio_path,image_path,speaker_id\n"
                        "voices/a.wav,faces/a.png,alice\n"
                        f"voices/b.flac,{tmp_path / 'faces' / 'b.jpg'},bob\n"
                        "voices/a.wav,faces/c.mp4,carol\n"
                        "voices/a.wav,faces/missing.png,alice\n"
                        "voices/a.wav,faces/a.png\n")
    config, info = _build_pairs(manifest, tmp_path, weights)
    examples = _read_examples(config.output_dir)
    assert set(examples) == {"voices/a.wav|faces/a.png", f"voices/b.flac|{tmp_path}/faces/b.jpg",
                             "voices/a.wav|faces/c.mp4"}
    for _, example in examples.values():
        _check_example(example, hog)
    # 7 s of audio is kept whole (under max_seconds), 3 s is tiled to 6 s.
    assert examples[f"voices/b.flac|{tmp_path}/faces/b.jpg"][1].waveform.size == 7 * 16000
    assert info.counts["train"]["speakers"] == 3 and info.counts["test"]["clips"] == 0
    assert sorted(r["reason"] for r in _read_rejects(config.output_dir)) == [
        Reason.MALFORMED_ROW, Reason.MISSING_MEDIA]


def test_audio_under_8_khz_is_rejected_with_its_reason(tmp_path, weights, hog):
    """A 1 Hz or 100 Hz source would be resampled into seconds of "voice" (100 Hz: ten seconds of
    a 35 Hz tone; 1 Hz: nothing at all, once called too_short): each is a low_sample_rate reject
    naming its rate, and the good pair next to them is built."""
    (tmp_path / "voices").mkdir()
    helpers.write_wav(tmp_path / "voices" / "good.wav", fake_media.voice(3.0))
    for rate in (1, 100):
        tone = 0.5 * np.sin(0.7 * np.arange(10 * rate))  # ten seconds at that rate
        helpers.write_wav(tmp_path / "voices" / f"hz{rate}.wav", tone, sample_rate=rate)
    fake_media.write_image(tmp_path / "face.png", fake_media.face_frame())
    assert clips.probe_media(str(tmp_path / "voices" / "hz100.wav")).audio_rate == 100
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("voices/good.wav,face.png,alice\n"
                        "voices/hz1.wav,face.png,bob\n"
                        "voices/hz100.wav,face.png,carol\n")
    config, info = _build_pairs(manifest, tmp_path, weights)
    assert set(_read_examples(config.output_dir)) == {"voices/good.wav|face.png"}
    rejects = {r["item"]: r for r in _read_rejects(config.output_dir)}
    assert sorted(rejects) == ["voices/hz1.wav|face.png", "voices/hz100.wav|face.png"]
    for rate in (1, 100):
        reject = rejects[f"voices/hz{rate}.wav|face.png"]
        assert reject["reason"] == Reason.LOW_SAMPLE_RATE, reject
        assert f"sample rate {rate} Hz is under {audio.MIN_SOURCE_RATE} Hz" in reject["detail"]
    assert info.details["rejects"]["by_reason"][Reason.LOW_SAMPLE_RATE] == 2


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "data_prep.build_records", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_cli_refuses_to_start_without_weights(tmp_path):
    (tmp_path / "m.csv").write_text("abc,0,3,0.5,0.5\n")
    result = _run_cli("--manifest", tmp_path / "m.csv", "--manifest_format=avspeech",
                      "--media_dir", tmp_path, "--output_dir", tmp_path / "out")
    assert result.returncode != 0
    assert "rcmalli_vggface_tf_vgg16.h5" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # stopped before doing anything


@pytest.mark.slow
def test_cli_voxceleb2_tree_with_defaults(tmp_path, hog, weights):
    tree = tmp_path / "mp4"
    for speaker, video, seed in (("id00001", "vidA", 0), ("id00002", "vidB", 1)):
        (tree / speaker / video).mkdir(parents=True)
        fake_media.write_talking_video(tree / speaker / video / "00001.mp4", fake_media.face_frame(),
                                  fake_media.voice(2.0, seed))
    helpers.write_video_without_audio(tree / "id00002" / "vidB" / "00002.mp4", 2.0)
    out = tmp_path / "out"
    # Weights named by path (the session's random file, where a user names the real one; the
    # builder writing random ones itself is tested with the AVSpeech build above).
    result = _run_cli("--manifest_format=voxceleb2", "--media_dir", tree, "--output_dir", out,
                      "--vggface_weights", weights, "--test_fraction=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: random VGG-Face weights" not in result.stdout
    info = dataset_info.read(str(out))
    assert info.config["detector"] == "cnn"
    assert info.details["beam"]["runner"] == "DirectRunner"
    assert info.details["beam"]["direct_running_mode"] == "multi_processing"
    assert info.details["beam"]["direct_num_workers"] == os.cpu_count()
    assert f"--vggface_weights {weights}" in info.details["command_line"]
    assert info.vggface_weights["random_init"] is False and info.weights_path(str(out)) == weights
    examples = _read_examples(str(out))
    assert set(examples) == {"id00001/vidA/00001", "id00002/vidB/00001"}
    for clip_id, (filename, example) in examples.items():
        assert example.source == "voxceleb2"
        assert filename.startswith(lib.split_for(example.speaker_id, 0.5))
        _check_example(example, hog)
    assert [(r["item"], r["reason"]) for r in _read_rejects(str(out))] == [
        ("id00002/vidB/00002", Reason.NO_AUDIO_STREAM)]
    # A second run into the same directory is refused unless --overwrite.
    again = _run_cli("--manifest_format=voxceleb2", "--media_dir", tree, "--output_dir", out,
                     "--vggface_weights", weights)
    assert again.returncode != 0 and "--overwrite" in again.stderr
