"""The self-contained model directory: written from training runs, copied, loaded, served."""

import json
import os
import shutil
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
