"""Stage 1's task (speech2face.training.decoder_task): the canonical-face filter of its inputs,
what `prepare` counts and records. Training end to end: tests/test_training.py."""

import numpy as np
import pytest
import tensorflow as tf

from speech2face import data, records
from speech2face.models import landmarks as landmarks_lib
from speech2face.training import config, decoder_task, experiments, loop
from tests.support import fake_records

NUM_FILES, PER_FILE = 2, 6
TEMPLATE_PX = landmarks_lib.normalized_to_pixels(landmarks_lib.template_landmarks(),
                                                 records.FACE_SIZE)


def _face(index: int) -> np.ndarray:
    """Example `index`'s pixel landmarks: frontal and neutral when index % 3 == 0, else turned
    (1) or with the mouth open (2)."""
    face = TEMPLATE_PX.copy()
    if index % 3 == 1:
        face[landmarks_lib.NOSE_TIP, 0] += 40.0  # yaw 0.74 (eye corners 107 px apart)
    elif index % 3 == 2:
        face[[55, 56, 57, 58, 59, 65, 66, 67], 1] += 15.0  # mouth opening 0.39 (49 px wide)
    return face


KEPT = [i for i in range(NUM_FILES * PER_FILE) if i % 3 == 0]


def _task(**kwargs):
    return decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset="small", perceptual_weight=0.0, **kwargs))


def _indices(batch):
    """Example indices of a batch: each fake JPEG is one grey level, index % 256."""
    return [int(round(v)) for v in batch["face_image"].numpy().mean(axis=(1, 2, 3)) * 255.0]


@pytest.fixture
def mixed_records(tmp_path):
    pattern, _ = fake_records.write_record_files(str(tmp_path), NUM_FILES, PER_FILE,
                                                 landmarks_fn=_face)
    return pattern


def test_the_input_pipelines_keep_only_canonical_faces(mixed_records):
    task = _task()
    held_out = data.input_fn(mixed_records, None, 3, False, task.input_options(False))
    seen = [i for batch in held_out for i in _indices(batch)]
    assert sorted(seen) == KEPT
    training = data.input_fn(mixed_records, None, 3, True, task.input_options(True))
    for batch in training.take(4):  # full batches of kept faces only, repeated
        assert batch["face_image"].shape[0] == 3
        assert set(_indices(batch)) <= set(KEPT)
        assert landmarks_lib.is_canonical(batch["landmarks"].numpy()).all()
    # Off: every face.
    everything = data.input_fn(mixed_records, None, 3, False,
                               _task(canonical_faces=False).input_options(False))
    assert sorted(i for batch in everything for i in _indices(batch)) == list(range(12))


def test_prepare_counts_the_kept_faces_and_averages_over_them(mixed_records):
    task = _task()
    task.prepare(data.list_files(mixed_records))
    faces = task.training_faces
    assert (faces["read"], faces["kept"]) == (12, 4)
    assert faces["kept_fraction"] == pytest.approx(1 / 3)
    assert faces["outside_bounds"] == {"yaw": 4, "roll": 0, "mouth_open": 4}
    assert faces["filter"] == "|yaw| <= 0.25, |roll| <= 10 deg, mouth opening <= 0.1"
    assert task.config()["training_faces"] == faces
    # The means are over the kept faces only.
    np.testing.assert_allclose(task.mean_landmarks, landmarks_lib.template_landmarks(),
                               atol=1e-5)
    assert task.mean_face.mean() == pytest.approx(np.mean(KEPT) / 255.0, abs=2e-3)
    kept_features = [fake_records.make_example(i).face_feature for i in KEPT]
    np.testing.assert_allclose(task.feature_mean, np.mean(kept_features, 0), rtol=1e-5)

    off = _task(canonical_faces=False)
    off.prepare(data.list_files(mixed_records))
    assert (off.training_faces["kept"], off.training_faces["filter"]) == (12, "off")
    assert off.training_faces["kept_fraction"] == 1.0


def test_no_canonical_face_is_a_clear_error(tmp_path):
    pattern, _ = fake_records.write_record_files(  # uniform-noise landmarks: none is a face
        str(tmp_path), 1, 4)
    with pytest.raises(loop.TrainingError) as error:
        _task().prepare(data.list_files(pattern))
    message = str(error.value)
    assert "none of the 4 training faces" in message and "train0" in message
    assert "|yaw| <= 0.25, |roll| <= 10 deg, mouth opening <= 0.1" in message
    assert "--nocanonical_faces" in message
    looser = _task(canonical_max_yaw=100.0, canonical_max_roll_deg=180.0,
                   canonical_max_mouth_open=100.0)
    looser.prepare(data.list_files(pattern))
    assert looser.training_faces["kept"] == 4


def test_the_filter_is_the_papers_way_and_a_departure_when_off():
    assert decoder_task.DecoderTaskConfig().canonical_faces
    assert experiments.get("paper_decoder").task.canonical_faces
    assert experiments.get("toy_decoder").task.canonical_faces  # toy faces are all frontal
    off = decoder_task.DecoderTaskConfig(canonical_faces=False, canonical_max_yaw=0.3)
    differs = config.differences_from_paper(off, config.TrainerConfig(), config.RuntimeConfig())
    assert differs == {"task.canonical_faces": {"run": False, "paper": True},
                       "task.canonical_max_yaw": {"run": 0.3, "paper": 0.25}}


def _rates(optimizer, updates):
    """The step size each of `updates` updates is applied with."""
    variable, rates = tf.Variable([0.0]), []
    for _ in range(updates):
        rates.append(float(optimizer.learning_rate))
        optimizer.apply_gradients([(tf.constant([1.0]), variable)])
    return rates


def test_the_step_size_decays_by_staircase_and_a_decay_is_a_departure():
    # The paper's (Cole et al.'s): constant.
    np.testing.assert_allclose(_rates(_task().build_optimizer(), 4), [1e-3] * 4, rtol=1e-6)
    rates = _rates(_task(decay_rate=0.25, decay_steps=3).build_optimizer(), 7)
    np.testing.assert_allclose(rates, [1e-3] * 3 + [2.5e-4] * 3 + [6.25e-5], rtol=1e-6)
    cfg = decoder_task.DecoderTaskConfig(decay_rate=0.25, decay_steps=3)
    differs = config.differences_from_paper(cfg, config.TrainerConfig(), config.RuntimeConfig())
    assert differs == {"task.decay_rate": {"run": 0.25, "paper": 1.0},
                       "task.decay_steps": {"run": 3, "paper": 10000}}
    for bad, match in (({"decay_steps": 0}, "decay_steps must be at least 1"),
                       ({"decay_rate": 0.0}, r"decay_rate must be in \(0, 1\]"),
                       ({"decay_rate": 1.5}, r"decay_rate must be in \(0, 1\]")):
        with pytest.raises(ValueError, match=match):
            _task(**bad)


def test_training_faces_of_one_person_are_a_clear_error(tmp_path):
    """Features that do not vary cannot be scaled to unit RMS (they would be blown up ~1e12 and
    the warp's system would turn singular): one person's faces are refused, naming the files."""
    import os  # pylint: disable=import-outside-toplevel
    same = np.full(records.FEATURE_DIM, 0.25, np.float32)
    with records.ShardedWriter(os.path.join(str(tmp_path), "train0")) as writer:
        for index in range(3):
            example = fake_records.make_example(index, 7)
            example.face_feature, example.landmarks = same, TEMPLATE_PX.astype(np.float32)
            writer.write(example)
    files = data.list_files(str(tmp_path / "train*.tfrecord"))
    with pytest.raises(loop.TrainingError, match="all have the same face feature") as error:
        _task().prepare(files)
    assert "the 3 training faces kept in" in str(error.value) and files[0] in str(error.value)
