"""VGG-Face (the VGG16 face network of Parkhi et al., 2,622 identities) as a Keras 3 model.

A port of keras-vggface's `VGG16` (rcmalli/keras-vggface, `keras_vggface/models.py`), which does not
import under Keras 3. The weight-carrying layers keep their original names (`conv1_1`...`conv5_3`,
`fc6`, `fc7`, `fc8`), so the original Keras-2 weight files load by layer name with h5py:

    rcmalli_vggface_tf_vgg16.h5        full network (conv1_1 ... fc8), ~553 MiB
    rcmalli_vggface_tf_notop_vgg16.h5  convolutional part only (conv1_1 ... conv5_3), ~56 MiB

Nothing is downloaded here: the user passes a local path (URLs in `WEIGHTS_URLS`).

In Speech2Face the face feature v_f is fc7 after its ReLU (4096-D, the input of fc8), and the
distillation term of the loss needs fc8's logits, so this model ends in fc8 logits.

The HDF5 layout that `load_rcmalli_weights` reads and `save_rcmalli_weights` writes is described
in docs/vggface.md.
"""

import os

import h5py
import keras
import numpy as np
import tensorflow as tf

from speech2face import errors, records
from absl import logging

_RELEASE = "https://github.com/rcmalli/keras-vggface/releases/download/v2.0/"
WEIGHTS_URLS = {
    "rcmalli_vggface_tf_vgg16.h5": _RELEASE + "rcmalli_vggface_tf_vgg16.h5",
    "rcmalli_vggface_tf_notop_vgg16.h5": _RELEASE + "rcmalli_vggface_tf_notop_vgg16.h5",
}

IMAGE_SIZE = 224
NUM_IDENTITIES = 2622
FEATURE_DIM = records.FEATURE_DIM  # v_f: VGG-Face fc7, 4096-D
# keras-vggface preprocess_input(version=1) means, in BGR order (the network was trained on BGR).
BGR_MEANS = np.array([93.5940, 104.7624, 129.1863], dtype=np.float32)

# (block, number of 3x3 convs, channels).
_CONV_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
_DENSE = (("fc6", 7 * 7 * 512, FEATURE_DIM), ("fc7", FEATURE_DIM, FEATURE_DIM),
          ("fc8", FEATURE_DIM, NUM_IDENTITIES))


def _weight_shapes(include_top):
    """Ordered {layer name: (kernel shape, bias shape)} of the weighted layers."""
    shapes = {}
    in_ch = 3
    for block, n, ch in _CONV_BLOCKS:
        for i in range(1, n + 1):
            shapes[f"conv{block}_{i}"] = ((3, 3, in_ch, ch), (ch,))
            in_ch = ch
    if include_top:
        for name, n_in, n_out in _DENSE:
            shapes[name] = ((n_in, n_out), (n_out,))
    return shapes


def _rcmalli_layer_names(include_top):
    """Every layer name in a keras-vggface VGG16 weights file, weightless ones included."""
    names = ["input_1"]
    for block, n, _ in _CONV_BLOCKS:
        names += [f"conv{block}_{i}" for i in range(1, n + 1)] + [f"pool{block}"]
    if include_top:
        names += ["flatten", "fc6", "fc6/relu", "fc7", "fc7/relu", "fc8", "fc8/softmax"]
    return names


class WeightsFileError(errors.UserError, ValueError):
    """A VGG-Face weights file is missing, unreadable or does not fit the model."""


def build_vggface(include_top=True, weights=None, name="vggface"):
    """Builds VGG-Face (VGG16) as a Keras 3 functional model.

    Args:
      include_top: with True the model runs to fc8 and outputs [B, 2622] LOGITS; with False it
        outputs pool5, [B, 7, 7, 512].
      weights: None (Keras default initialisation) or the path to an rcmalli .h5 file (see the
        module docstring). A no-top file cannot fill `include_top=True`; a full file fills the
        convolutions of `include_top=False`.
      name: the model's name.

    Returns:
      A `keras.Model` taking [B, 224, 224, 3] float32 already passed through `preprocess_input`
      (BGR, mean-subtracted). The one deliberate difference from keras-vggface: the top ends in fc8
      logits, without its final softmax layer `fc8/softmax`, because the distillation loss needs
      logits; apply a softmax for identity probabilities. The ReLUs after fc6 and fc7 are separate
      `Activation` layers `fc6_relu`, `fc7_relu` (keras-vggface's `fc6/relu`: Keras 3 rejects '/').

    Raises:
      WeightsFileError: the weights file is missing, not a Keras weights file, or does not fit.
    """
    if weights is not None:
        # Fail on a bad path before spending seconds on initialising 138 M parameters; every
        # weighted layer is then overwritten, so the cheap zeros initialiser is enough.
        _check_weights_path(weights)
        init = {"kernel_initializer": "zeros"}
    else:
        init = {}

    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="input_1")
    x = inputs
    for block, n, ch in _CONV_BLOCKS:
        for i in range(1, n + 1):
            x = keras.layers.Conv2D(ch, 3, padding="same", activation="relu",
                                    name=f"conv{block}_{i}", **init)(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"pool{block}")(x)
    if include_top:
        x = keras.layers.Flatten(name="flatten")(x)
        for layer_name, _, units in _DENSE:
            x = keras.layers.Dense(units, name=layer_name, **init)(x)
            if layer_name != "fc8":
                x = keras.layers.Activation("relu", name=f"{layer_name}_relu")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_rcmalli_weights(model, weights)
    return model


def build_fc8(weights):
    """VGG-Face's fc8 alone (Dense 4096 -> 2622 logits, as in `build_vggface`), filled from the
    rcmalli .h5 file `weights`: stage 2's distillation teacher. Only that layer is read from the
    file (43 MB), not the whole network (580 MB and 138 M parameters to build)."""
    _check_weights_path(weights)
    inputs = keras.Input(shape=(FEATURE_DIM,), name="fc7_relu")
    fc8 = keras.layers.Dense(NUM_IDENTITIES, name="fc8", kernel_initializer="zeros")
    load_rcmalli_weights(keras.Model(inputs, fc8(inputs), name="vggface_fc8"), weights)
    return fc8


def _check_weights_path(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsFileError(
            f"VGG-Face weights file {path!r} not found. Pass the path to a local copy of "
            f"rcmalli_vggface_tf_vgg16.h5 (or the no-top file), downloaded from "
            f"{WEIGHTS_URLS['rcmalli_vggface_tf_vgg16.h5']}.")
    if not os.path.isfile(path):
        raise WeightsFileError(f"VGG-Face weights path {path!r} is not a file. Pass the path to "
                               f"rcmalli_vggface_tf_vgg16.h5 itself.")
    if not h5py.is_hdf5(path):
        raise WeightsFileError(
            f"VGG-Face weights file {path!r} is not an HDF5 file (truncated download, or the "
            f"wrong file?). Expected a Keras .h5 weights file such as rcmalli_vggface_tf_vgg16.h5.")
    return path


def check_weights_file(path, layers=()):
    """`path` if it is a Keras VGG-Face weights file holding every layer in `layers` (none of
    their weights read: the check before a training run); else `WeightsFileError`."""
    path = _check_weights_path(path)
    try:
        with h5py.File(path, "r") as f:
            root = _weights_root(f, path)
            names = set(_read_names_attr(root, "layer_names"))
            missing = [name for name in layers if name not in names or name not in root]
    except OSError as e:
        raise WeightsFileError(f"Cannot open VGG-Face weights file {path!r}: {e}. "
                               f"Re-download it or check its permissions.") from e
    if missing:
        hint = ("" if "fc6" not in missing or "conv1_1" in missing else
                " It looks like the no-top file (rcmalli_vggface_tf_notop_vgg16.h5): use "
                "build_vggface(include_top=False) or pass the full rcmalli_vggface_tf_vgg16.h5.")
        raise WeightsFileError(
            f"VGG-Face weights file {path!r} lacks layer(s) {', '.join(missing)} that the "
            f"model needs.{hint}")
    return path


def _read_names_attr(group, attr):
    """A list-of-names attribute as str, including Keras 2's chunked form `attr0`, `attr1`, ..."""
    if attr in group.attrs:
        values = group.attrs[attr]
        values = [values] if isinstance(values, (bytes, str)) else list(values)
    else:
        values, chunk = [], 0
        while f"{attr}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attr}{chunk}"])
            chunk += 1
    # Keras 2 stored an empty name list as an empty float array.
    return [v.decode("utf8") if isinstance(v, bytes) else v
            for v in values if isinstance(v, (bytes, str))]


def _weights_root(f, path):
    if "layer_names" in f.attrs or "layer_names0" in f.attrs:
        return f
    if "model_weights" in f and ("layer_names" in f["model_weights"].attrs
                                 or "layer_names0" in f["model_weights"].attrs):
        return f["model_weights"]
    raise WeightsFileError(
        f"VGG-Face weights file {path!r} has no 'layer_names' attribute (at the root or under "
        f"'model_weights'), so it is not a Keras weights file. Pass rcmalli_vggface_tf_vgg16.h5 "
        f"or rcmalli_vggface_tf_notop_vgg16.h5.")


def _kernel_bias_names(weight_names):
    """(kernel name, bias name) of a layer's two weight names (Keras 2 wrote them in that order)."""
    kernel, bias = weight_names
    if "bias" in kernel.rsplit("/", 1)[-1] and "bias" not in bias.rsplit("/", 1)[-1]:
        kernel, bias = bias, kernel
    return kernel, bias


def load_rcmalli_weights(model, path):
    """Loads an rcmalli VGG-Face .h5 file into a `build_vggface` model, by layer name.

    Every Conv2D/Dense layer of `model` is filled; extra layers in the file (fc6..fc8 when the
    model has no top) are ignored. Everything is checked before anything is assigned, so a
    failure (`WeightsFileError`: missing file, not HDF5, not a Keras weights file, a layer of
    the model absent from the file, a weight of the wrong shape) leaves the model untouched."""
    targets = [layer for layer in model.layers
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    path = check_weights_file(path, [layer.name for layer in targets])
    with h5py.File(path, "r") as f:
        root = _weights_root(f, path)
        plan = []
        for layer in targets:
            group = root[layer.name]
            names = _read_names_attr(group, "weight_names")
            if len(names) != 2:
                raise WeightsFileError(
                    f"VGG-Face weights file {path!r}: layer {layer.name!r} has {len(names)} "
                    f"weights {names}, expected 2 (kernel and bias). The file is not a "
                    f"keras-vggface VGG16 file.")
            for wname, var in zip(_kernel_bias_names(names), (layer.kernel, layer.bias)):
                if wname not in group:
                    raise WeightsFileError(
                        f"VGG-Face weights file {path!r}: layer {layer.name!r} lists weight "
                        f"{wname!r} but has no such dataset; the file is corrupt, re-download it.")
                found, expected = tuple(group[wname].shape), tuple(var.shape)
                if found != expected:
                    raise WeightsFileError(
                        f"VGG-Face weights file {path!r}: shape mismatch in layer {layer.name!r} "
                        f"weight {wname!r}: the model expects {expected}, the file has {found}. "
                        f"Pass a keras-vggface VGG16 (TensorFlow layout) weights file.")
                plan.append((var, group[wname]))
        for var, dataset in plan:
            var.assign(np.asarray(dataset[()], dtype=np.float32))


def _write_rcmalli_h5(path, include_top, fill):
    """Writes the keras-vggface layout; `fill(name, kernel_dataset, bias_dataset)` writes values."""
    shapes = _weight_shapes(include_top)
    layer_names = _rcmalli_layer_names(include_top)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n in layer_names])
        f.attrs["backend"] = np.bytes_(b"tensorflow")  # fixed-length, as h5py 2 wrote it
        f.attrs["keras_version"] = np.bytes_(b"2.2.4")
        for name in layer_names:
            # 'fc6/relu' becomes the subgroup 'relu' of group 'fc6', as h5py did for Keras 2.
            group = f.create_group(name)
            if name not in shapes:
                group.attrs["weight_names"] = np.array([], dtype=np.float64)
                continue
            weight_names = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in weight_names])
            datasets = [group.create_dataset(w, shape, dtype=np.float32)
                        for w, shape in zip(weight_names, shapes[name])]
            fill(name, *datasets)
    return path


def save_rcmalli_weights(model, path):
    """Writes a `build_vggface` model's weights as an rcmalli (keras-vggface, Keras 2) .h5 file.

    The layout is the one `load_rcmalli_weights` reads, weightless entries (`input_1`, `pool*`,
    `flatten`, `fc6/relu`, `fc7/relu`, `fc8/softmax`) included; a model without fc8 gives the no-top
    layout. Returns `path`.
    """
    include_top = any(layer.name == "fc8" for layer in model.layers)
    shapes = _weight_shapes(include_top)
    for name, (kshape, bshape) in shapes.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise ValueError(f"save_rcmalli_weights: model {model.name!r} has no layer {name!r}; "
                             f"it is not a build_vggface model.") from None
        if tuple(layer.kernel.shape) != kshape or tuple(layer.bias.shape) != bshape:
            raise ValueError(f"save_rcmalli_weights: layer {name!r} has kernel "
                             f"{tuple(layer.kernel.shape)}, bias {tuple(layer.bias.shape)}; the "
                             f"VGG-Face layout needs {kshape}, {bshape}.")

    def fill(name, kernel_ds, bias_ds):
        layer = model.get_layer(name)
        kernel_ds[...] = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)
        bias_ds[...] = keras.ops.convert_to_numpy(layer.bias).astype(np.float32)

    return _write_rcmalli_h5(os.fspath(path), include_top, fill)


def random_vggface_weights(path, seed, include_top=True, input_scale=1.0 / 64.0):
    """Writes seeded random VGG-Face weights in the rcmalli layout; returns `path`.

    Kernels ~ N(0, 2 / fan_in) (He-normal, fan-in; untruncated), biases 0, drawn in float32 from
    `numpy.random.Generator(seed)` layer by layer in a fixed order (conv1_1 ... fc8) and fixed row
    chunks, so the file depends only on `seed` (not on Keras' global RNG), and the no-top file's
    convolutions equal the full file's for the same seed. Peak memory stays ~ one 32 MB chunk and
    no Keras model is built. For the toy world, where the real weights are not available.

    `input_scale` multiplies conv1_1's kernel (default 1/64) so that activations, fc7 and the fc8
    logits are O(1) for [0, 255] pixels, as in a trained network; the features' geometry (their
    directions) does not depend on it.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    chunk_rows = 2048

    def fill(name, kernel_ds, bias_ds):
        shape = kernel_ds.shape
        std = np.float32(np.sqrt(2.0 / np.prod(shape[:-1])))
        if name == "conv1_1":
            # Preprocessed pixels are O(100); with zero biases every activation scales with
            # conv1_1, so this brings fc7 and the fc8 logits to O(1), as in a trained network
            # (unscaled, the logits span ~1,000 and the T = 2 softmax is one-hot).
            std *= np.float32(input_scale)
        for start in range(0, shape[0], chunk_rows):
            block = rng.standard_normal((min(chunk_rows, shape[0] - start),) + shape[1:],
                                        dtype=np.float32)
            block *= std
            kernel_ds[start:start + block.shape[0]] = block
        bias_ds[...] = np.zeros(bias_ds.shape, np.float32)

    return _write_rcmalli_h5(os.fspath(path), include_top, fill)


def preprocess_input(rgb):
    """keras-vggface `preprocess_input(x, version=1)` for channels-last RGB in [0, 255].

    Args:
      rgb: [..., 224, 224, 3] RGB, uint8 or float, NumPy array or tf tensor.

    Returns:
      float32 of the same shape and kind (NumPy in, NumPy out; tensor in, tensor out): channels
      reversed to BGR, then `BGR_MEANS` (93.5940, 104.7624, 129.1863) subtracted.
    """
    if tf.is_tensor(rgb):
        x = tf.cast(rgb, tf.float32)
    else:
        x = np.asarray(rgb, dtype=np.float32)
    if x.shape[-1] != 3:
        raise ValueError(f"preprocess_input expects RGB images [..., 224, 224, 3]; got shape "
                         f"{tuple(x.shape)}.")
    return x[..., ::-1] - BGR_MEANS


class FaceFeatureExtractor:
    """Face feature v_f (VGG-Face fc7 after its ReLU, 4096-D) of 224x224 RGB face crops.

    Attributes:
      model: the full `build_vggface` model (ends in fc8 logits).
      fc8: the fc8 `keras.layers.Dense` (4096 -> 2622 logits), the frozen teacher of the loss.
      batch_size: images per forward pass; the last batch is padded so one trace serves all.
    """

    def __init__(self, weights, batch_size=16, progress=None, log_every=50):
        """Args:
          weights: path to the full rcmalli_vggface_tf_vgg16.h5 (or a file in its layout).
            Required: there is no random fallback.
          batch_size: images per forward pass.
          progress: optional `progress(done, total)` callback, called after every batch.
          log_every: log progress with absl every this many batches (0: never).
        """
        if weights is None:
            raise WeightsFileError(
                "FaceFeatureExtractor needs VGG-Face weights: pass the path to "
                "rcmalli_vggface_tf_vgg16.h5 (or a random_vggface_weights file for the toy world).")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.model = build_vggface(include_top=True, weights=weights)
        self.fc8 = self.model.get_layer("fc8")
        self._progress = progress
        self._log_every = int(log_every)
        features = keras.Model(self.model.input, self.model.get_layer("fc7_relu").output,
                               name="vggface_fc7")

        # One fixed signature: every batch (the padded last one too) reuses the same graph.
        @tf.function(input_signature=[
            tf.TensorSpec([self.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
        def forward(rgb):
            return tf.cast(features(preprocess_input(rgb), training=False), tf.float32)

        self._forward = forward

    def __call__(self, images):
        """[N, 224, 224, 3] RGB (uint8, or float in [0, 255]) -> v_f, np.float32 [N, 4096]."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"FaceFeatureExtractor expects RGB face crops of shape "
                             f"[N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3]; got {images.shape}.")
        n = images.shape[0]
        out = np.empty((n, FEATURE_DIM), np.float32)
        num_batches = -(-n // self.batch_size)
        for b, start in enumerate(range(0, n, self.batch_size)):
            batch = images[start:start + self.batch_size].astype(np.float32)
            m = batch.shape[0]
            if m < self.batch_size:
                batch = np.concatenate(
                    [batch, np.zeros((self.batch_size - m,) + batch.shape[1:], np.float32)])
            out[start:start + m] = self._forward(batch).numpy()[:m]
            if self._progress is not None:
                self._progress(start + m, n)
            if self._log_every and (b + 1) % self._log_every == 0:
                logging.info("VGG-Face features: %d/%d images (batch %d/%d).", start + m, n, b + 1,
                             num_batches)
        return out
