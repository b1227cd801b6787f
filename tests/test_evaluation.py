"""Evaluation (docs/evaluation.md): metrics.json, report.md, figures, summaries on the tiny world."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from speech2face.datasets.toy import attributes as toy_attributes
from speech2face.evaluation import attributes, craniofacial, encode, report
from speech2face import audio, data, evaluation, records
from speech2face.models import export
from tests.support import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("1", "2", "5", "10")


@pytest.fixture(scope="module")
def evaluated(tiny_world, tiny_models, tmp_path_factory):
    """The default evaluation of all 12 tiny-world clips (the 2 test clips alone are too few
    for correlations), attributes from probes fitted on the train split."""
    world, _ = tiny_world
    out = str(tmp_path_factory.mktemp("evaluation"))
    result = evaluation.run_evaluation(
        tiny_models.encoder_dir, os.path.join(world, "*.tfrecord"), out, num_shuffles=50,
        attribute_classifiers=toy_attributes.toy_attribute_classifiers(world),
        allow_train_split=True)  # the tiny world's test split alone is too small
    return out, result


def test_three_seconds_are_the_first_298_frames():
    waveform = helpers.chirp(100, 3000, 6.0)
    assert audio.num_frames(audio.SEGMENT_SAMPLES // 2) == 298
    np.testing.assert_array_equal(audio.spectrogram_np(waveform[:48000]),
                                  audio.spectrogram_np(waveform)[:298])
    assert encode.duration_frames(3, 598) == 298
    assert encode.duration_frames(6, 598) == 598
    assert encode.duration_key(6.0) == "6" and encode.duration_key(4.5) == "4.5"
    with pytest.raises(ValueError, match="at most 6 s"):
        encode.duration_frames(8, 598)
    # The shortest duration is the encoder's: 0.3 s (28 frames) passes the four pools alone,
    # not a conv1 striding time by 4 (64 frames, 0.655 s).
    assert encode.duration_frames(0.3, 598) == 28
    with pytest.raises(ValueError, match=r"0.3 s is too short: .* at least 64 frames \(0.655 s\)"):
        encode.duration_frames(0.3, 598, min_frames=64)


def test_encoded_three_seconds_match_the_audio(tiny_world, tiny_models):
    """v_s at 3 s from the stored spectrogram = v_s of the first 3 s of the stored clip."""
    world, _ = tiny_world
    encoder, info = export.load_encoder(tiny_models.encoder_dir)
    decoder = export.load_decoder(info["decoder_dir"])
    files = data.list_files(os.path.join(world, "test-*.tfrecord"))
    encoded = encode.encode(encoder, decoder, files, (6, 3), limit=2, batch_size=2)
    assert encoded.frames == {"6": 598, "3": 298}
    assert encoded.exaggerations == [0.0] and encoded.detected_landmarks == {}
    assert encoded.v_s["6"].shape == encoded.v_s["3"].shape == (2, 4096)
    assert encoded.landmarks.shape == (2, 68, 2) and np.isfinite(encoded.landmarks).all()
    # One decoding per feature set: landmarks of every row, faces of the figure sample.
    assert encoded.decoded_landmarks.keys() == {encode.V_F, "6", "3"}
    assert all(m.shape == (2, 68, 2) for m in encoded.decoded_landmarks.values())
    assert all(faces.keys() == set(encoded.sample) for faces in encoded.decoded_faces.values())
    first = records.decode_example(next(iter(tf.data.TFRecordDataset(files[0]))).numpy())
    assert encoded.clip_ids[0] == first.clip_id
    clip = first.waveform[:audio.SEGMENT_SAMPLES // 2].astype(np.float32) / 32768.0
    v_s = encoder(audio.spectrogram(clip[None]), training=False).numpy()[0]
    # The records hold float16 spectrograms of the float32 clip, this is the int16 clip.
    cos = v_s @ encoded.v_s["3"][0] / np.linalg.norm(v_s) / np.linalg.norm(encoded.v_s["3"][0])
    assert cos > 0.999


def test_metrics_json(evaluated):
    out, result = evaluated
    with open(os.path.join(out, "metrics.json")) as f:
        saved = json.load(f)
    assert saved["durations"].keys() == {"6", "3"}
    assert saved["gallery_size"] == 12 and saved["gallery_size_requested"] == 5000
    assert saved["all_test_examples_used"] is True
    assert saved["step"] == 4 and saved["num_speakers"] == 6
    for key, frames in (("6", 598), ("3", 298)):
        numbers = saved["durations"][key]
        assert numbers["num_queries"] == numbers["gallery_size"] == 12
        assert numbers["num_frames"] == frames
        assert numbers["retrieval"].keys() == {"cos", "l1", "l2"}
        for recall in numbers["retrieval"].values():
            values = [recall[k] for k in KEYS]
            assert all(0.0 <= v <= 100.0 for v in values) and values == sorted(values)
        # On unit vectors L2 ranks exactly as the cosine does.
        assert numbers["retrieval"]["l2"] == numbers["retrieval"]["cos"]
        assert numbers["chance"] == {k: 100.0 * min(int(k), 12) / 12 for k in KEYS}
        (angle, angle_sd), (l2, _), (l1, _) = (numbers["distances"][n]
                                               for n in ("cos_deg", "l2", "l1"))
        assert 0 <= angle <= 180 and angle_sd >= 0 and 0 <= l2 <= 2 and l1 >= 0
        # For unit vectors the L2 distance is fixed by the angle (up to the spread).
        assert l2 == pytest.approx(2 * np.sin(np.radians(angle) / 2), rel=1e-2)
        assert numbers["distances_mismatched"]["cos_deg"][0] > 0
        # The same on raw features: cosine is scale-free, L2 and L1 are not.
        raw = numbers["raw"]
        assert raw["retrieval"]["cos"] == numbers["retrieval"]["cos"]
        assert raw["retrieval"].keys() == {"cos", "l1", "l2"}
        assert raw["distances"]["cos_deg"][0] == pytest.approx(angle, abs=1e-4)
        assert raw["distances"]["l2"][0] != pytest.approx(l2, rel=1e-3)
        # The paper's study, F2F vs S2F on dlib's landmarks, at e = 0 and 0.7; the decoder's
        # landmark branch as a second source; true vs S2F as an extra.
        for source in ("craniofacial_f2f_s2f", "craniofacial_f2f_s2f_decoder_landmarks"):
            assert numbers[source].keys() == {"0", "0.7"}, source
            tables = list(numbers[source].values())
        tables.append(numbers["craniofacial_true_s2f"])
        for table in tables:
            assert table.keys() == set(craniofacial.MEASUREMENTS)
            for entry in table.values():
                assert entry["n"] == 12
                if entry["r"] is None:  # no empty cell without a reason
                    assert entry["reason"]
                else:
                    assert -1 <= entry["r"] <= 1 and 0 <= entry["p_value"] <= 1
        assert numbers["attributes"].keys() == set(toy_attributes.TOY_ATTRIBUTES)
        for name, entry in numbers["attributes"].items():
            assert entry["classes"] == list(toy_attributes.TOY_ATTRIBUTES[name])
            assert np.sum(entry["confusion"]) == 12
            for field in ("agreement", "chance_agreement", "true_face_vs_truth",
                          "reconstruction_vs_truth"):
                assert 0 <= entry[field] <= 100
            for row, counts in zip(entry["confusion_percent"], entry["confusion"]):
                assert row is None if not sum(counts) else sum(row) == pytest.approx(100)
    # The toy world's classifiers read features: F2F would compare v_f with itself.
    assert all("feature classifier" in e["reason"] for e in saved["attributes_f2f"].values())
    cranio = saved["craniofacial"]
    assert cranio["exaggerations"] == [0.0, 0.7] and cranio["faces"] == 12
    assert cranio["measurements"].keys() == set(craniofacial.MEASUREMENTS)
    assert "dlib" in cranio["landmarks"]
    assert cranio["true_f2f"]["nasal_index"]["n"] == 12
    assert saved == json.loads(json.dumps(result))


def test_report(evaluated):
    out, result = evaluated
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    for text in ("## Feature similarity between v_s and v_f", "## S2F → face retrieval",
                 "## Craniofacial measurements", "## Attributes of the true vs the reconstructed",
                 "| 6 s | paper | 45.75 ± 5.09 |", "| 3 s | paper | 48.43 ± 6.01 |",
                 "| 6 s | cosine | paper | 10.92 | 17.00 | 30.60 | 45.82 |",
                 "| 6 s | L2 | paper | 8.28 | 13.66 | 24.66 | 35.84 |",
                 "| 3 s | cosine | paper | 8.54 | 13.64 | 24.80 | 38.54 |",
                 "| any | — | chance, 12 faces | 8.33 | 16.67 | 41.67 | 83.33 |",
                 "fewer than the 5000 requested, so all 12", "÷0.232", "norm ≈ 0.232",
                 "RANDOM VGG-Face", "nasal_index", "\\|p31 − p35\\|", "*masculinity, S2F, 6 s*",
                 "## Craniofacial measurements: F2F vs S2F", "| r (e = 0) | p | r (e = 0.7) |",
                 "**3 s of speech**", "landmark branch", "Not the paper's comparison",
                 "feminine", "recall_at_k.png", "| 6 s | L2 | ours, raw features |",
                 "| 6 s | ours, raw features |", "## Settings that differ from the paper",
                 "| encoder | `task.preset` | small | paper |",
                 "| decoder | `trainer.length` | 4 steps | 3 epochs |"):
        assert text in report, text
    recall = result["durations"]["6"]["retrieval"]["cos"]
    assert "| 6 s | cosine | ours | " + " | ".join(f"{recall[k]:.2f}" for k in KEYS) in report
    assert "Traceback" not in report and "None" not in report
    assert "| **Loss weights** | λ1 = 0.025, λ2 = 200, T = 2 |" in report


def test_report_names_loss_weights_that_differ_from_the_paper(evaluated):
    _, result = evaluated
    changed = json.loads(json.dumps(result))
    changed["encoder"]["loss"]["lambda1"] = 10000.0
    text = report.format_report(changed)
    assert "| **Loss weights** | λ1 = 10000 (**the paper's is 0.025**), λ2 = 200, T = 2 |" in text
    del changed["encoder"]["loss"]
    assert "| **Loss weights** | not recorded by this export |" in report.format_report(changed)


def test_figures(evaluated):
    out, result = evaluated
    paths = result["files"]["figures"]
    assert set(paths) == {"recall", "distances", "faces"}
    for path in paths.values():
        assert os.path.dirname(path) == out
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) > 100
    with Image.open(paths["faces"]) as faces:
        # 6 speakers (rows) × true | from v_f | from v_s 6 s | from v_s 3 s.
        assert faces.size == (110 + 4 * 116, 24 + 6 * 116)


def test_tensorboard_summaries(evaluated, tiny_models):
    _, result = evaluated
    directory = os.path.join(tiny_models.encoder_dir, "eval")
    assert result["files"]["summaries"] == directory
    tags = helpers.summary_tags(directory)
    for tag in ("eval/retrieval_cos_r10_6s", "eval/retrieval_l1_r1_3s", "eval/chance_r1_6s",
                "eval/distance_cos_deg_6s", "eval/craniofacial_r_nasal_index_6s_e0.7",
                "eval/attribute_agreement_masculinity_3s", "eval/faces_true_vf_vs",
                "eval/report"):
        assert tag in tags, tag


@pytest.mark.slow
def test_gallery_size_and_cli(tiny_world, tiny_models, tmp_path):
    """The CLI with a gallery smaller than the records: the first 5 clips, one duration."""
    world, _ = tiny_world
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"--model_dir={tiny_models.encoder_dir}",
         f"--records={world}/test-*.tfrecord,{world}/train-*.tfrecord", f"--output_dir={out}",
         "--gallery_size=5", "--durations=6", "--batch_size=2", "--nosummaries",
         "--exaggeration=1.4", "--study_size=4", "--allow_train_split"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "S2F -> face retrieval among 5 faces" in proc.stdout
    assert "Encoded 5 clips" in proc.stderr  # progress
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["gallery_size"] == 5 and not saved["all_test_examples_used"]
    assert list(saved["durations"]) == ["6"]
    assert saved["durations"]["6"]["chance"]["1"] == 20.0
    assert saved["durations"]["6"]["chance"]["10"] == 100.0
    assert saved["craniofacial"]["exaggerations"] == [0.0, 1.4]
    study = saved["durations"]["6"]["craniofacial_f2f_s2f"]
    assert study.keys() == {"0", "1.4"} and study["1.4"]["nasal_index"]["n"] == 4
    report = (out / "report.md").read_text()
    assert "the first 5 test clips" in report and "requested" not in report
    assert "| 3 s |" not in report and "| r (e = 0) | p | r (e = 1.4) | p |" in report


@pytest.mark.slow
def test_cli_errors_are_one_line(tiny_world, tmp_path):
    world, _ = tiny_world
    proc = subprocess.run(
        [sys.executable, "evaluate.py", f"--model_dir={tmp_path}",
         f"--records={world}/test-*.tfrecord", f"--output_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "no exported voice encoder" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(data.NoRecordsError, match="no TFRecord files match"):
        evaluation.run_evaluation(str(tmp_path), str(tmp_path / "none-*.tfrecord"),
                                  str(tmp_path / "out"))
    # The training split is not a test set: refused before anything loads or is written.
    with pytest.raises(ValueError, match="under the TRAIN split.*--allow_train_split"):
        evaluation.run_evaluation(str(tmp_path), f"{world}/train-*.tfrecord",
                                  str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


class _Brightness:
    """An image classifier: darker or lighter than mid-grey on average."""

    name = "brightness"
    classes = ("dark", "light")
    input_kind = "image"

    def __init__(self):
        self.shapes = []

    def predict(self, images):
        self.shapes.append(images.shape)
        return (images.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)


class _FeatureSign:
    name = "sign"
    classes = ("negative", "positive")
    input_kind = "feature"

    def predict(self, features):
        return (features[:, 0] > np.median(features[:, 0])).astype(np.int64)


def test_plugged_in_classifiers(tiny_world, tiny_models, tmp_path):
    world, _ = tiny_world
    brightness = _Brightness()
    result = evaluation.run_evaluation(
        tiny_models.encoder_dir, os.path.join(world, "*.tfrecord"), str(tmp_path), gallery_size=6,
        durations=(6,), attribute_classifiers=[brightness, _FeatureSign()],
        write_summaries=False, num_shuffles=10, allow_train_split=True)
    assert all(shape[1:] == (224, 224, 3) for shape in brightness.shapes)
    entries = result["durations"]["6"]["attributes"]
    assert set(entries) == {"brightness", "sign"}
    for entry in entries.values():
        assert np.sum(entry["confusion"]) == 6 and "true_face_vs_truth" not in entry
    # F2F vs the true face, for the image classifier: the decoder's upper bound.
    f2f = result["attributes_f2f"]
    assert np.sum(f2f["brightness"]["confusion"]) == 6 and "reason" in f2f["sign"]
    assert "summaries" not in result["files"]
    report = (tmp_path / "report.md").read_text()
    assert "| brightness | dark, light |" in report and "masculinity" not in report
    assert "*brightness, F2F*" in report and "*sign, F2F*" not in report
    with pytest.raises(TypeError, match="not an attribute classifier"):
        attributes.check_classifiers([object()])


def test_attribute_agreement_counts():
    classifier = _FeatureSign()
    entry = attributes.attribute_agreement(classifier, np.array([0, 0, 1, 1]),
                                           np.array([0, 1, 1, 1]), truth=np.array([0, 0, 0, 1]))
    assert entry["confusion"] == [[1, 1], [0, 2]]
    assert entry["confusion_percent"] == [[50.0, 50.0], [0.0, 100.0]]
    assert entry["agreement"] == 75.0
    # Marginals: true face (2, 2), reconstruction (1, 3): (2·1 + 2·3) / 16.
    assert entry["chance_agreement"] == 50.0
    assert entry["true_face_vs_truth"] == 75.0 and entry["reconstruction_vs_truth"] == 50.0
    with pytest.raises(ValueError, match="int labels"):
        attributes.predict_labels(_OutOfRange(), np.zeros((3, 4)))


class _OutOfRange:
    name = "bad"
    classes = ("only",)

    def predict(self, inputs):
        return np.full(len(inputs), 3)
