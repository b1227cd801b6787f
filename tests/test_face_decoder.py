"""Tests of the face decoder: the TPS warp against a NumPy twin, the model, its losses."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from speech2face.models import face_decoder as fd
from speech2face.models import landmarks as lm
from speech2face.models import warp

# A decoder small enough for finite differences and quick save/load (16×16 output).
TINY = fd.DecoderConfig(landmark_hidden=(8,), image_size=16, texture_base_size=4,
                        texture_base_channels=4, texture_channels=(4, 4), kernel_size=3)


def smooth_image(batch, height, width, seed=0):
    """Smooth random RGB images in [0, 1]: float32 [batch, height, width, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    images = np.zeros((batch, height, width, 3))
    for _ in range(4):
        fx, fy, phase = rng.uniform(0.5, 3.0, (3, batch, 1, 1, 3))
        images += np.sin(2 * np.pi * (fx * x[None, ..., None] + fy * y[None, ..., None]) + phase)
    return (0.5 + 0.12 * images).clip(0, 1).astype(np.float32)


def np_tps_warp(image, control_from, control_to):
    """NumPy float64 twin of `warp_image` (regulariser 0): image [H, W, C], points [K, 2]."""
    h, w, _ = image.shape
    k = len(control_to)

    def kernel(r2):
        return 0.5 * r2 * np.log(np.maximum(r2, 1e-300))

    system = np.zeros((k + 3, k + 3))
    system[:k, :k] = kernel(((control_to[:, None] - control_to[None]) ** 2).sum(-1))
    system[:k, k:] = np.c_[np.ones(k), control_to]
    system[k:, :k] = system[:k, k:].T
    coeffs = np.linalg.solve(system, np.r_[control_from, np.zeros((3, 2))])
    gy, gx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    u = kernel(((grid[:, None] - control_to[None]) ** 2).sum(-1))
    src = u @ coeffs[:k] + np.c_[np.ones(len(grid)), grid] @ coeffs[k:]
    return np_bilinear(image, src[:, 0] * w - 0.5, src[:, 1] * h - 0.5).reshape(image.shape)


def np_bilinear(image, x, y):
    """Bilinear sampling at pixel positions x, y [N] with border replication: [N, C]."""
    h, w, _ = image.shape
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(int), y0.astype(int)
    xa, xb = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    ya, yb = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    top = image[ya, xa] * (1 - fx) + image[ya, xb] * fx
    return top * (1 - fy) + (image[yb, xa] * (1 - fx) + image[yb, xb] * fx) * fy


def random_points(k, seed, low=0.15, high=0.85):
    return np.random.default_rng(seed).uniform(low, high, (k, 2)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# The warp.


def test_identity_warp_returns_input():
    image = smooth_image(2, 20, 24)  # non-square, to catch x/y mix-ups
    points = random_points(10, seed=1)
    out = warp.warp_image(image, points, points)
    assert out.shape == image.shape and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), image, atol=1e-4)


def test_translation_moves_a_dot():
    image = np.zeros((1, 32, 40, 1), np.float32)
    image[0, 10, 12, 0] = 1.0  # row 10, column 12
    points = random_points(8, seed=2)
    out = warp.warp_image(image, points, points + np.float32([0.1, 0.0]),
                          pin_border=False)[0, ..., 0].numpy()
    # Content at control_from appears at control_to: 0.1 of 40 columns = 4 px to the right.
    row, col = np.unravel_index(np.argmax(out), out.shape)
    assert (row, col) == (10, 16)
    rows, cols = np.indices(out.shape)
    assert abs((out * cols).sum() / out.sum() - 16.0) < 0.05
    assert abs((out * rows).sum() / out.sum() - 10.0) < 0.05


def test_affine_control_points_give_the_affine_map():
    rng = np.random.default_rng(3)
    image = smooth_image(2, 24, 24, seed=3)
    control_to = np.stack([random_points(12, seed=4), random_points(12, seed=5)])
    matrices = np.eye(2) + rng.uniform(-0.15, 0.15, (2, 2, 2))
    shifts = rng.uniform(-0.05, 0.05, (2, 1, 2))
    control_from = np.einsum("bij,bkj->bki", matrices, control_to) + shifts
    out = warp.warp_image(image, control_from.astype(np.float32), control_to,
                          pin_border=False).numpy()
    gy, gx = np.meshgrid((np.arange(24) + 0.5) / 24, (np.arange(24) + 0.5) / 24, indexing="ij")
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    for b in range(2):
        src = grid @ matrices[b].T + shifts[b]
        expected = np_bilinear(image[b], src[:, 0] * 24 - 0.5, src[:, 1] * 24 - 0.5)
        np.testing.assert_allclose(out[b], expected.reshape(24, 24, 3), atol=1e-4)


@pytest.mark.parametrize("pin_border", [False, True])
def test_warp_matches_numpy_twin(pin_border):
    image = smooth_image(1, 24, 28, seed=6)
    control_to = lm.template_landmarks()
    control_from = control_to + np.random.default_rng(7).normal(0, 0.01, (68, 2)).astype(np.float32)
    out = warp.warp_image(image, control_from, control_to, regularization=0.0,
                          pin_border=pin_border).numpy()[0]
    control_from, control_to = control_from.astype(np.float64), control_to.astype(np.float64)
    if pin_border:  # the twin gets the pins as control points that do not move
        pins = np_border_ring(24, 28, warp.BORDER_POINTS_PER_SIDE)
        control_from, control_to = np.r_[control_from, pins], np.r_[control_to, pins]
    np.testing.assert_allclose(out, np_tps_warp(image[0].astype(np.float64), control_from,
                                                control_to), atol=1e-3)


def np_border_ring(h, w, per_side):
    """Evenly spaced points along the ring of border pixel centres, corners once: [4(n-1), 2]."""
    xs = (0.5 + np.linspace(0, 1, per_side) * (w - 1)) / w
    ys = (0.5 + np.linspace(0, 1, per_side) * (h - 1)) / h
    ring = {(x, y) for x in xs for y in (ys[0], ys[-1])} | {(x, y) for y in ys
                                                            for x in (xs[0], xs[-1])}
    return np.array(sorted(ring))


def test_border_points_lie_on_the_ring_of_border_pixels():
    points = warp.border_points(20, 30, per_side=6).numpy()
    assert points.shape == (20, 2)
    np.testing.assert_allclose(np.array(sorted(map(tuple, points))), np_border_ring(20, 30, 6),
                               atol=1e-7)


def test_border_stays_put_while_the_face_moves():
    """Cole et al.: zero displacement at the image boundary. Shift all 68 landmarks by a tenth
    of the image: the face moves 6.4 px, the outer ring of pixels stays where it was."""
    size = 64
    image = smooth_image(1, size, size, seed=9)
    image[0, 30:34, 30:34] = 1.0  # a bright square at the centre of the face
    mean = lm.template_landmarks()
    out = warp.warp_image(image, mean, mean + np.float32([0.1, 0.0])).numpy()[0]
    ring = lambda a: np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # noqa: E731
    np.testing.assert_allclose(ring(out), ring(image[0]), atol=2e-3)
    source = warp.source_coordinates(size, size, tf.constant(mean[None]),
                                     tf.constant(mean[None] + np.float32([0.1, 0.0])))
    moved = (np.arange(size) + 0.5) / size - source.numpy()[0, :, 0].reshape(size, size)
    assert abs(moved[32, 32] * size - 6.4) < 0.5  # the face: most of the 6.4 px
    assert np.abs(np.concatenate([moved[0], moved[-1], moved[:, 0], moved[:, -1]])).max() * size < 0.05
    unpinned = warp.warp_image(image, mean, mean + np.float32([0.1, 0.0]), pin_border=False)
    assert np.abs(ring(unpinned.numpy()[0]) - ring(image[0])).max() > 0.02  # the plain TPS drags it


def test_shared_control_to_equals_one_spline_per_example():
    """A `control_to` shared by the batch ([K, 2], the texture target's mean landmarks) is
    solved once for all examples; in float64 it gives what one spline per example gives,
    gradients included, and in float32 it stays as close to that as the per-example path."""

    def warp_and_grads(dtype, shared):
        image = tf.constant(smooth_image(3, 20, 20, seed=4), dtype)
        control_to = lm.template_landmarks().astype(np.float64)
        rng = np.random.default_rng(5)
        control_from = tf.constant(control_to + rng.normal(0, 0.02, (3, 68, 2)), dtype)
        to = tf.constant(control_to if shared else np.broadcast_to(control_to, (3, 68, 2)), dtype)
        with tf.GradientTape() as tape:
            tape.watch([image, control_from])
            out = warp.warp_image(image, control_from, to)
            loss = tf.reduce_sum(out * tf.cast(tf.range(1.0, 4.0)[:, None, None, None], dtype))
        return [out.numpy(), *[g.numpy() for g in tape.gradient(loss, [image, control_from])]]

    names = ("warp", "d/dimage", "d/dcontrol_from")
    reference = warp_and_grads(tf.float64, shared=False)
    for name, shared, per_example in zip(names, warp_and_grads(tf.float64, True), reference):
        np.testing.assert_allclose(shared, per_example, rtol=1e-9, atol=1e-9, err_msg=name)
    assert np.abs(reference[0][0] - reference[0][1]).max() > 1e-3  # the examples differ
    errors = [[np.abs(a - b).max() for a, b in zip(warp_and_grads(tf.float32, shared), reference)]
              for shared in (True, False)]
    assert errors[0][0] < 1e-4  # float32 pixel values
    for name, ours, theirs in zip(names, *errors):  # float32 rounding, no worse than before
        assert ours <= 1.5 * theirs + 1e-6, (name, ours, theirs)


def test_warp_under_xla_and_half_precision():
    image = smooth_image(2, 16, 16, seed=8)
    control_to = lm.template_landmarks()
    control_from = np.stack([control_to + 0.01, control_to * 0.95 + 0.02])
    eager = warp.warp_image(image, control_from, control_to)
    jitted = tf.function(warp.warp_image, jit_compile=True)(image, control_from, control_to)
    np.testing.assert_allclose(jitted.numpy(), eager.numpy(), atol=1e-5)
    half = warp.warp_image(tf.cast(image, tf.bfloat16), tf.cast(control_from, tf.bfloat16),
                         control_to)
    assert half.dtype == tf.float32  # computed in float32 whatever comes in


# ----------------------------------------------------------------------------------------------
# The model.


def test_presets():
    small, paper = fd.decoder_config("small"), fd.decoder_config("paper")
    assert (small.image_size, paper.image_size) == (64, 224)
    assert (paper.texture_base_size, paper.texture_base_channels) == (14, 256)
    assert small.fc_units == paper.fc_units == 1000
    with pytest.raises(ValueError, match="paper, small"):
        fd.decoder_config("huge")
    with pytest.raises(ValueError, match="image_size"):
        dataclasses.replace(small, image_size=128)


def test_paper_texture_head_is_cole_et_al():
    """Cole et al., Sec. 3: FC → 14×14×256, 5×5 stride-2 transposed convolutions separated by
    ReLUs with max(256/2^i, 32) channels up to 224×224×32, then a 1×1 convolution to RGB."""
    model = fd.FaceDecoder("paper")
    model(tf.zeros([1, 4096]))
    assert model.texture_fc.units == 14 * 14 * 256
    shapes = []
    for i, deconv in enumerate(model.texture_deconvs):
        assert isinstance(deconv, keras.layers.Conv2DTranspose)
        assert deconv.kernel_size == (5, 5) and deconv.strides == (2, 2)
        assert deconv.filters == max(256 // 2 ** (i + 1), 32)
        shapes.append(tuple(deconv.kernel.shape))
    assert [s[2] for s in shapes] == [128, 64, 32, 32]  # Conv2DTranspose kernel: [k, k, out, in]
    rgb = model.texture_rgb
    assert isinstance(rgb, keras.layers.Conv2D) and not isinstance(rgb, keras.layers.Conv2DTranspose)
    assert rgb.kernel_size == (1, 1) and rgb.filters == 3 and tuple(rgb.kernel.shape) == (1, 1, 32, 3)
    assert not any(isinstance(layer, keras.layers.BatchNormalization)
                   for layer in model._flatten_layers())  # pylint: disable=protected-access
    # The texture is 224×224 before the 1×1 convolution: the transposed convolutions do it all.
    hidden = keras.ops.relu(model.texture_fc(tf.zeros([1, 1000])))
    t = tf.reshape(hidden, [1, 14, 14, 256])
    for deconv in model.texture_deconvs:
        t = deconv(t)
    assert t.shape == (1, 224, 224, 32)
    with_bn = fd.FaceDecoder(dataclasses.replace(fd.decoder_config("small"),
                                                 texture_batch_norm=True))
    with_bn(tf.zeros([2, 4096]))
    assert len(with_bn.texture_norms) == 4 and not with_bn.texture_fc.use_bias


def test_exaggeration_pushes_away_from_the_mean_feature():
    model = fd.FaceDecoder(TINY)
    rng = np.random.default_rng(0)
    mean = rng.normal(size=4096).astype(np.float32)
    model.set_feature_normalization(1.0, mean=mean)
    v = tf.constant(rng.normal(size=(2, 4096)).astype(np.float32))
    np.testing.assert_allclose(model.exaggerate(v, 0.7).numpy(), mean + 1.7 * (v.numpy() - mean),
                               rtol=1e-5, atol=1e-5)
    assert model.exaggerate(v, 0.0) is v
    np.testing.assert_allclose(model.exaggerate(tf.constant(mean[None]), 1.4).numpy()[0], mean,
                               atol=1e-6)


def test_first_layer_is_dense_4096_to_1000():
    model = fd.FaceDecoder(TINY)
    model(np.zeros((1, 4096), np.float32))
    layer = model.first_layer
    assert isinstance(layer, keras.layers.Dense) and layer.name == "f_dec"
    assert tuple(layer.kernel.shape) == (4096, 1000)
    # Pre-activation (no ReLU inside): the S2F loss compares these values.
    assert layer.get_config()["activation"] == "linear"
    pre = layer(np.random.default_rng(0).normal(size=(2, 4096)).astype(np.float32))
    assert np.any(pre.numpy() < 0)


@pytest.mark.parametrize("preset,batch", [("small", 2), ("paper", 1)])
def test_output_shapes(preset, batch):
    model = fd.FaceDecoder(preset)
    size = model.config.image_size
    out = model(np.random.default_rng(0).uniform(0, 1, (batch, 4096)).astype(np.float32))
    assert set(out) == {"image", "texture", "landmarks"}
    assert out["image"].shape == (batch, size, size, 3)
    assert out["texture"].shape == (batch, size, size, 3)
    assert out["landmarks"].shape == (batch, 68, 2)
    for value in out.values():
        assert value.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(out["image"])) and float(tf.reduce_max(out["image"])) <= 1.0
    # Training starts from the mean face.
    np.testing.assert_allclose(out["landmarks"][0], model.mean_landmarks.numpy(), atol=0.02)


def test_mixed_precision_outputs_float32():
    model = fd.FaceDecoder(TINY, dtype="mixed_bfloat16")
    out = model(np.ones((2, 4096), np.float32), training=True)
    assert model.first_layer.compute_dtype == "bfloat16"
    assert all(v.dtype == tf.float32 for v in out.values())


def test_mean_landmarks_validation_and_pixel_conversion():
    model = fd.FaceDecoder(TINY)
    with pytest.raises(ValueError, match="pixel"):
        model.set_mean_landmarks(lm.template_landmarks() * 224)
    with pytest.raises(ValueError, match="shape"):
        model.set_mean_landmarks(np.zeros((5, 2)))
    pixels = np.array([[0.0, 0.0], [223.0, 111.5]])
    norm = lm.pixels_to_normalized(pixels, 224)
    np.testing.assert_allclose(norm, [[0.5 / 224, 0.5 / 224], [223.5 / 224, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(lm.normalized_to_pixels(norm, 224), pixels, atol=1e-4)


def test_f_dec_sees_centred_scaled_features():
    model = fd.FaceDecoder(TINY)
    rng = np.random.default_rng(2)
    features = rng.uniform(50, 60, (3, 4096)).astype(np.float32)
    model(features)
    mean = rng.uniform(50, 60, 4096).astype(np.float32)
    model.set_feature_normalization(0.25, mean)
    expected = model.first_layer((features - mean) * 0.25)
    np.testing.assert_allclose(model.f_dec(features).numpy(), expected.numpy(), rtol=1e-5,
                               atol=1e-5)
    model.set_feature_normalization(0.5)  # keeps the mean
    np.testing.assert_array_equal(model.feature_mean.numpy(), mean)
    with pytest.raises(ValueError, match="shape"):
        model.set_feature_normalization(1.0, np.zeros(10))
    with pytest.raises(ValueError, match="positive"):
        model.set_feature_normalization(0.0)


def test_save_load_round_trip(tmp_path):
    mean = lm.template_landmarks() * 0.9 + 0.05
    model = fd.FaceDecoder(TINY, mean_landmarks=mean)
    model.set_feature_normalization(0.3, np.linspace(0.0, 1.0, 4096))
    features = np.random.default_rng(1).uniform(0, 1, (2, 4096)).astype(np.float32)
    model(features, training=True)  # moves the BN statistics away from their initial values
    expected = model(features)
    path = str(tmp_path / "decoder.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, fd.FaceDecoder) and loaded.config == TINY
    np.testing.assert_array_equal(loaded.mean_landmarks.numpy(), mean)
    np.testing.assert_allclose(loaded.feature_mean.numpy(), np.linspace(0.0, 1.0, 4096),
                               rtol=1e-6)
    assert loaded.feature_scale.numpy() == pytest.approx(0.3)
    got = loaded(features)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6)


def test_gradients_reach_both_branches():
    # float64 end to end, so central differences are accurate; seeded weights, since the
    # bilinear sampling's gradient jumps where a sample crosses a pixel, and an unlucky draw
    # can put the probed point within eps of such a kink.
    keras.utils.set_random_seed(5)
    model = fd.FaceDecoder(TINY, dtype="float64")
    rng = np.random.default_rng(2)
    features = tf.constant(rng.uniform(0, 1, (2, 4096)))
    probe = tf.constant(rng.normal(size=(2, 16, 16, 3)))

    def scalar():
        return tf.reduce_sum(model(features)["image"] * probe)

    with tf.GradientTape() as tape:
        value = scalar()
    variables = model.trainable_variables
    grads = tape.gradient(value, variables)
    for var, grad in zip(variables, grads):
        assert grad is not None, var.path
        assert np.all(np.isfinite(grad.numpy())), var.path
        assert np.any(grad.numpy() != 0), var.path

    for layer in (model.landmark_offsets, model.texture_rgb, model.first_layer):
        kernel = layer.kernel
        grad = grads[[v.path for v in variables].index(kernel.path)].numpy()
        index = np.unravel_index(np.argmax(np.abs(grad)), grad.shape)
        original = kernel.numpy()
        eps = 1e-5
        values = []
        for sign in (1, -1):
            shifted = original.copy()
            shifted[index] += sign * eps
            kernel.assign(shifted)
            values.append(float(scalar()))
        kernel.assign(original)
        numeric = (values[0] - values[1]) / (2 * eps)
        assert numeric == pytest.approx(grad[index], rel=0.02), layer.name


# ----------------------------------------------------------------------------------------------
# Losses.


def test_losses_are_zero_when_outputs_equal_targets():
    face = smooth_image(2, 16, 16, seed=9)
    mean = lm.template_landmarks()
    true = np.stack([mean + 0.01, mean * 0.97 + 0.015]).astype(np.float32)
    target = warp.warp_image(face, true, mean)
    outputs = {"image": face, "texture": target, "landmarks": true}
    losses = fd.decoder_losses(outputs, face, true, mean, perceptual_fn=lambda x: x[:, 0, :3, 0])
    assert set(losses) == {"total", "landmark_mse", "texture_l1", "perceptual", "image_l1"}
    for value in losses.values():
        assert value.shape == (2,) and value.dtype == tf.float32
        np.testing.assert_allclose(value.numpy(), 0.0, atol=1e-6)


def test_losses_exact_values():
    face = np.full((2, 16, 16, 3), 0.5, np.float32)  # a flat face: the warp leaves it flat
    mean = lm.template_landmarks()
    outputs = {"image": face + 0.1, "texture": face - 0.25,
               "landmarks": np.broadcast_to(mean + 0.1, (2, 68, 2))}
    weights = fd.DecoderLossWeights(landmark=10.0, texture=2.0, perceptual=3.0, image=4.0)

    def perceptual_fn(x):
        # Mean 0.6 (rendered) → [0.1, 0]; mean 0.5 (true) → [0, 0.1]: 2 − 2 cos = 2.
        m = tf.reduce_mean(x, [1, 2, 3])
        return tf.stack([m - 0.5, 0.6 - m], axis=1)

    losses = fd.decoder_losses(outputs, face, np.broadcast_to(mean, (2, 68, 2)), mean, weights,
                               perceptual_fn=perceptual_fn)
    np.testing.assert_allclose(losses["landmark_mse"], 0.01, rtol=1e-5)
    np.testing.assert_allclose(losses["texture_l1"], 0.25, rtol=1e-5)
    np.testing.assert_allclose(losses["image_l1"], 0.1, rtol=1e-5)
    np.testing.assert_allclose(losses["perceptual"], 2.0, rtol=1e-5)
    np.testing.assert_allclose(losses["total"], 10 * 0.01 + 2 * 0.25 + 3 * 2.0 + 4 * 0.1,
                               rtol=1e-5)
    # Without a perceptual_fn the term is zero; a larger true face is resized to the output.
    losses = fd.decoder_losses(outputs, np.full((2, 40, 40, 3), 0.5, np.float32),
                               np.broadcast_to(mean, (2, 68, 2)), mean)
    np.testing.assert_allclose(losses["perceptual"], 0.0)
    np.testing.assert_allclose(losses["texture_l1"], 0.25, rtol=1e-5)


def test_a_step_without_image_terms_skips_the_rendering():
    # Texture and landmark terms only (the toy decoder): the decoder need not warp, and the two
    # losses are the same as with the rendered image.
    decoder = fd.FaceDecoder(fd.decoder_config("small"), mean_landmarks=lm.template_landmarks())
    features = tf.constant(np.random.default_rng(0).random((2, 4096), dtype=np.float32))
    full, bare = decoder(features), decoder(features, render=False)
    assert "image" in full and set(bare) == {"texture", "landmarks"}
    face = smooth_image(2, 64, 64, seed=3)
    true = np.broadcast_to(lm.template_landmarks() + 0.01, (2, 68, 2)).astype(np.float32)
    weights = fd.DecoderLossWeights(perceptual=0.0, image=0.0)
    a = fd.decoder_losses(full, face, true, decoder.mean_landmarks, weights)
    b = fd.decoder_losses(bare, face, true, decoder.mean_landmarks, weights)
    for name in ("total", "landmark_mse", "texture_l1"):
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(b["image_l1"].numpy(), 0.0)
    with pytest.raises(ValueError, match="render=True"):
        fd.decoder_losses(bare, face, true, decoder.mean_landmarks,
                          fd.DecoderLossWeights(image=1.0))
