"""The toy-world builder, its CLI, and the demo, end to end on tiny worlds."""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from speech2face.datasets.toy import world as toy_world
from speech2face import data, records
from speech2face.records import dataset_info
from speech2face.models import vggface
from tests.support import helpers, tiny

TINY = tiny.WORLD


def _read_all(directory):
    out = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(directory, "*.tfrecord"))):
        for serialized in tf.data.TFRecordDataset(path):
            example = records.decode_example(serialized.numpy())
            out[example.clip_id] = (os.path.basename(path).split("-")[0], example)
    return out


def test_layout_counts_and_info(tiny_world):
    directory, info = tiny_world
    files = sorted(os.listdir(directory))
    assert "dataset_info.json" in files and "speakers.json" in files
    assert "vggface_random_seed3.h5" in files
    assert any(f.startswith("train-") for f in files) and any(f.startswith("test-") for f in files)
    with open(os.path.join(directory, "dataset_info.json")) as f:
        assert json.load(f) == json.loads(json.dumps(info.to_dict()))
    assert info.schema_version == records.SCHEMA_VERSION
    assert (info.info_version, info.builder) == (dataset_info.VERSION, "toy_world")
    assert info.counts["train"]["speakers"] + info.counts["test"]["speakers"] == 6
    assert info.counts["train"]["clips"] + info.counts["test"]["clips"] == 12
    assert info.vggface_weights["random_init"] is True
    assert {a["name"] for a in info.details["attributes"]} >= {"head_size", "masculinity", "nasality"}
    assert 1.0 <= info.details["clip_seconds"]["min"] <= info.details["clip_seconds"]["max"] <= 7.0


def test_the_toy_world_defaults_to_waveform_records():
    # Its stage 2 computes the STFT of random crops in the step anyway (docs/data.md).
    assert toy_world.ToyWorldConfig().records_layout == records.WAVEFORM_LAYOUT


def test_records_are_speaker_disjoint_and_complete(tiny_world):
    directory, _ = tiny_world
    examples = _read_all(directory)
    assert len(examples) == 12
    speakers = {
        split: {e.speaker_id for s, e in examples.values() if s == split}
        for split in ("train", "test")
    }
    assert speakers["train"] and speakers["test"]
    assert not speakers["train"] & speakers["test"]
    for _, example in examples.values():
        assert example.spectrogram.shape == (598, 257, 2)
        assert example.spectrogram.dtype == np.float16
        assert np.isfinite(example.spectrogram.astype(np.float32)).all()
        assert example.face_feature.shape == (4096,) and (example.face_feature >= 0).all()
        assert example.face_feature.max() > 0
        assert example.landmarks.shape == (68, 2)
        assert (example.landmarks >= 0).all() and (example.landmarks < 224).all()
        assert tf.io.decode_jpeg(example.face_jpeg).shape == (224, 224, 3)
        assert len(example.waveform) >= 96000


def test_face_features_come_from_the_saved_teacher(tiny_world):
    directory, _ = tiny_world
    _, example = next(iter(_read_all(directory).values()))
    extractor = vggface.FaceFeatureExtractor(
        os.path.join(directory, "vggface_random_seed3.h5"), batch_size=1
    )
    again = extractor(tf.io.decode_jpeg(example.face_jpeg).numpy()[None])[0]
    # The stored feature is of the exact render; the JPEG round trip moves it slightly.
    cos = (
        again @ example.face_feature / np.linalg.norm(again) / np.linalg.norm(example.face_feature)
    )
    assert cos > 0.99


def test_records_feed_the_input_pipeline(tiny_world):
    directory, _ = tiny_world
    batch = next(
        iter(data.input_fn(os.path.join(directory, "train-*.tfrecord"), None, 4, training=True))
    )
    assert batch["spectrogram"].shape == (4, 598, 257, 2)
    assert batch["face_feature"].shape == (4, 4096)


@pytest.mark.slow
def test_same_seed_same_world_other_seed_other_world(tiny_world, tmp_path, shared_random_weights):
    # The rebuild's random VGG-Face file is a link to the session's (the file depends only on the
    # seed: tests/test_vggface.py), so what is compared is everything built from it.
    directory, info = tiny_world
    again = toy_world.build_toy_world(TINY, str(tmp_path / "again"))
    first, second = _read_all(directory), _read_all(str(tmp_path / "again"))
    assert first.keys() == second.keys()
    for clip_id, (split, a) in first.items():
        b_split, b = second[clip_id]
        assert split == b_split
        np.testing.assert_array_equal(a.spectrogram, b.spectrogram)
        np.testing.assert_array_equal(a.waveform, b.waveform)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
        assert a.face_jpeg == b.face_jpeg
        np.testing.assert_allclose(a.face_feature, b.face_feature, rtol=1e-5, atol=1e-6)
    assert info.counts == again.counts
    assert info.details["clip_seconds"] == again.details["clip_seconds"]

    other = toy_world.ToyWorldConfig(
        **{
            **TINY.__dict__,
            "seed": 4,
            "vggface_weights": os.path.join(directory, "vggface_random_seed3.h5"),
        }
    )
    third = _read_all(
        toy_world.build_toy_world(other, str(tmp_path / "other")) and str(tmp_path / "other")
    )
    a = first[sorted(first)[0]][1]
    b = third[sorted(third)[0]][1]
    assert not np.array_equal(a.waveform[:1000], b.waveform[:1000])


def test_refuses_a_directory_with_records(tiny_world):
    directory, _ = tiny_world
    with pytest.raises(FileExistsError, match="already holds"):
        toy_world.build_toy_world(TINY, directory)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_speakers": 1}, "num_speakers"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"num_speakers": 2, "test_fraction": 0.9}, "leaves no speaker to train on"),
    ({"max_seconds": float("inf")}, "both finite"),
    ({"min_seconds": float("nan")}, "both finite"),
])
def test_bad_config_is_a_clear_error(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        toy_world.build_toy_world(toy_world.ToyWorldConfig(**kwargs), str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_cli_and_demo_end_to_end(tmp_path, tiny_weights):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    workdir = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "speech2face.demo",
        f"--workdir={workdir}",
        f"--vggface_weights={tiny_weights}",  # the session's random file, not a new one
        "--num_speakers=6",
        "--sheet_speakers=4",
        "--num_wavs=2",
        "--decoder_steps=4",
        "--encoder_steps=4",
        "--decoder_batch_size=4",
        "--encoder_batch_size=4",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    preview = workdir / "preview"
    for name in ("contact_sheet.png", "landmarks.png", "summary.txt"):
        assert (preview / name).stat().st_size > 1000 or name == "summary.txt"
    assert len(list(preview.glob("*.wav"))) == 2
    assert "speakers" in result.stdout and "contact_sheet.png" in result.stdout
    assert (workdir / "decoder" / "decoded_faces.png").exists()
    assert (workdir / "encoder" / "export" / "voice_encoder.keras").exists()
    # The demo's one deviation from the paper's loss is recorded with the run and in its report.
    config = json.loads((workdir / "encoder" / "config.json").read_text())
    assert config["task"]["lambda1"] == 1e4 and config["task"]["lambda2"] == 200.0
    assert "λ1 = 10000 (**the paper's is 0.025**)" in (workdir / "eval" / "report.md").read_text()
    assert (workdir / "eval" / "metrics.json").exists()
    assert (workdir / "eval" / "report.md").exists()
    assert len(list((workdir / "predictions").glob("*.png"))) >= 2
    # The model, self-contained, and how to use it; evaluation and predictions came from it.
    model = workdir / "model"
    assert (model / "model.json").exists() and (model / "saved_model" / "saved_model.pb").exists()
    assert f"predict.py --model={model}" in result.stdout
    assert json.loads((workdir / "eval" / "metrics.json").read_text())["model"] == str(model)
    # A rerun reuses the world instead of rebuilding it.
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0 and "reusing the toy world" in result.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "data_prep.make_toy_world", f"--output_dir={workdir / 'toy_world'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert bad.returncode != 0 and "already holds" in bad.stderr


def test_demo_reuses_a_world_only_when_built_with_every_setting_it_asks_for(
        tiny_world, tmp_path, monkeypatch):
    from speech2face.cli import demo  # pylint: disable=import-outside-toplevel

    built = []
    monkeypatch.setattr(toy_world, "build_toy_world", lambda config, out: built.append(config))
    world, _ = tiny_world
    info = json.loads(open(os.path.join(world, "dataset_info.json")).read())
    workdir = tmp_path / "demo"
    (workdir / "toy_world").mkdir(parents=True)

    def demo_world(config):
        info["config"] = config
        (workdir / "toy_world" / "dataset_info.json").write_text(json.dumps(info))
        return demo.build_world(str(workdir), 6, 3, rebuild=False)

    asked = dataclasses.asdict(toy_world.ToyWorldConfig(num_speakers=6, seed=3))
    assert demo_world(asked) == str(workdir / "toy_world") and built == []
    # The same speakers and seed, other clip lengths (the tiny world's): rebuilt.
    demo_world({**asked, "min_seconds": 1.0})
    assert built == [toy_world.ToyWorldConfig(num_speakers=6, seed=3)]


def test_contact_sheet_keeps_a_speakers_faces_together_six_to_a_row(monkeypatch, tmp_path):
    from speech2face.cli import demo  # pylint: disable=import-outside-toplevel

    drawn = {}
    monkeypatch.setattr(demo.figures, "image_rows",
                        lambda rows, path, tile, **kw: drawn.update(rows=rows, **kw))
    monkeypatch.setattr(demo.media, "decode_jpeg", lambda jpeg: jpeg)
    train = {f"s{i}": {"jpegs": [f"s{i}.jpg"]} for i in range(8)}
    test = {f"t{i}": {"jpegs": [f"t{i}a.jpg", f"t{i}b.jpg"]} for i in range(4)}
    demo.contact_sheet([("train", train), ("test", test)], str(tmp_path / "sheet.png"))
    assert [len(r) for r in drawn["rows"]] == [6, 2, 6, 2]
    assert drawn["row_labels"] == ["train", "", "test", ""]
    assert drawn["captions"][2] == ["t0", "t0", "t1", "t1", "t2", "t2"]
    assert drawn["rows"][3] == ["t3a.jpg", "t3b.jpg"]


def test_demo_stops_after_an_interrupted_stage(caplog):
    # After SIGTERM a stage returns "interrupted"; the demo must not evaluate a half-trained model.
    from speech2face.cli import demo  # pylint: disable=import-outside-toplevel

    demo._stop_unless_finished({"status": "finished", "step": 9}, "Stage 4")
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as stopped:
        demo._stop_unless_finished({"status": "interrupted", "step": 5}, "Stage 4")
    assert stopped.value.code == 1
    assert "Stage 4 stopped at step 5 (interrupted); rerun the same command" in caplog.text


def test_never_writes_over_a_users_files_or_past_its_memory(tmp_path, monkeypatch):
    from speech2face.datasets.toy import checks
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"not empty \(thesis.tex\)"):
        toy_world.build_toy_world(TINY, str(mine))
    assert os.listdir(mine) == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "precious"
    with pytest.raises(FileExistsError, match="is a file"):
        toy_world.build_toy_world(TINY, str(mine / "thesis.tex"))
    monkeypatch.setattr(checks, "_available_memory_bytes", lambda: 2**30)
    big = dataclasses.replace(TINY, num_speakers=1000, records_layout="spectrogram_float16")
    with pytest.raises(ValueError, match=r"num_speakers=1000 .* need about 3.8 GiB.*1.0 GiB"):
        toy_world.build_toy_world(big, str(tmp_path / "new"))
    # Two speakers with a hundred million clips each do not fit either.
    many = dataclasses.replace(TINY, num_speakers=2, clips_per_speaker=10**8)
    with pytest.raises(ValueError, match=r"clips_per_speaker=100000000 .* GiB of memory"):
        toy_world.build_toy_world(many, str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="nope.h5"):
        toy_world.build_toy_world(dataclasses.replace(TINY, vggface_weights=str(tmp_path / "nope.h5")),
                                  str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    result = subprocess.run([sys.executable, "-m", "data_prep.make_toy_world",
                             f"--output_dir={mine}"], capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("make_toy_world.py: error: ")]
    assert result.returncode == 1 and len(errors) == 1 and "not empty" in errors[0]
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "data_prep.make_toy_world", "--output_dir="],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "--output_dir is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_two_builds_on_one_directory_one_is_refused(tmp_path, tiny_world):
    """Two builds started at once both find the directory empty; only one claims it."""
    from speech2face.datasets.toy import checks
    out = str(tmp_path / "world")
    checks.claim(out)
    with pytest.raises(FileExistsError, match="being written by another make_toy_world"):
        checks.claim(out)
    assert os.listdir(out) == [checks.CLAIM_FILE]
    with pytest.raises(FileExistsError, match="being written by another make_toy_world"):
        toy_world.build_toy_world(TINY, out)  # a later start, while the first one runs
    world, _ = tiny_world
    assert checks.CLAIM_FILE not in os.listdir(world)  # a finished build removes its claim


@pytest.mark.parametrize("existed", [False, True])
def test_an_interrupted_build_removes_what_it_wrote(tmp_path, monkeypatch, existed):
    """Ctrl-C after the random weights are written: the directory is as it was (gone, or
    empty), so the same command runs again."""
    out = tmp_path / "world"
    if existed:
        out.mkdir()
    monkeypatch.setattr(toy_world.vggface, "random_vggface_weights",
                        lambda path, seed: open(path, "wb").write(b"weights"))

    def interrupt(*args):
        assert sorted(os.listdir(out)) == [".make_toy_world.pid", "vggface_random_seed3.h5"]
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_world, "_render_faces", interrupt)
    with pytest.raises(KeyboardInterrupt):
        toy_world.build_toy_world(TINY, str(out))
    assert out.exists() == existed and (not existed or os.listdir(out) == [])


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_a_killed_builds_claim_is_taken_over(tmp_path, monkeypatch):
    """kill -9 leaves the claim and partial files: a rerun on this host finds the claim's
    process gone, removes what that build wrote, and builds; a user's file still refuses."""
    import socket
    from speech2face.datasets.toy import checks
    out = tmp_path / "world"
    out.mkdir()
    (out / checks.CLAIM_FILE).write_text(json.dumps({"pid": _dead_pid(),
                                                     "host": socket.gethostname()}))
    for name in ("train-00000-of-00002.tfrecord", "test-00000-of-00001.tfrecord.tmp",
                 "vggface_random_seed3.h5"):
        (out / name).write_bytes(b"partial")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        toy_world.build_toy_world(TINY, str(out))
    assert len(os.listdir(out)) == 5  # refused before it removed anything
    (out / "notes.txt").unlink()
    seen = []

    def build(config, output_dir):
        seen.append(sorted(os.listdir(output_dir)))
        holder = json.loads((out / checks.CLAIM_FILE).read_text())
        seen.append(holder["pid"])
        return "built"

    monkeypatch.setattr(toy_world, "_build", build)
    assert toy_world.build_toy_world(TINY, str(out)) == "built"
    assert seen == [[checks.CLAIM_FILE], os.getpid()]
    assert os.listdir(out) == []  # the finished build removed its claim


def test_a_claim_of_a_live_or_unknown_build_is_refused(tmp_path):
    """A claim whose process lives, or of another host (it cannot be checked), refuses a build
    and removes nothing; the message says what to do."""
    from speech2face.datasets.toy import checks
    out = tmp_path / "world"
    out.mkdir()
    for holder in ({"pid": os.getpid(), "host": __import__("socket").gethostname()},
                   {"pid": _dead_pid(), "host": "another-host.example"},
                   os.getpid()):  # an older build wrote its pid alone
        (out / checks.CLAIM_FILE).write_text(json.dumps(holder))
        (out / "vggface_random_seed3.h5").write_bytes(b"partial")
        with pytest.raises(FileExistsError, match="being written by another make_toy_world "
                                                  r"run \(pid \d+ on .*delete the claim file"):
            toy_world.build_toy_world(TINY, str(out))
        assert sorted(os.listdir(out)) == [checks.CLAIM_FILE, "vggface_random_seed3.h5"]


@pytest.mark.slow
def test_sigterm_stops_a_build_and_removes_what_it_wrote(tmp_path, tiny_weights):
    """SIGTERM is Ctrl-C's equal: the build removes its claim and files (and the directory it
    made), says so in one line and exits 143 (128 + SIGTERM); the same command runs again."""
    out = tmp_path / "world"
    cmd = [sys.executable, "-m", "speech2face.cli.make_toy_world", f"--output_dir={out}",
           f"--vggface_weights={tiny_weights}", "--num_speakers=40"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    status, stderr = helpers.stop_with_sigterm(
        cmd, lambda pid: (out / ".make_toy_world.pid").exists(), env=env)
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "make_toy_world.py: stopped by SIGTERM", stderr
    assert "Traceback" not in stderr
    assert not out.exists()
