"""Round trips through the one TFRecord schema."""

import os

import numpy as np
import pytest
import tensorflow as tf

from speech2face import records
from tests.support import fake_records


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_numpy_reader(dtype):
    example = fake_records.make_example(4, num_frames=5)
    back = records.decode_example(records.encode_example(example, f"spectrogram_{dtype}"))
    assert back.spectrogram.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.spectrogram, example.spectrogram.astype(dtype))
    np.testing.assert_array_equal(back.face_feature, example.face_feature)
    np.testing.assert_array_equal(back.landmarks, example.landmarks)
    np.testing.assert_array_equal(back.waveform, example.waveform)
    assert back.face_jpeg == example.face_jpeg
    assert (back.speaker_id, back.clip_id, back.source) == ("spk001", "clip00004", "toy")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_batched_tf_parser(tmp_path, dtype):
    pattern, _ = fake_records.write_record_files(str(tmp_path), 1, 4,
                                                 layout=f"spectrogram_{dtype}")
    path = tf.io.gfile.glob(pattern)[0]
    spec = records.read_spec(path)
    assert spec == records.RecordSpec(num_frames=7, layout=f"spectrogram_{dtype}")
    assert spec.spectrogram_dtype == dtype and spec.stores_spectrogram
    batch = next(iter(tf.data.TFRecordDataset(path).batch(4)))
    parsed = records.parse_batch(batch, spec, with_faces=True, with_waveform=True)
    assert parsed["spectrogram"].shape == (4, 7, records.NUM_FREQ_BINS, 2)
    assert parsed["spectrogram"].dtype == tf.float32
    for i in range(4):
        example = fake_records.make_example(i)
        np.testing.assert_array_equal(
            parsed["spectrogram"][i].numpy(), example.spectrogram.astype(dtype).astype(np.float32)
        )
        np.testing.assert_array_equal(parsed["face_feature"][i].numpy(), example.face_feature)
        np.testing.assert_array_equal(parsed["landmarks"][i].numpy(), example.landmarks)
        assert parsed["clip_id"][i].numpy().decode() == example.clip_id
        assert parsed["num_samples"][i].numpy() == len(example.waveform)
        wav = np.frombuffer(parsed["waveform_bytes"][i].numpy(), "<i2")
        np.testing.assert_array_equal(wav, example.waveform)
        image = tf.io.decode_jpeg(parsed["face_jpeg"][i]).numpy()
        assert image.shape == (records.FACE_SIZE, records.FACE_SIZE, 3)
    single = records.parse_single(batch[0], spec)
    np.testing.assert_array_equal(
        single["face_feature"].numpy(), fake_records.make_example(0).face_feature
    )


def test_optional_fields_absent():
    example = fake_records.make_example(1, with_extras=False)
    back = records.decode_example(records.encode_example(example))
    assert back.landmarks is None and back.waveform is None and back.face_jpeg == b""


def test_float_waveform_is_stored_as_int16():
    example = fake_records.make_example(1, with_extras=False)
    example.waveform = np.array([0.0, 0.5, -1.0, 2.0], np.float32)
    back = records.decode_example(records.encode_example(example))
    np.testing.assert_array_equal(back.waveform, [0, 16384, -32767, 32767])


def test_bad_shapes_are_rejected():
    example = fake_records.make_example(1)
    example.face_feature = np.zeros(10, np.float32)
    with pytest.raises(records.RecordError, match="face feature shape"):
        records.encode_example(example)
    example = fake_records.make_example(1)
    example.spectrogram = np.zeros((5, 256, 2), np.float32)
    with pytest.raises(records.RecordError, match="spectrogram shape"):
        records.encode_example(example)
    with pytest.raises(records.RecordError, match="layout 'float16' is not one of"):
        records.encode_example(fake_records.make_example(1), "float16")


def test_writer_shards_and_renames(tmp_path):
    prefix = str(tmp_path / "train")
    size = len(records.encode_example(fake_records.make_example(0)))
    with records.ShardedWriter(prefix, max_shard_bytes=int(2.5 * size)) as writer:
        for i in range(5):
            writer.write(fake_records.make_example(i))
    assert [os.path.basename(p) for p in writer.paths] == [
        "train-00000-of-00003.tfrecord",
        "train-00001-of-00003.tfrecord",
        "train-00002-of-00003.tfrecord",
    ]
    assert os.path.basename(writer.paths[1]) == records.shard_name("train", 1, 3)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in writer.paths)
    assert writer.num_examples == 5
    counts = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in writer.paths]
    assert counts == [2, 2, 1]


def test_writer_leaves_no_complete_looking_shard_on_crash(tmp_path):
    with pytest.raises(RuntimeError):
        with records.ShardedWriter(str(tmp_path / "train")) as writer:
            writer.write(fake_records.make_example(0))
            raise RuntimeError("crash")
    assert not tf.io.gfile.glob(str(tmp_path / "*.tfrecord"))


def test_writer_refuses_mixed_lengths(tmp_path):
    with records.ShardedWriter(str(tmp_path / "train")) as writer:
        writer.write(fake_records.make_example(0, num_frames=7))
        with pytest.raises(records.RecordError, match="frames"):
            writer.write(fake_records.make_example(1, num_frames=8))


def test_read_spec_errors(tmp_path):
    not_records = tmp_path / "junk.tfrecord"
    not_records.write_bytes(b"this is not a tfrecord file at all")
    with pytest.raises(records.RecordError, match="junk.tfrecord"):
        records.read_spec(str(not_records))
    empty = tmp_path / "empty.tfrecord"
    tf.io.TFRecordWriter(str(empty)).close()
    with pytest.raises(records.RecordError, match="no records"):
        records.read_spec(str(empty))
