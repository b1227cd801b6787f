"""Waveform-only records (the waveform_int16 layout, docs/data.md "Record layouts"): written,
read by every stage, and evaluated to the same encodings as spectrogram records."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from speech2face import audio, data, records
from speech2face.datasets.real import config as real_config, shards
from speech2face.datasets.toy import world as toy_world
from speech2face.evaluation import encode
from speech2face.models import export
from speech2face.records import dataset_info
from speech2face.training import decoder_task, encoder_task
from tests.support import fake_records, tiny, weights

WAVEFORM = records.WAVEFORM_LAYOUT


def _waveform_files(tmp_path, num_files=2, per_file=3):
    return fake_records.write_record_files(str(tmp_path), num_files, per_file, layout=WAVEFORM)


def test_schema_segment_is_that_of_audio():
    assert records.SEGMENT_SAMPLES == audio.SEGMENT_SAMPLES
    assert records.SEGMENT_FRAMES == audio.num_frames(audio.SEGMENT_SAMPLES)
    assert records.spectrogram_dtype_of("spectrogram_float32") == "float32"
    assert records.spectrogram_dtype_of(WAVEFORM) is None


def test_round_trip_without_a_spectrogram_feature(tmp_path):
    example = fake_records.make_example(2, layout=WAVEFORM)
    serialized = records.encode_example(example, WAVEFORM)
    keys = set(tf.train.Example.FromString(serialized).features.feature)
    assert not keys & {records.Keys.SPECTROGRAM, records.Keys.SPECTROGRAM_DTYPE,
                       records.Keys.NUM_FRAMES}
    back = records.decode_example(serialized)
    assert back.spectrogram is None
    np.testing.assert_array_equal(back.waveform, example.waveform)
    np.testing.assert_array_equal(back.face_feature, example.face_feature)
    # A waveform-only record is a third the size of the same clip with a float16 spectrogram.
    with_spectrogram = dataclasses.replace(example, spectrogram=np.zeros(
        (records.SEGMENT_FRAMES, records.NUM_FREQ_BINS, 2), np.float32))
    ratio = len(records.encode_example(with_spectrogram)) / len(serialized)
    assert 3.5 < ratio < 4.5  # 0.61 MB of spectrogram beside ~0.2 MB of waveform and v_f
    pattern, _ = _waveform_files(tmp_path, 1, 2)
    spec = records.read_spec(tf.io.gfile.glob(pattern)[0])
    assert spec == records.RecordSpec(num_frames=598, layout=WAVEFORM)
    assert spec.spectrogram_dtype is None and not spec.stores_spectrogram


def test_version_1_records_still_read(tmp_path):
    """Records written before the layout key (schema version 1) read as spectrogram_<dtype>."""
    example = fake_records.make_example(1)
    proto = tf.train.Example.FromString(records.encode_example(example, "spectrogram_float32"))
    del proto.features.feature[records.Keys.LAYOUT]
    proto.features.feature[records.Keys.SCHEMA_VERSION].int64_list.value[0] = 1
    path = str(tmp_path / "old.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(proto.SerializeToString())
    assert records.read_spec(path) == records.RecordSpec(7, "spectrogram_float32")
    np.testing.assert_array_equal(records.decode_example(proto.SerializeToString()).spectrogram,
                                  example.spectrogram)
    batch = next(iter(data.input_fn(path, None, 1, training=False)))
    np.testing.assert_array_equal(batch["spectrogram"][0], example.spectrogram)


def test_parsed_segment_and_its_spectrogram(tmp_path):
    pattern, clip_ids = _waveform_files(tmp_path)
    batch = next(iter(data.input_fn(pattern, None, 6, training=False,
                                    options=data.InputOptions(with_waveform=True))))
    assert "spectrogram" not in batch
    segment = batch[data.WAVEFORM_KEY]
    assert segment.dtype == tf.int16 and segment.shape == (6, records.SEGMENT_SAMPLES)
    for i, clip in enumerate(batch["clip_id"].numpy()):
        example = fake_records.make_example(clip_ids.index(clip.decode()), layout=WAVEFORM)
        np.testing.assert_array_equal(segment[i], example.waveform[:records.SEGMENT_SAMPLES])
        assert batch["num_samples"][i] == len(example.waveform)
    expected = audio.spectrogram(tf.cast(segment, tf.float32) / 32768.0)
    np.testing.assert_array_equal(data.spectrogram_of(batch), expected)
    assert expected.shape == (6, records.SEGMENT_FRAMES, records.NUM_FREQ_BINS, 2)


def test_stage_1_and_stage_2_input_pipelines(tmp_path):
    pattern, _ = _waveform_files(tmp_path)
    stage1 = decoder_task.DecoderTask(decoder_task.DecoderTaskConfig(
        preset="small", perceptual_weight=0.0, canonical_faces=False)).input_options(training=True)
    batch = next(iter(data.input_fn(pattern, None, 4, training=True, options=stage1)))
    assert batch["face_image"].shape[0] == 4 and data.WAVEFORM_KEY not in batch
    task = encoder_task.EncoderTask(encoder_task.EncoderTaskConfig(
        preset="small", decoder_dir="unused", vggface_weights="unused"))
    crops = next(iter(data.input_fn(pattern, None, 4, training=True,
                                    options=task.input_options(training=True))))
    assert crops[data.WAVEFORM_KEY].shape == (4, audio.SEGMENT_SAMPLES)
    for options in (task.input_options(training=False), task.summary_input_options()):
        batch = next(iter(data.input_fn(pattern, None, 4, training=False, options=options)))
        assert encoder_task.spectrogram_of(batch).shape == (4, 598, records.NUM_FREQ_BINS, 2)


def test_spectrogram_in_the_replica_step_under_mirrored_strategy(tmp_path, mirrored):
    pattern, _ = _waveform_files(tmp_path, 2, 2)
    dataset = mirrored.distribute_datasets_from_function(
        lambda ctx: data.input_fn(pattern, ctx, 4, training=False))
    batch = next(iter(dataset))
    per_replica = mirrored.run(tf.function(data.spectrogram_of), args=(batch,))
    spectrograms = mirrored.experimental_local_results(per_replica)
    segments = mirrored.experimental_local_results(batch[data.WAVEFORM_KEY])
    assert len(spectrograms) == 2
    for spectrogram, segment in zip(spectrograms, segments):
        expected = audio.spectrogram(tf.cast(segment, tf.float32) / 32768.0)
        np.testing.assert_allclose(spectrogram, expected, atol=1e-6)


def test_short_waveforms_are_clear_errors(tmp_path):
    short = fake_records.make_example(0, layout=WAVEFORM)
    short.waveform = short.waveform[:1000]
    with pytest.raises(records.RecordError, match="clip00000: 1000 waveform samples.*96000"):
        records.encode_example(short, WAVEFORM)
    with pytest.raises(records.RecordError, match="store no spectrogram"):
        records.encode_example(fake_records.make_example(0), WAVEFORM)
    # Records written by something else: the reader names the file and the clip.
    serialized = records.encode_example(fake_records.make_example(0, layout=WAVEFORM), WAVEFORM)
    proto = tf.train.Example.FromString(serialized)
    f = proto.features.feature
    f[records.Keys.WAVEFORM].bytes_list.value[0] = f[records.Keys.WAVEFORM].bytes_list.value[0][:2000]
    f[records.Keys.NUM_SAMPLES].int64_list.value[0] = 1000
    path = str(tmp_path / "short.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(proto.SerializeToString())
    with pytest.raises(records.RecordError, match=r"short\.tfrecord: clip clip00000: 1000"):
        records.read_spec(path)
    with tf.io.TFRecordWriter(path) as writer:  # a good first record, then the short one
        writer.write(serialized)
        writer.write(proto.SerializeToString())
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)short\.tfrecord: waveform_int16 records need at least 96000.*"
                             r"clip00000.*1000"):
        list(data.input_fn(path, None, 2, training=False))


def test_real_builder_layout_option_and_shards(tmp_path):
    (tmp_path / "m.csv").write_text("abc,0,6,0.5,0.5\n")
    base = dict(manifest=str(tmp_path / "m.csv"), manifest_format="avspeech",
                media_dir=str(tmp_path), output_dir=str(tmp_path / "out"), vggface_weights=None)
    real_config.BuildConfig(**base, records_layout=WAVEFORM).validate()
    with pytest.raises(ValueError, match="records_layout must be one of"):
        real_config.BuildConfig(**base, records_layout="float16").validate()
    with pytest.raises(ValueError, match="waveform_int16 stores only the waveform.*"
                                         "--store_waveform"):
        real_config.BuildConfig(**base, records_layout=WAVEFORM, store_waveform=False).validate()
    writer = shards.WriteShards(str(tmp_path), 10**9, WAVEFORM)
    writer.start_bundle()
    writer.process(("train", fake_records.make_example(0, layout=WAVEFORM)))
    (summary,) = [v.value for v in writer.finish_bundle()]
    path = os.path.join(str(tmp_path), shards.INCOMPLETE_DIR, summary["file"])
    assert records.read_spec(path).layout == WAVEFORM


@pytest.fixture(scope="module")
def waveform_world(tiny_world, tmp_path_factory, weights_cache):
    """The tiny world again, in the waveform_int16 layout (same seed: the same clips)."""
    directory = str(tmp_path_factory.mktemp("toy_waveform"))
    config = dataclasses.replace(tiny.WORLD, records_layout=WAVEFORM)
    with weights.shared_random_weights(weights_cache):
        return directory, toy_world.build_toy_world(config, directory)


def test_waveform_toy_world_round_trips(tiny_world, waveform_world):
    (world, info), (wave_dir, wave_info) = tiny_world, waveform_world
    assert wave_info.layout == WAVEFORM and not wave_info.spectrogram["stored"]
    assert dataset_info.read(wave_dir) == wave_info and info.layout == records.DEFAULT_LAYOUT
    assert wave_info.counts == info.counts
    assert 3 < sum(info.bytes.values()) / sum(wave_info.bytes.values())
    assert "waveform_int16" in toy_world.format_summary(wave_info)
    ours = [records.decode_example(r.numpy()) for r in tf.data.TFRecordDataset(
        data.list_files(os.path.join(wave_dir, "test-*.tfrecord")))]
    theirs = [records.decode_example(r.numpy()) for r in tf.data.TFRecordDataset(
        data.list_files(os.path.join(world, "test-*.tfrecord")))]
    for a, b in zip(ours, theirs, strict=True):
        assert a.spectrogram is None and a.clip_id == b.clip_id
        np.testing.assert_array_equal(a.waveform, b.waveform)
        np.testing.assert_array_equal(a.face_feature, b.face_feature)
        first = a.waveform[:audio.SEGMENT_SAMPLES]
        computed = data.spectrogram_of({data.WAVEFORM_KEY: tf.constant(first[None])})[0].numpy()
        expected = audio.spectrogram(tf.constant(first / 32768.0, tf.float32)).numpy()
        np.testing.assert_allclose(computed, expected, atol=1e-5)
        # Against the float16 spectrogram of the float clip: the power law (|x|^0.3) lifts the
        # int16 rounding in the near-silent bins, so compare energies, not every bin.
        stored = b.spectrogram.astype(np.float32)
        assert np.linalg.norm(computed - stored) / np.linalg.norm(stored) < 0.01


@pytest.mark.slow
def test_evaluation_encodings_equal_those_of_spectrogram_records(tiny_world, waveform_world,
                                                                 tiny_models):
    """v_s at 6 s and 3 s from waveform-only records (spectrogram computed in the tf.function)
    = v_s from the stored float16 spectrograms, to float16 precision."""
    encoder, info = export.load_encoder(tiny_models.encoder_dir)
    decoder = export.load_decoder(info["decoder_dir"])
    out = {}
    for directory in (tiny_world[0], waveform_world[0]):
        files = data.list_files(os.path.join(directory, "*.tfrecord"))
        out[directory] = encode.encode(encoder, decoder, files, (6, 3), batch_size=4)
    stored, computed = out[tiny_world[0]], out[waveform_world[0]]
    assert computed.frames == stored.frames == {"6": 598, "3": 298}
    assert computed.clip_ids == stored.clip_ids
    np.testing.assert_array_equal(computed.v_f, stored.v_f)
    for key in ("6", "3"):
        a, b = computed.v_s[key], stored.v_s[key]
        cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.999, key
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.02 * np.abs(b).max())
