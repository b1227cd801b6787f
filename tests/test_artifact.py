"""The self-contained model directory: written from training runs, copied, loaded, served."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

import speech2face
from speech2face import evaluation
from speech2face.models import artifact, export
from tests.support import fake_media, helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def handed_on(tiny_models, tmp_path_factory):
    """A model written from copies of the tiny training runs, the copies then deleted and the
    model moved elsewhere: (model path, the tiny runs' own predictor, the directory it was
    written from)."""
    root = tmp_path_factory.mktemp("artifact")
    runs = root / "runs"
    shutil.copytree(tiny_models.decoder_dir, runs / "decoder")
    shutil.copytree(tiny_models.encoder_dir, runs / "encoder")
    written = artifact.write_model(str(runs / "encoder"), str(root / "model"),
                                   decoder_dir=str(runs / "decoder"))
    shutil.rmtree(runs)
    moved = shutil.move(written, str(root / "elsewhere" / "model"))
    return moved, artifact.load_either(model_dir=tiny_models.encoder_dir), str(root)


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_no_path_inside(handed_on, tiny_models):
    path, _, root = handed_on
    assert sorted(os.listdir(path)) == ["face_decoder.keras", "model.json", "saved_model",
                                        "voice_encoder.keras"]
    texts = list(_strings(json.load(open(os.path.join(path, "model.json")))))
    assert texts and not [t for t in texts if t.startswith("/") or root in t or "://" in t]
    info = json.load(open(os.path.join(path, "model.json")))
    assert info["format"] == artifact.FORMAT and info["speech2face_version"]
    assert info["audio"]["sample_rate"] == 16000 and info["audio"]["segment_samples"] == 96000
    assert info["audio"]["hop_length"] == 160 and info["face"]["size"] == 64
    assert info["steps"] == {"encoder": 4, "decoder": 4}
    weights = info["produced_by"]["vggface_weights"]
    assert len(weights["sha256"]) == 64 and weights["name"].endswith(".h5")
    assert info["produced_by"]["encoder_data"]["counts"]["train"]["clips"] > 0
    assert info["files"]["voice_encoder.keras"]["sha256"] == artifact.sha256(
        os.path.join(path, "voice_encoder.keras"))
    # The resolved configs travel with it, paths cut to base names.
    config = info["configs"]["encoder"]
    assert config["task"]["decoder_dir"] == os.path.basename(tiny_models.decoder_dir)
    assert "differs_from_paper" in config


def test_load_and_predict_after_the_training_runs_are_gone(handed_on):
    path, original, _ = handed_on
    model = speech2face.load_model(path)
    waveform = fake_media.voice(2.5, seed=3)
    out = model(waveform)
    assert out.feature.shape == (1, 4096) and out.feature.dtype == np.float32
    assert out.face.shape == (1, 64, 64, 3) and out.face.dtype == np.uint8
    expected = original.predict(waveform)
    np.testing.assert_allclose(out.feature, expected.feature, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out.face, expected.face)
    # A file path works too, and exaggeration moves the face, not the feature.
    wav = helpers.write_wav(os.path.join(os.path.dirname(path), "voice.wav"), waveform)
    from_file = model.predict([wav, waveform], exaggeration=0.7)
    np.testing.assert_allclose(from_file.feature[0], out.feature[0], rtol=1e-3, atol=1e-4)
    assert np.abs(from_file.face[1].astype(int) - out.face[0]).max() > 0
    assert model.source["step"] == 4 and model.source["differs_from_paper"]["encoder"]


@pytest.mark.slow
def test_saved_model_serves_waveforms_without_the_package(handed_on, tmp_path):
    path, _, _ = handed_on
    model = speech2face.load_model(path)
    clips = {seconds: fake_media.voice(seconds, seed=int(seconds)) for seconds in (3, 6, 10)}
    np.savez(tmp_path / "clips.npz", **{str(k): v.astype(np.float32) for k, v in clips.items()})
    script = f"""
import json, sys
import numpy as np, tensorflow as tf
served = tf.saved_model.load({os.path.join(path, artifact.SAVED_MODEL_DIR)!r})
serve = served.signatures["serving_default"]
clips = np.load({str(tmp_path / "clips.npz")!r}, allow_pickle=False)
out = {{}}
for key in clips.files:
    result = serve(waveform=tf.constant(clips[key][None]))
    out[key] = {{"feature": result["feature"].numpy().tolist(),
                 "face_dtype": result["face"].dtype.name, "face_shape": result["face"].shape.as_list()}}
try:
    serve(waveform=tf.zeros([1, 8000]))
    out["short"] = "accepted"
except tf.errors.InvalidArgumentError as e:
    out["short"] = e.message
out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "speech2face")
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["imported"] == []
    assert "at least 16000 samples" in served["short"]
    for seconds, waveform in clips.items():
        entry = served[str(seconds)]
        assert entry["face_dtype"] == "uint8" and entry["face_shape"] == [1, 64, 64, 3]
        feature = np.asarray(entry["feature"][0])
        expected = model.predict(waveform).feature[0]
        cos = feature @ expected / np.linalg.norm(feature) / np.linalg.norm(expected)
        assert cos >= 0.99, (seconds, cos)


def test_clear_errors(handed_on, tiny_models, tmp_path):
    path, _, _ = handed_on
    with pytest.raises(FileNotFoundError, match="looks like a training run"):
        artifact.load_model(tiny_models.encoder_dir)
    with pytest.raises(FileExistsError, match="overwrite"):
        artifact.write_model(tiny_models.encoder_dir, path, saved_model=False)
    (tmp_path / "mine").mkdir()
    with pytest.raises(FileExistsError, match="not a model directory"):
        artifact.write_model(tiny_models.encoder_dir, str(tmp_path / "mine"), overwrite=True)
    with pytest.raises(ValueError, match="one of the two"):
        artifact.load_either(model=path, model_dir=tiny_models.encoder_dir)
    with pytest.raises(ValueError, match="carries its decoder"):
        artifact.load_either(model=path, decoder_dir=tiny_models.decoder_dir)
    with pytest.raises(ValueError, match="1-D"):
        artifact.load_model(path).predict(np.zeros((2, 3, 4)))


def test_strip_paths():
    assert artifact.strip_paths({"a": "/x/y/train-*.tfrecord,gs://b/c/test-*.tfrecord",
                                 "b": ["./runs/dec/", "small"], "c": 3, "d": None}) == {
        "a": "train-*.tfrecord,test-*.tfrecord", "b": ["dec", "small"], "c": 3, "d": None}


@pytest.mark.slow
def test_cli_export_predict_and_evaluate(tiny_world, tiny_models, tmp_path):
    """speech2face-export-model, then predict.py and evaluate.py with --model."""
    world, _ = tiny_world
    model = tmp_path / "model"
    run = [sys.executable, "-m", "speech2face.cli.export_model",
           f"--model_dir={tiny_models.encoder_dir}", f"--output={model}", "--nosaved_model"]
    proc = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"predict.py --model={model}" in proc.stdout
    again = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    wav = helpers.write_wav(tmp_path / "voice.wav", fake_media.voice(4.0))
    proc = subprocess.run([sys.executable, "predict.py", f"--model={model}", f"--audio={wav}",
                           f"--output={tmp_path / 'face.png'}"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "face.png").stat().st_size > 1000
    result = evaluation.run_evaluation(None, os.path.join(world, "*.tfrecord"),
                                       str(tmp_path / "eval"), model=str(model), num_shuffles=10,
                                       allow_train_split=True)
    assert result["splits"] == ["test", "train"]
    assert "TRAINING split" in (tmp_path / "eval" / "report.md").read_text()
    assert result["step"] == 4 and result["model"] == str(model)
    assert result["files"]["summaries"] == str(tmp_path / "eval" / "eval")
    assert result["differs_from_paper"]["encoder"]["task.preset"]["run"] == "small"
    assert export.read_run_config(str(model)) is None  # a model, not a run


def _model(tiny_models, path):
    return artifact.write_model(tiny_models.encoder_dir, str(path), saved_model=False)


def _written(path):
    return json.load(open(os.path.join(path, artifact.MODEL_INFO)))["written"]


def test_a_failed_swap_keeps_the_old_model(tiny_models, tmp_path, monkeypatch):
    """The old model is renamed aside, the new one renamed in, the old one deleted last: a
    rename that fails puts the old model back; one killed between the renames (here: the
    rename back fails too) leaves it in OUTPUT.replaced, which the next load restores."""
    path = _model(tiny_models, tmp_path / "model")
    old = open(os.path.join(path, artifact.MODEL_INFO)).read()
    real = artifact.tf.io.gfile.rename
    failing = {artifact.STAGING_SUFFIX}

    def rename(src, dst, overwrite=False):
        if any(src.endswith(suffix) for suffix in failing):
            raise OSError(f"simulated failure renaming {src}")
        return real(src, dst, overwrite)

    monkeypatch.setattr(artifact.tf.io.gfile, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        artifact.write_model(tiny_models.encoder_dir, path, saved_model=False, overwrite=True)
    assert open(os.path.join(path, artifact.MODEL_INFO)).read() == old
    assert not os.path.exists(path + artifact.REPLACED_SUFFIX)

    failing.add(artifact.REPLACED_SUFFIX)  # as if killed after the first rename
    with pytest.raises(OSError, match="simulated"):
        artifact.write_model(tiny_models.encoder_dir, path, saved_model=False, overwrite=True)
    assert not os.path.exists(path) and os.path.isdir(path + artifact.REPLACED_SUFFIX)
    with pytest.raises(artifact.ModelError, match=re.escape(f"rename {path}.replaced to {path}") + "$"):
        artifact.load_model(path)  # it cannot be renamed back either: the user is told how
    failing.clear()
    model = artifact.load_model(path)  # restored from OUTPUT.replaced
    assert model.info["written"] == json.loads(old)["written"]
    assert sorted(os.listdir(tmp_path)) == ["model", "model.partial"]
    # The next write goes through, and takes the killed one's OUTPUT.partial with it.
    artifact.write_model(tiny_models.encoder_dir, path, saved_model=False, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert artifact.load_model(path).face_size == 64


def test_a_kill_before_the_old_model_is_deleted(tiny_models, tmp_path):
    """OUTPUT.replaced beside a new OUTPUT (killed before the old one was deleted) is loaded
    past and deleted by the next write; without OUTPUT, the next write restores it first (and
    then refuses to overwrite it unless asked)."""
    path = _model(tiny_models, tmp_path / "model")
    shutil.copytree(path, path + artifact.REPLACED_SUFFIX)
    assert artifact.load_model(path).face_size == 64
    assert os.path.isdir(path + artifact.REPLACED_SUFFIX)  # a load does not delete
    with pytest.raises(FileExistsError, match="overwrite"):
        _model(tiny_models, path)
    assert sorted(os.listdir(tmp_path)) == ["model"]
    written = _written(path)
    os.rename(path, path + artifact.REPLACED_SUFFIX)
    with pytest.raises(FileExistsError, match="overwrite"):
        _model(tiny_models, path)
    assert sorted(os.listdir(tmp_path)) == ["model"] and _written(path) == written


def test_two_exports_to_one_output_do_not_interleave(tiny_models, tmp_path):
    """OUTPUT.lock is held while a model is written: a second export to the same output is
    refused (it would delete the first one's OUTPUT.partial); a killed one's lock is taken
    over."""
    from speech2face import errors, lockfile  # pylint: disable=import-outside-toplevel
    path = str(tmp_path / "model")
    with lockfile.LockFile(path + artifact.LOCK_SUFFIX, "another model export", "x"):
        with pytest.raises(errors.UserError, match="in use by another model export"):
            artifact.write_model(tiny_models.encoder_dir, path, saved_model=False)
    assert sorted(os.listdir(tmp_path)) == []
    (tmp_path / "model.lock").write_text(json.dumps({"pid": 2**22 + 12345,
                                                      "host": socket.gethostname()}))
    _model(tiny_models, path)  # the dead process's lock is taken over, then released
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_what_is_in_the_way_is_not_deleted(tiny_models, tmp_path):
    path = _model(tiny_models, tmp_path / "model")
    for suffix in (artifact.REPLACED_SUFFIX, artifact.STAGING_SUFFIX):
        (tmp_path / f"model{suffix}").mkdir()
        (tmp_path / f"model{suffix}" / "notes.txt").write_text("mine")
        with pytest.raises(FileExistsError, match=f"model\\{suffix} is in the way"):
            artifact.write_model(tiny_models.encoder_dir, path, saved_model=False,
                                 overwrite=True)
        assert (tmp_path / f"model{suffix}" / "notes.txt").read_text() == "mine"
        shutil.rmtree(tmp_path / f"model{suffix}")
    assert artifact.load_model(path).face_size == 64


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tiny_models, tmp_path,
                                                                      monkeypatch):
    (tmp_path / "file").write_text("x")
    loaded = []
    monkeypatch.setattr(artifact.export, "load_encoder", lambda d: loaded.append(d))
    with pytest.raises(artifact.ModelError, match="file is a file, not a directory"):
        artifact.write_model(tiny_models.encoder_dir, str(tmp_path / "file" / "model"))
    with pytest.raises(FileExistsError, match="is a file, not a model directory"):
        artifact.write_model(tiny_models.encoder_dir, str(tmp_path / "file"), overwrite=True)
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        with pytest.raises(artifact.ModelError, match="not writable"):
            artifact.write_model(tiny_models.encoder_dir, str(tmp_path / "locked" / "model"))
    assert loaded == [] and (tmp_path / "file").read_text() == "x"


@pytest.fixture
def damaged(tiny_models, tmp_path):
    """A fresh model directory to damage."""
    return _model(tiny_models, tmp_path / "model")


@pytest.mark.parametrize("content, message", [
    ("[]", "model.json holds a list, not the JSON object"),
    ('"x"', "model.json holds a string, not the JSON object"),
    ("{not json", "model.json is not readable JSON"),
    ("", "model.json is not readable JSON"),
    ("{}", "model.json has no 'format' or 'format_version'"),
    ('{"format": "speech2face-model"}', "model.json has no 'format_version'"),
    ('{"format": "other", "format_version": 1}', "format 'other' version 1"),
    ('{"format": "speech2face-model", "format_version": "1"}', "with an integer version"),
    ('{"format": "speech2face-model", "format_version": 9}', "upgrade speech2face"),
    ('{"format": "speech2face-model", "format_version": 1, "steps": []}', "'steps' is a list"),
    ('{"format": "speech2face-model", "format_version": 1, "steps": {"encoder": "x"}}',
     "steps.encoder is 'x'"),
    ('{"format": "speech2face-model", "format_version": 1, "configs": {"encoder": 3}}',
     "configs.encoder is a number"),
    ('{"format": "speech2face-model", "format_version": 1, "audio": {"hop_length": 256}}',
     "another audio front end \\(hop_length 256, here 160\\)"),
])
def test_a_bad_model_json_is_named(damaged, content, message):
    with open(os.path.join(damaged, artifact.MODEL_INFO), "w") as f:
        f.write(content)
    with pytest.raises(artifact.ModelError, match=message) as caught:
        artifact.load_model(damaged)
    assert os.path.join(damaged, "model.json") in str(caught.value)


def _truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])


def _garbage(path):
    open(path, "wb").write(b"not a keras file\n" * 10)


def _bad_weights(path):
    """A whole zip whose weights are not HDF5."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in entries.items():
            z.writestr(name, b"junk" if name.endswith(".h5") else data)


@pytest.mark.parametrize("name", [artifact.ENCODER_FILE, artifact.DECODER_FILE])
@pytest.mark.parametrize("damage, message", [
    (_truncate, "is corrupt"), (_garbage, "is corrupt"), (_bad_weights, "is corrupt"),
    (os.remove, "is an incomplete model directory: it has no {name}"),
])
def test_a_damaged_keras_file_is_named(damaged, name, damage, message):
    damage(os.path.join(damaged, name))
    with pytest.raises(artifact.ModelError, match=message.format(name=name)) as caught:
        artifact.load_model(damaged)
    text = str(caught.value)
    assert (name in text and "speech2face-export-model" in text and "--overwrite" in text
            and "File not found" not in text and "train" not in text.split(";")[0]), text


def test_a_model_directory_given_as_a_run(handed_on, tmp_path):
    path, _, _ = handed_on
    with pytest.raises(FileNotFoundError, match="is a model directory .* give it as --model"):
        artifact.load_either(model_dir=path)
    with pytest.raises(FileNotFoundError, match="is a model directory"):
        artifact.write_model(path, str(tmp_path / "again"))
    assert not (tmp_path / "again").exists()
    with pytest.raises(FileNotFoundError, match="no model.json\\): no such directory"):
        artifact.load_model(str(tmp_path / "nowhere"))


def _tool(args):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines()
             if "cudart_stub" not in line and "absl::InitializeLog" not in line
             and "cuInit" not in line]
    return proc, lines


@pytest.mark.slow
def test_cli_damaged_model_and_bad_output_are_one_line(tiny_world, tiny_models, tmp_path):
    """predict.py, evaluate.py and the model export: one line naming the file (each tool named
    as it was run: `python -m speech2face.cli.export_model` is export_model.py)."""
    world, _ = tiny_world
    path = _model(tiny_models, tmp_path / "model")
    _garbage(os.path.join(path, artifact.ENCODER_FILE))
    (tmp_path / "file").write_text("x")
    wav = helpers.write_wav(tmp_path / "voice.wav", fake_media.voice(2.0))
    for args, prog, message in (
            (["predict.py", f"--model={path}", f"--audio={wav}",
              f"--output={tmp_path / 'face.png'}"], "predict.py",
             f"{os.path.join(path, artifact.ENCODER_FILE)} is corrupt"),
            (["evaluate.py", f"--model={path}", f"--records={world}/test-*.tfrecord",
              f"--output_dir={tmp_path / 'eval'}"], "evaluate.py",
             f"{os.path.join(path, artifact.ENCODER_FILE)} is corrupt"),
            (["-m", "speech2face.cli.export_model", f"--model_dir={tiny_models.encoder_dir}",
              f"--output={tmp_path / 'file' / 'model'}"], "export_model.py",
             f"{tmp_path / 'file'} is a file, not a directory")):
        proc, lines = _tool(args)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
        assert message in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "face.png").exists() and not (tmp_path / "eval").exists()
    with open(os.path.join(path, artifact.MODEL_INFO), "w") as f:
        f.write("[]")
    proc, lines = _tool(["predict.py", f"--model={path}", f"--audio={wav}",
                         f"--output={tmp_path / 'face.png'}"])
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
    assert f"{os.path.join(path, 'model.json')} holds a list" in lines[0]
