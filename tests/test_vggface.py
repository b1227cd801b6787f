"""Tests for speech2face.models.vggface: the Keras 3 VGG-Face port and its rcmalli .h5 loader.

The weight files here are written directly with h5py in the layout of keras-vggface's original
rcmalli_vggface_tf_*vgg16.h5 (Keras 2 `save_weights`), independently of `save_rcmalli_weights`, so
the reader is tested against that layout: weightless entries such as `fc6/relu` (which h5py nests as
group `fc6`, subgroup `relu`) and datasets at nested paths `conv1_1/conv1_1/kernel:0`.
"""

import gc

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from speech2face.models import vggface

# The architecture, spelled out here on purpose rather than imported: (name, kernel shape).
CONVS = [("conv1_1", (3, 3, 3, 64)), ("conv1_2", (3, 3, 64, 64)),
         ("conv2_1", (3, 3, 64, 128)), ("conv2_2", (3, 3, 128, 128)),
         ("conv3_1", (3, 3, 128, 256)), ("conv3_2", (3, 3, 256, 256)),
         ("conv3_3", (3, 3, 256, 256)),
         ("conv4_1", (3, 3, 256, 512)), ("conv4_2", (3, 3, 512, 512)),
         ("conv4_3", (3, 3, 512, 512)),
         ("conv5_1", (3, 3, 512, 512)), ("conv5_2", (3, 3, 512, 512)),
         ("conv5_3", (3, 3, 512, 512))]
DENSES = [("fc6", (25088, 4096)), ("fc7", (4096, 4096)), ("fc8", (4096, 2622))]
POOL_AFTER = {"conv1_2": "pool1", "conv2_2": "pool2", "conv3_3": "pool3", "conv4_3": "pool4",
              "conv5_3": "pool5"}
NOTOP_NAMES = ["input_1"]
for _name, _ in CONVS:
    NOTOP_NAMES.append(_name)
    if _name in POOL_AFTER:
        NOTOP_NAMES.append(POOL_AFTER[_name])
FULL_NAMES = NOTOP_NAMES + ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
KERAS3_NAMES = [n.replace("/", "_") for n in FULL_NAMES if n != "fc8/softmax"]


def _layer_arrays(name, shape, rng):
    """He-uniform kernel (fan-in), small nonzero bias, so a forgotten bias shows."""
    limit = np.float32(np.sqrt(6.0 / np.prod(shape[:-1])))
    kernel = rng.random(shape, dtype=np.float32)
    kernel -= np.float32(0.5)
    kernel *= 2 * limit
    bias = (rng.random(shape[-1:], dtype=np.float32) - np.float32(0.5)) * np.float32(0.2)
    return kernel, bias


# Rows of fc6's 25088 x 4096 kernel that the full test file fills (the first 4 of pool5's 49
# positions, all 512 channels); the rest hold the HDF5 fill value 0 in chunks never written,
# which take no disk: a ~200 MB file instead of 553 MB, read by the loader like any other.
FC6_ROWS = 2048


def _write_rcmalli(path, include_top, seed=0, wrap=False, overrides=None):
    """Writes a Keras-2 weights file in the rcmalli layout with h5py; returns path."""
    rng = np.random.default_rng(seed)
    layers = dict(CONVS + (DENSES if include_top else []))
    overrides = overrides or {}
    with h5py.File(path, "w") as f:
        if wrap:  # what Keras 2 model.save() writes: weights under model_weights
            f.attrs["model_config"] = b'{"class_name": "Model"}'
            f.attrs["keras_version"] = b"2.2.4"
            f.attrs["backend"] = b"tensorflow"
            root = f.create_group("model_weights")
            f.create_group("optimizer_weights")
        else:
            root = f
        names = FULL_NAMES if include_top else NOTOP_NAMES
        root.attrs["layer_names"] = np.array([n.encode("utf8") for n in names])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for name in names:
            group = root.create_group(name)
            if name not in layers:
                group.attrs["weight_names"] = np.array([])  # Keras 2 wrote [] as a float array
                continue
            shape = overrides.get(name, layers[name])
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in weight_names])
            if name == "fc6":
                kernel, bias = _layer_arrays(name, (FC6_ROWS,) + shape[1:], rng)
                dataset = group.create_dataset(weight_names[0], shape, np.float32,
                                               chunks=(FC6_ROWS, 512), fillvalue=0.0)
                dataset[:FC6_ROWS] = kernel
            else:
                kernel, bias = _layer_arrays(name, shape, rng)
                group.create_dataset(weight_names[0], data=kernel)
            group.create_dataset(weight_names[1], data=bias)
    return str(path)


def _file_weights(path, name, prefix=""):
    with h5py.File(path, "r") as f:
        group = f[f"{prefix}{name}/{name}"]  # the nested path, spelled out
        return group["kernel:0"][()], group["bias:0"][()]


def _assert_weights_equal(model, path, names, prefix=""):
    for name in names:
        kernel, bias = _file_weights(path, name, prefix)
        layer = model.get_layer(name)
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel, err_msg=name)
        np.testing.assert_array_equal(layer.bias.numpy(), bias, err_msg=name)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("vggface")
    return {
        "full": _write_rcmalli(d / "rcmalli_vggface_tf_vgg16.h5", include_top=True),
        "notop": _write_rcmalli(d / "rcmalli_vggface_tf_notop_vgg16.h5", include_top=False),
        "wrapped": _write_rcmalli(d / "model_notop.h5", include_top=False, seed=3, wrap=True),
    }


@pytest.fixture(scope="module")
def model(files):
    return vggface.build_vggface(weights=files["full"])


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


def test_architecture_names_and_outputs(model):
    assert [layer.name for layer in model.layers] == KERAS3_NAMES
    assert tuple(model.output.shape) == (None, 2622)
    assert model.get_layer("fc8").get_config()["activation"] == "linear"  # logits, no softmax
    notop = vggface.build_vggface(include_top=False)
    assert [layer.name for layer in notop.layers] == KERAS3_NAMES[:KERAS3_NAMES.index("pool5") + 1]
    assert tuple(notop.output.shape) == (None, 7, 7, 512)


def test_loaded_weights_equal_file(model, files):
    _assert_weights_equal(model, files["full"], [n for n, _ in CONVS + DENSES])


def test_forward_matches_direct_computation(model, files):
    x = vggface.preprocess_input(_images(2, seed=1))
    h = tf.constant(x)
    for name, _ in CONVS:
        kernel, bias = _file_weights(files["full"], name)
        h = tf.nn.relu(tf.nn.conv2d(h, kernel, strides=1, padding="SAME") + bias)
        if name in POOL_AFTER:
            h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
    h = tf.reshape(h, [2, -1])  # channels-last flatten of pool5
    for name, _ in DENSES:
        kernel, bias = _file_weights(files["full"], name)
        h = tf.matmul(h, kernel) + bias
        if name != "fc8":
            h = tf.nn.relu(h)
        if name == "fc7":
            fc7_ref = h.numpy()
    logits_ref = h.numpy()

    fc7_model = keras.Model(model.input, model.get_layer("fc7_relu").output)
    fc7 = fc7_model(x).numpy()
    logits = model(x).numpy()
    assert fc7.shape == (2, 4096) and logits.shape == (2, 2622)
    assert fc7.std() > 0 and (fc7 > 0).mean() > 0.05  # not a degenerate all-zero comparison
    np.testing.assert_allclose(fc7, fc7_ref, rtol=1e-4, atol=1e-4 * np.abs(fc7_ref).max())
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-4,
                               atol=1e-4 * np.abs(logits_ref).max())


def test_model_weights_wrapped_file_loads(files):
    notop = vggface.build_vggface(include_top=False, weights=files["wrapped"])
    _assert_weights_equal(notop, files["wrapped"], [n for n, _ in CONVS], prefix="model_weights/")


def test_notop_file_into_notop_model(files):
    notop = vggface.build_vggface(include_top=False, weights=files["notop"])
    _assert_weights_equal(notop, files["notop"], [n for n, _ in CONVS])


def test_full_file_into_notop_model_loads_convs(files):
    notop = vggface.build_vggface(include_top=False, weights=files["full"])
    _assert_weights_equal(notop, files["full"], [n for n, _ in CONVS])


def test_notop_file_into_top_model_fails_clearly(files):
    with pytest.raises(vggface.WeightsFileError) as info:
        vggface.build_vggface(include_top=True, weights=files["notop"])
    message = str(info.value)
    assert files["notop"] in message and "fc6" in message and "include_top=False" in message
    assert isinstance(info.value, ValueError)


def test_error_missing_file(tmp_path):
    path = str(tmp_path / "nope.h5")
    with pytest.raises(vggface.WeightsFileError, match="not found") as info:
        vggface.build_vggface(weights=path)
    assert path in str(info.value) and "rcmalli_vggface_tf_vgg16.h5" in str(info.value)


def test_error_text_file(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(vggface.WeightsFileError, match="not an HDF5 file") as info:
        vggface.build_vggface(include_top=False, weights=path)
    assert str(path) in str(info.value)


def test_error_hdf5_without_layer_names(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(vggface.WeightsFileError, match="layer_names") as info:
        vggface.build_vggface(include_top=False, weights=path)
    assert str(path) in str(info.value)


def test_error_shape_mismatch(tmp_path):
    path = _write_rcmalli(tmp_path / "bad.h5", include_top=False,
                          overrides={"conv2_1": (3, 3, 64, 96)})
    with pytest.raises(vggface.WeightsFileError, match="shape mismatch") as info:
        vggface.build_vggface(include_top=False, weights=path)
    message = str(info.value)
    assert path in message and "conv2_1" in message
    assert "(3, 3, 64, 128)" in message and "(3, 3, 64, 96)" in message


def test_preprocess_input_exact():
    rgb = np.zeros((1, 224, 224, 3), np.uint8)
    rgb[0, 5, 7] = (10, 20, 30)
    expected = np.array([30 - 93.5940, 20 - 104.7624, 10 - 129.1863])
    out = vggface.preprocess_input(rgb)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == rgb.shape
    np.testing.assert_allclose(out[0, 5, 7], expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0], [-93.5940, -104.7624, -129.1863], rtol=1e-6)
    out_tf = vggface.preprocess_input(tf.constant(rgb.astype(np.float64)))
    assert tf.is_tensor(out_tf) and out_tf.dtype == tf.float32
    np.testing.assert_array_equal(out_tf.numpy(), out)
    with pytest.raises(ValueError, match="224, 224, 3"):
        vggface.preprocess_input(np.zeros((2, 224, 224, 4)))


def test_save_rcmalli_weights_round_trip(files, tmp_path):
    # The no-top model (56 MB, not 553): the writer's full layout, fc6/relu and fc8/softmax
    # included, is checked on the tiny world's file in test_random_full_weights_load_and_give_features.
    model = vggface.build_vggface(include_top=False, weights=files["notop"])
    path = vggface.save_rcmalli_weights(model, tmp_path / "saved.h5")
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == NOTOP_NAMES
        assert f.attrs["backend"] == b"tensorflow" and f.attrs["keras_version"] == b"2.2.4"
        assert len(f["pool5"].attrs["weight_names"]) == 0
        assert list(f["conv1_1"].attrs["weight_names"]) == [b"conv1_1/kernel:0", b"conv1_1/bias:0"]
    reloaded = vggface.build_vggface(include_top=False, weights=path)
    for name, _ in CONVS:
        a, b = model.get_layer(name), reloaded.get_layer(name)
        np.testing.assert_array_equal(a.kernel.numpy(), b.kernel.numpy(), err_msg=name)
        np.testing.assert_array_equal(a.bias.numpy(), b.bias.numpy(), err_msg=name)
    with pytest.raises(ValueError, match="not a build_vggface model"):
        vggface.save_rcmalli_weights(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]),
                                     tmp_path / "other.h5")


def _all_datasets(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    return out


def test_random_weights_deterministic(tmp_path):
    a = _all_datasets(vggface.random_vggface_weights(tmp_path / "a.h5", seed=7, include_top=False))
    b = _all_datasets(vggface.random_vggface_weights(tmp_path / "b.h5", seed=7, include_top=False))
    c = _all_datasets(vggface.random_vggface_weights(tmp_path / "c.h5", seed=8, include_top=False))
    assert sorted(a) == sorted(b) == sorted(c) and "conv5_3/conv5_3/kernel:0" in a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == np.float32
        if key.endswith("kernel:0"):
            assert not np.array_equal(a[key], c[key]), key
            fan_in = np.prod(a[key].shape[:-1])
            # He-normal; conv1_1 also carries the 1/64 input scale.
            expected = np.sqrt(2.0 / fan_in) * (1 / 64 if key.startswith("conv1_1/") else 1)
            assert abs(a[key].std() / expected - 1) < 0.1, key
        else:
            assert not a[key].any(), key


def test_random_full_weights_load_and_give_features(tiny_world, tmp_path):
    # The tiny world's file (random_vggface_weights with the world's seed): one ~580 MB full
    # file per test session instead of one per test.
    world, info = tiny_world
    path = info.weights_path(world)
    notop = _all_datasets(vggface.random_vggface_weights(tmp_path / "notop.h5",
                                                         seed=info.details["seed"],
                                                         include_top=False))
    with h5py.File(path, "r") as f:
        assert [n.decode() for n in f.attrs["layer_names"]] == FULL_NAMES
        assert len(f["fc6/relu"].attrs["weight_names"]) == 0
        assert len(f["fc8/softmax"].attrs["weight_names"]) == 0
        for key in notop:  # the no-top file is the full file's prefix for the same seed
            np.testing.assert_array_equal(f[key][()], notop[key], err_msg=key)
        fc6 = f["fc6/fc6/kernel:0"][:512]
        assert abs(fc6.std() / np.sqrt(2.0 / 25088) - 1) < 0.05
    loaded = vggface.build_vggface(weights=path)
    fc7 = keras.Model(loaded.input, loaded.get_layer("fc7_relu").output)(
        vggface.preprocess_input(_images(1, seed=2))).numpy()
    assert np.isfinite(fc7).all() and fc7.std() > 0
    del loaded
    gc.collect()


def test_face_feature_extractor(model, files):
    calls = []
    extractor = vggface.FaceFeatureExtractor(
        files["full"], batch_size=2, progress=lambda done, total: calls.append((done, total)))
    images = _images(3, seed=4)
    features = extractor(images)
    assert features.shape == (3, 4096) and features.dtype == np.float32
    assert (features >= 0).all() and features.std() > 0
    x = vggface.preprocess_input(images)
    fc7 = keras.Model(model.input, model.get_layer("fc7_relu").output)(x).numpy()
    np.testing.assert_allclose(features, fc7, rtol=1e-5, atol=1e-5 * np.abs(fc7).max())
    logits = extractor.fc8(features).numpy()  # fc8 is the teacher's head
    expected_logits = model(x).numpy()
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4,
                               atol=1e-4 * np.abs(expected_logits).max())
    assert isinstance(extractor.fc8, keras.layers.Dense) and extractor.fc8.units == 2622
    assert calls == [(2, 3), (3, 3)]
    extractor(images[:1].astype(np.float32))  # float input, another padded batch: no retrace
    assert extractor._forward.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match=r"\[N, 224, 224, 3\]"):
        extractor(np.zeros((3, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="weights"):
        vggface.FaceFeatureExtractor(None)


def test_fc8_alone_equals_the_full_models_fc8(model, files):
    fc8 = vggface.build_fc8(files["full"])
    assert isinstance(fc8, keras.layers.Dense) and fc8.units == 2622
    for ours, full in zip(fc8.weights, model.get_layer("fc8").weights):
        np.testing.assert_array_equal(ours.numpy(), full.numpy())
    with pytest.raises(vggface.WeightsFileError, match="lacks layer.*fc8"):
        vggface.build_fc8(files["notop"])
