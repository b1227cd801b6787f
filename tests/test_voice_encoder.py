"""Tests of the voice encoder: paper Table 1 shapes and size, the time mean, presets, FLOPs."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from speech2face.models import voice_encoder as ve

# Small enough to count FLOPs by hand and to run in milliseconds: 5 frequency bins, 2×2 kernels.
TINY = ve.EncoderConfig(conv_channels=(2,) * 9, hidden_units=3, output_dim=4, freq_bins=5,
                        kernel_size=2)

# Paper Table 1 with 'same' convs and 'valid' 2×1 pools on a 6 s input: (layer, [T, F, C]).
PAPER_SHAPES = [
    ("input", (598, 257, 2)),
    ("conv1", (598, 257, 64)),
    ("conv2", (598, 257, 64)),
    ("conv3", (598, 257, 128)),
    ("pool1", (299, 257, 128)),
    ("conv4", (299, 257, 128)),
    ("pool2", (149, 257, 128)),
    ("conv5", (149, 257, 128)),
    ("pool3", (74, 257, 128)),
    ("conv6", (74, 257, 256)),
    ("pool4", (37, 257, 256)),
    ("conv7", (37, 257, 512)),
    ("conv8", (19, 129, 512)),   # stride 2×2
    ("conv9", (10, 65, 512)),    # stride 2×2
    ("time_mean", (65, 512)),
    ("flatten", (33280,)),
    ("fc1", (4096,)),
    ("fc2", (4096,)),
]


def spectrogram_batch(batch, frames, freq_bins=257, seed=0, dtype=np.float32):
    """Random stand-in spectrograms: [batch, frames, freq_bins, 2]."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, frames, freq_bins, 2)).astype(dtype)


def symbolic_shapes(model, names, frames, freq_bins):
    """Output shapes (no batch axis) of the named layers for a [1, frames, freq_bins, 2] input,
    by shape inference only (nothing is computed)."""
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    specs = probe.compute_output_spec(keras.KerasTensor((1, frames, freq_bins, 2)))
    return [tuple(s.shape[1:]) for s in specs]


def test_paper_preset_layer_shapes_and_parameter_count():
    config = ve.encoder_config("paper")
    assert config.conv_channels == (64, 64, 128, 128, 128, 256, 512, 512, 512)
    assert (config.hidden_units, config.output_dim, config.kernel_size) == (4096, 4096, 4)
    assert ve.layer_shapes(config, 598) == PAPER_SHAPES

    model = ve.build_voice_encoder(config)
    names = [name for name, _ in PAPER_SHAPES[1:]]
    assert symbolic_shapes(model, names, 598, 257) == [s for _, s in PAPER_SHAPES[1:]]
    # The time axis is free in the model itself.
    assert tuple(model.input.shape) == (None, None, 257, 2)
    assert tuple(model.output.shape) == (None, 4096)

    # convs: Σ (16 · C_in + 1) · C_out; BN: 4 · C (γ, β, moving mean and variance) for conv1–8
    # and after the time mean (512); FCs: (33,280 + 1) · 4096 + (4096 + 1) · 4096.
    conv = sum((16 * c_in + 1) * c_out for c_in, c_out in
               zip((2,) + config.conv_channels[:-1], config.conv_channels))
    bn = 4 * (sum(config.conv_channels[:8]) + 512)
    fc = 33281 * 4096 + 4097 * 4096
    assert conv + bn + fc == 164_844_800
    assert model.count_params() == 164_844_800
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 164_844_800 - 4_608
    first_fc = int(np.prod(model.get_layer("fc1").kernel.shape))
    assert first_fc == 65 * 512 * 4096 and first_fc / model.count_params() > 0.8


def test_paper_flops():
    config = ve.encoder_config("paper")
    assert ve.flops_per_example(config) == 207_570_427_904  # about 0.21 TFLOP
    # 3 s: the conv cost halves (time axis about half as long), the FCs stay.
    assert ve.flops_per_example(config, 298) == 102_621_421_568


def test_flops_match_hand_count_for_tiny_config():
    # 2 · T_out · F_out · k² · C_in · C_out per conv (k² = 4, C = 2 everywhere), 2 · n_in · n_out
    # per FC, for 32 frames × 5 bins.
    convs = [2 * 32 * 5 * 4 * 2 * 2] * 3   # conv1-3, then pool to 16 frames
    convs += [2 * 16 * 5 * 16]             # conv4, pool to 8
    convs += [2 * 8 * 5 * 16]              # conv5, pool to 4
    convs += [2 * 4 * 5 * 16]              # conv6, pool to 2
    convs += [2 * 2 * 5 * 16]              # conv7
    convs += [2 * 1 * 3 * 16]              # conv8, stride 2: 2 × 5 → 1 × 3
    convs += [2 * 1 * 2 * 16]              # conv9, stride 2: 1 × 3 → 1 × 2
    fcs = 2 * (2 * 2) * 3 + 2 * 3 * 4      # flatten (2 bins × 2 channels) → 3 → 4
    assert sum(convs) + fcs == 20_368
    assert ve.flops_per_example(TINY, num_frames=32) == 20_368
    with pytest.raises(ValueError, match="num_frames"):
        ve.flops_per_example(TINY, num_frames=ve.MIN_FRAMES - 1)


@pytest.mark.parametrize("frames", [16, 32, 61])
def test_tiny_model_shapes_follow_layer_shapes(frames):
    model = ve.build_voice_encoder(TINY)
    expected = ve.layer_shapes(TINY, frames)[1:]
    assert symbolic_shapes(model, [n for n, _ in expected], frames, 5) == [s for _, s in expected]


@pytest.mark.parametrize("frames", [598, 298])
def test_small_preset_gives_4096_features(frames):
    config = ve.encoder_config("small")
    assert config.output_dim == 4096 and config.hidden_units < 4096
    model = ve.build_voice_encoder(config)
    # float16, as the input pipeline hands it over.
    v_s = model(spectrogram_batch(2, frames, dtype=np.float16), training=False)
    assert v_s.shape == (2, 4096) and v_s.dtype == tf.float32
    assert np.all(np.isfinite(v_s.numpy()))
    assert not np.allclose(v_s[0], v_s[1])


def test_time_mean_is_a_true_mean_over_any_length():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 3, 4)).astype(np.float32)
    layer = ve.TimeMean()
    np.testing.assert_allclose(layer(x), x.mean(axis=1), rtol=1e-6, atol=1e-6)
    # The same frames tiled twice (14 frames) have the same mean; a length-sensitive pooling
    # (a sum, or a fixed window) would not.
    np.testing.assert_allclose(layer(np.tile(x, (1, 2, 1, 1))), x.mean(axis=1), rtol=1e-6,
                               atol=1e-6)
    # One frame is its own mean.
    np.testing.assert_allclose(layer(x[:, :1]), x[:, 0], rtol=1e-6)


def test_time_mean_in_the_model_serves_any_length():
    model = ve.build_voice_encoder(TINY)
    assert isinstance(model.get_layer("time_mean"), ve.TimeMean)
    for frames in (16, 64, 100):
        assert model(spectrogram_batch(1, frames, freq_bins=5)).shape == (1, 4)


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = ve.build_voice_encoder(TINY)
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("time_mean").compute_dtype == "bfloat16"
    v_s = model(spectrogram_batch(2, 32, freq_bins=5), training=True)
    assert v_s.dtype == tf.float32 and np.all(np.isfinite(v_s.numpy()))


def test_small_preset_keras_round_trip(tmp_path):
    model = ve.build_voice_encoder(ve.encoder_config("small"))
    x = spectrogram_batch(1, 64, seed=3)
    path = str(tmp_path / "voice_encoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("time_mean"), ve.TimeMean)
    assert loaded.count_params() == model.count_params()
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=1e-5,
                               atol=1e-6)


def test_presets_and_config_errors():
    assert ve.encoder_config("small").conv_channels == tuple(
        c // 8 for c in ve.encoder_config("paper").conv_channels)
    with pytest.raises(ValueError, match="unknown voice encoder preset 'huge'"):
        ve.encoder_config("huge")
    with pytest.raises(ValueError, match="9 values"):
        ve.EncoderConfig(conv_channels=(8, 8))
    with pytest.raises(ValueError, match=">= 1"):
        ve.EncoderConfig(hidden_units=0)
    # Lists (as JSON gives them back) become tuples, so configs compare and hash.
    assert ve.EncoderConfig(conv_channels=list(TINY.conv_channels), hidden_units=3, output_dim=4,
                            freq_bins=5, kernel_size=2) == TINY


@pytest.mark.parametrize("frames", [64, 98, 598])
def test_strided_conv1_shapes_follow_layer_shapes(frames):
    # conv1 striding (4, 2) (the toy preset strides time only): every later layer sees a quarter
    # of the frames and half of the frequencies, and the shortest input grows by the time stride.
    config = dataclasses.replace(TINY, conv1_stride=(4, 2))
    model = ve.build_voice_encoder(config)
    expected = ve.layer_shapes(config, frames)[1:]
    assert dict(expected)["conv1"][:2] == (-(-frames // 4), 3)
    assert symbolic_shapes(model, [n for n, _ in expected], frames, 5) == [s for _, s in expected]
    assert ve.min_frames(config) == 4 * ve.MIN_FRAMES
    assert ve.model_min_frames(model) == ve.min_frames(config)
    assert ve.model_min_frames(ve.build_voice_encoder(TINY)) == ve.MIN_FRAMES
    with pytest.raises(ValueError, match="num_frames"):
        ve.flops_per_example(config, num_frames=ve.min_frames(config) - 1)


def test_toy_preset_is_small_with_conv1_striding_time_on_the_low_band():
    small, toy = ve.encoder_config("small"), ve.encoder_config("toy")
    assert toy == dataclasses.replace(small, conv1_stride=(4, 1), band_bins=128)
    assert ve.flops_per_example(toy) < ve.flops_per_example(small) / 7
    # Frequency keeps its resolution over the band: half of `small`'s first FC input.
    assert dict(ve.layer_shapes(toy))["flatten"] == (32 * 64,)
    with pytest.raises(ValueError, match="conv1_stride"):
        ve.EncoderConfig(conv1_stride=(0, 1))


@pytest.mark.parametrize("band", [4, 9, 16])
def test_band_bins_crops_the_lowest_bins_and_nothing_else(band):
    # TINY's 2 channels are mostly dead after their ReLUs; 4 channels over 16 bins are not.
    config = dataclasses.replace(TINY, conv_channels=(4,) * 9, hidden_units=8, freq_bins=16,
                                 band_bins=band)
    model = ve.build_voice_encoder(config)
    expected = ve.layer_shapes(config, 64)
    assert expected[1] == ("band", (64, band, 2))
    assert symbolic_shapes(model, [n for n, _ in expected[1:]], 64, 16) == [
        s for _, s in expected[1:]]
    # The bins above the band do not reach the output; those in it do (batch statistics on, so
    # no dead unit hides a change).
    x = spectrogram_batch(4, 64, freq_bins=16)
    above, inside = x.copy(), x.copy()
    above[:, :, band:] = 123.0
    inside[:, :, :band] = spectrogram_batch(4, 64, freq_bins=band, seed=1)
    np.testing.assert_allclose(model(above, training=True), model(x, training=True))
    assert np.abs(model(inside, training=True) - model(x, training=True)).max() > 1e-4
    for bad in (0, 17):
        with pytest.raises(ValueError, match="band_bins"):
            dataclasses.replace(config, band_bins=bad)


def _bn_step(layer, x, training):
    """One call of `layer` under a tape: output, gradients w.r.t. input, gamma and beta (through
    a fixed random projection of the output), and the moving statistics after the call."""
    x = tf.constant(x)
    weights = tf.constant(np.random.default_rng(1).standard_normal(x.shape), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [t.numpy() for t in [y, *grads, layer.moving_mean, layer.moving_variance]]


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_equals_keras_batch_normalization(training):
    # Channels with different means and spreads, so that a wrong variance would show.
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 7, 5, 4)) * [0.5, 1.0, 2.0, 4.0] + [0.0, 1.0, -2.0, 3.0])
    x = np.maximum(x, 0.0).astype(np.float32)  # what follows a ReLU, as in the encoder
    results = []
    for kind in (ve.BatchNorm, keras.layers.BatchNormalization):
        layer = kind(momentum=0.9, epsilon=1e-3, synchronized=True)
        layer.build(x.shape)
        layer.gamma.assign([1.0, 0.5, 2.0, 1.5])
        layer.beta.assign([0.0, 0.1, -0.2, 0.3])
        layer.moving_variance.assign([2.0, 1.0, 0.5, 3.0])
        results.append(_bn_step(layer, x, training))
    for name, ours, theirs in zip(("output", "d/dx", "d/dgamma", "d/dbeta", "moving mean",
                                   "moving variance"), *results):
        np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5, err_msg=name)
    if training:  # the moving statistics moved (a call that skipped the update would pass above)
        assert not np.allclose(results[0][5], [2.0, 1.0, 0.5, 3.0])
    # ... and the fused op is what ran in training (inference keeps Keras's own ops).
    layer = ve.BatchNorm()
    graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, tf.float32)).graph
    assert any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations()) == training


def test_batch_norm_under_two_replicas_uses_the_global_batch(mirrored):
    # Two replicas: the fused op would see half the batch, so the synchronised path runs, and
    # both replicas' outputs equal one device's on the whole batch.
    x = np.random.default_rng(2).standard_normal((4, 6, 3, 2)).astype(np.float32) * 3.0 + 1.0
    with mirrored.scope():
        layer = ve.BatchNorm(synchronized=True)
        layer.build(x.shape)
    dataset = mirrored.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(x).unbatch().batch(4))
    per_replica = mirrored.run(tf.function(lambda b: layer(b, training=True)),
                               args=(next(iter(dataset)),))
    split = np.concatenate([t.numpy() for t in mirrored.experimental_local_results(per_replica)])
    whole = keras.layers.BatchNormalization(synchronized=True)(x, training=True).numpy()
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)


def test_encoder_convs_use_the_fused_batch_norm(tmp_path):
    model = ve.build_voice_encoder(TINY)
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 9 and all(isinstance(n, ve.BatchNorm) for n in norms)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    assert isinstance(keras.models.load_model(path).get_layer("bn1"), ve.BatchNorm)
