"""The face decoder of Cole et al. (CVPR 2017), as Speech2Face uses it (docs/design_decisions.md).

    v (4096) ─► f_dec: Dense 4096→1000 ─► ReLU ─┬─► landmark MLP ─► 68×2 offsets + mean landmarks
                                                 └─► texture CNN: FC ─► s×s×c ─► 5×5 stride-2
                                                     transposed convs (ReLU) ─► S×S×32 ─► 1×1 conv
                                                     ─► sigmoid texture in the mean-landmark frame
    image = warp.warp_image(texture, control_from=mean landmarks, control_to=predicted landmarks)

`f_dec` (the Dense layer, `FaceDecoder.first_layer`) is the frozen teacher of the Speech2Face loss
(paper Eq. 1–2): the loss compares its outputs BEFORE the ReLU (see `FaceDecoder.call`).

Coordinates: landmarks are (x, y) NORMALISED to the image (`speech2face.models.landmarks`).

Training targets (Cole et al.): landmarks from dlib's 68-point predictor; texture = the face crop
warped to the mean landmarks (`decoder_losses` computes it); losses in `decoder_losses`.
"""

import dataclasses
from typing import Callable, Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from speech2face import records
from speech2face.models import landmarks as landmarks_lib
from speech2face.models import presets, warp

FEATURE_DIM = records.FEATURE_DIM  # v_f: VGG-Face fc7, 4096-D
NUM_LANDMARKS = records.NUM_LANDMARKS  # dlib's 68 points


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Sizes of the face decoder (both presets share Cole et al.'s topology, Sec. 3).

    Attributes:
      feature_dim: input face-feature size (VGG-Face fc7: 4096).
      fc_units: units of the first layer f_dec (1000 in the paper; the S2F loss depends on it).
      num_landmarks: landmarks predicted (dlib's 68).
      landmark_hidden: hidden ReLU layers of the landmark MLP (our choice; Cole et al. give a
        small MLP).
      image_size: output side S of the texture and image, = texture_base_size *
        2**len(texture_channels).
      texture_base_size: side of the texture FC's output map (ReLU).
      texture_base_channels: channels of the texture FC's output map.
      texture_channels: channels after each stride-2 transposed convolution (each followed by a
        ReLU); Cole et al.: max(256 / 2**i, 32), i.e. 128, 64, 32, 32 up to 224×224×32. A 1×1
        convolution then gives the 3 RGB channels, and a sigmoid maps them into [0, 1] (ours:
        Cole et al. do not say how the RGB values are bounded).
      kernel_size: kernel of the transposed convolutions (5 in Cole et al.).
      texture_batch_norm: batch normalisation after the texture FC and each transposed
        convolution, before the ReLU (ours, not in Cole et al.; off in the presets, an option
        of the decoder task).
      tps_regularization: see `warp.DEFAULT_TPS_REGULARIZATION`.
    """

    feature_dim: int = FEATURE_DIM
    fc_units: int = 1000
    num_landmarks: int = NUM_LANDMARKS
    landmark_hidden: Tuple[int, ...] = (512, 256)
    image_size: int = 224
    texture_base_size: int = 14
    texture_base_channels: int = 256
    texture_channels: Tuple[int, ...] = (128, 64, 32, 32)
    kernel_size: int = 5
    texture_batch_norm: bool = False
    tps_regularization: float = warp.DEFAULT_TPS_REGULARIZATION

    def __post_init__(self):
        # JSON (get_config) turns tuples into lists; frozen, hence object.__setattr__.
        object.__setattr__(self, "landmark_hidden", tuple(int(u) for u in self.landmark_hidden))
        object.__setattr__(self, "texture_channels", tuple(int(c) for c in self.texture_channels))
        size = self.texture_base_size * 2 ** len(self.texture_channels)
        if size != self.image_size:
            raise ValueError(
                f"DecoderConfig: texture_base_size {self.texture_base_size} doubled by "
                f"{len(self.texture_channels)} transposed convolutions gives {size}, not "
                f"image_size {self.image_size}; change texture_base_size or texture_channels.")


_PRESETS = {
    # 14×14×256 → 28×28×128 → 56×56×64 → 112×112×32 → 224×224×32 → 1×1 conv → 224×224×3
    # (Cole et al., Sec. 3).
    "paper": DecoderConfig(),
    # For CPUs and the toy world, the same rule from 128 channels:
    # 8×8×128 → 16×16×64 → 32×32×32 → 64×64×32 → 1×1 conv → 64×64×3.
    "small": DecoderConfig(landmark_hidden=(256,), image_size=64, texture_base_size=8,
                           texture_base_channels=128, texture_channels=(64, 32, 32)),
}

PRESETS = presets.names(_PRESETS)


def decoder_config(preset: str) -> DecoderConfig:
    """The `DecoderConfig` of a preset: "paper" (224×224 output) or "small" (64×64)."""
    return presets.lookup(_PRESETS, preset, "face decoder")


# ----------------------------------------------------------------------------------------------
# The model.


@keras.saving.register_keras_serializable(package="speech2face")
class FaceDecoder(keras.Model):
    """Face feature [B, 4096] → dict of `image`, `texture`, `landmarks` (see `call`).

    Attributes:
      config: the `DecoderConfig`.
      first_layer: f_dec, the Dense 4096 → 1000 layer named "f_dec" (no activation: its output
        is the pre-ReLU activation the Speech2Face loss compares).
      mean_landmarks: non-trainable float32 [68, 2] weight, normalised (x, y); saved with the
        model, so a `.keras` file carries it.
      feature_mean, feature_scale: non-trainable float32 [4096] and scalar: f_dec sees
        (v - feature_mean) * feature_scale. Set from the training data
        (`set_feature_normalization`) to the features' mean and 1 / RMS of the centred
        elements, so the inputs are centred with unit RMS whatever the extractor's scale
        (random VGG-Face fc7 values run into the hundreds, and one shared component carries
        ~98 % of their energy; the identity lies in the rest). An affine map, so f_dec stays
        affine in v; saved with the model. The S2F loss's teacher is `f_dec`, which includes it.
    """

    def __init__(self, config=None, mean_landmarks=None, **kwargs):
        """Args:
          config: a `DecoderConfig`, a preset name, or None for "paper".
          mean_landmarks: float [68, 2] normalised (x, y), or None for
            `landmarks.template_landmarks()`.
          **kwargs: keras.Model arguments (name, dtype, trainable).
        """
        kwargs.setdefault("name", "face_decoder")
        super().__init__(**kwargs)
        if config is None or isinstance(config, str):
            config = decoder_config(config or "paper")
        elif isinstance(config, dict):
            config = DecoderConfig(**config)
        self.config = config
        c = config
        # Heads and warp run in float32 under mixed precision, in float64 for a float64 model.
        self._head_dtype = "float64" if self.dtype_policy.compute_dtype == "float64" else "float32"
        # Sublayers do not inherit a model's dtype by themselves.
        policy = {"dtype": self.dtype_policy}
        self.first_layer = keras.layers.Dense(c.fc_units, name="f_dec", **policy)
        self.landmark_hidden = [
            keras.layers.Dense(units, activation="relu", name=f"landmark_fc{i}", **policy)
            for i, units in enumerate(c.landmark_hidden)]
        # Small initial offsets: training starts from the mean face, yet every landmark weight
        # gets a gradient (a zero kernel would block the layers below). float32: offsets of a
        # few 1e-3 are pixels, beyond bfloat16's resolution.
        self.landmark_offsets = keras.layers.Dense(
            2 * c.num_landmarks, name="landmark_offsets", dtype=self._head_dtype,
            kernel_initializer=keras.initializers.VarianceScaling(1e-4))
        # A bias is redundant before batch norm; without it each layer has its own.
        bias = not c.texture_batch_norm
        self.texture_fc = keras.layers.Dense(
            c.texture_base_size ** 2 * c.texture_base_channels, use_bias=bias, name="texture_fc",
            **policy)
        self.texture_deconvs = [
            keras.layers.Conv2DTranspose(channels, c.kernel_size, strides=2, padding="same",
                                         use_bias=bias, name=f"texture_deconv{i}", **policy)
            for i, channels in enumerate(c.texture_channels)]
        self.texture_norms = []
        if c.texture_batch_norm:
            self.texture_norms = [keras.layers.BatchNormalization(name="texture_fc_bn", **policy)]
            self.texture_norms += [keras.layers.BatchNormalization(name=f"texture_bn{i}", **policy)
                                   for i in range(len(c.texture_channels))]
        self.texture_rgb = keras.layers.Conv2D(3, 1, name="texture_rgb", dtype=self._head_dtype)
        self.mean_landmarks = self.add_weight(
            shape=(c.num_landmarks, 2), initializer="zeros", trainable=False, dtype="float32",
            name="mean_landmarks")
        self.set_mean_landmarks(landmarks_lib.template_landmarks() if mean_landmarks is None
                                else mean_landmarks)
        self.feature_mean = self.add_weight(
            shape=(c.feature_dim,), initializer="zeros", trainable=False, dtype="float32",
            name="feature_mean")
        self.feature_scale = self.add_weight(
            shape=(), initializer="ones", trainable=False, dtype="float32", name="feature_scale")

    def set_feature_normalization(self, scale, mean=None):
        """Sets the input normalisation: f_dec sees (v - mean) * scale.

        Args:
          scale: positive float, e.g. 1 / RMS of the centred training features' elements.
          mean: float [feature_dim], e.g. the training features' mean; None keeps the current
            one (zeros for a new model).
        """
        scale = float(scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"feature scale must be positive and finite, got {scale}.")
        if mean is not None:
            mean = np.asarray(mean, np.float32)
            if mean.shape != (self.config.feature_dim,) or not np.all(np.isfinite(mean)):
                raise ValueError(f"feature mean must be finite with shape "
                                 f"({self.config.feature_dim},), got shape {mean.shape}.")
            self.feature_mean.assign(mean)
        self.feature_scale.assign(scale)

    def exaggerate(self, features, exaggeration: float):
        """mean + (1 + e)(v − mean), with mean = `feature_mean` (the training faces' mean
        feature): e > 0 pushes a feature away from the average face before decoding.

        The authors rendered faces at exaggerations 0, 0.7 and 1.4 and the paper's
        craniofacial correlations match their 0.7 renders, but no formula is published: this
        one is the project's definition (docs/evaluation.md). e = 0 returns `features` as is.
        """
        if exaggeration == 0:
            return features
        mean = tf.cast(self.feature_mean, features.dtype)
        return mean + (1.0 + exaggeration) * (features - mean)

    def f_dec(self, features):
        """The first layer applied to [B, 4096] features: [B, 1000] pre-activations (the teacher
        of the Speech2Face loss's first term), after the fixed input normalisation."""
        features = ((features - tf.cast(self.feature_mean, features.dtype))
                    * tf.cast(self.feature_scale, features.dtype))
        return self.first_layer(features)

    def set_mean_landmarks(self, mean_landmarks):
        """Sets the mean landmarks: float [68, 2] (x, y) NORMALISED
        (`landmarks.pixels_to_normalized`)."""
        lm = np.asarray(mean_landmarks, np.float32)
        expected = (self.config.num_landmarks, 2)
        if lm.shape != expected:
            raise ValueError(f"mean landmarks must have shape {expected}, got {lm.shape}.")
        if not np.all(np.isfinite(lm)):
            raise ValueError("mean landmarks contain NaN or inf.")
        if lm.min() < -0.5 or lm.max() > 1.5:
            raise ValueError(
                f"mean landmarks span [{lm.min():.3g}, {lm.max():.3g}]: they look like pixel "
                f"coordinates; pass normalised ones "
                f"(landmarks.pixels_to_normalized(landmarks, size)).")
        self.mean_landmarks.assign(lm)

    def build(self, input_shape):
        c = self.config
        batch = input_shape[0]
        self.first_layer.build((batch, c.feature_dim))
        width = c.fc_units
        for layer in self.landmark_hidden:
            layer.build((batch, width))
            width = layer.units
        self.landmark_offsets.build((batch, width))
        self.texture_fc.build((batch, c.fc_units))
        size, channels = c.texture_base_size, c.texture_base_channels
        shapes = [(batch, size, size, channels)]
        for deconv in self.texture_deconvs:
            deconv.build(shapes[-1])
            size, channels = 2 * size, deconv.filters
            shapes.append((batch, size, size, channels))
        for norm, shape in zip(self.texture_norms, shapes):
            norm.build(shape)
        self.texture_rgb.build(shapes[-1])
        self.built = True

    def call(self, features, training=False, render=True):
        """Decodes face features.

        Args:
          features: [B, 4096] float, a face feature (v_f, or v_s from the voice encoder).
          training: batch-norm mode.
          render: warp the texture into the image; False leaves `image` out, for a training
            step whose losses do not look at it (only the texture and landmark terms), which
            then skips the warp and its gradient, most of the step's cost.

        Returns:
          dict of float32 tensors (float64 for a float64 model):
            `image`: [B, S, S, 3] in [0, 1], the texture warped from the mean landmarks to the
              predicted ones (the decoded face); absent with `render=False`.
            `texture`: [B, S, S, 3] in [0, 1], in the mean-landmark frame.
            `landmarks`: [B, 68, 2] normalised (x, y), = mean landmarks + predicted offsets.
        """
        c = self.config
        # f_dec of the S2F loss = this Dense output BEFORE the ReLU: an L1 on pre-activations
        # still pulls units that are negative for v_f or v_s, where a ReLU would zero both the
        # difference and its gradient. (Speech2Face and Cole et al. say only "the first layer".)
        hidden = keras.ops.relu(self.f_dec(features))
        x = hidden
        for layer in self.landmark_hidden:
            x = layer(x)
        offsets = keras.ops.reshape(self.landmark_offsets(x), (-1, c.num_landmarks, 2))
        landmarks = tf.cast(self.mean_landmarks, offsets.dtype)[None] + offsets

        t = self.texture_fc(hidden)
        t = keras.ops.reshape(t, (-1, c.texture_base_size, c.texture_base_size,
                                  c.texture_base_channels))
        t = keras.ops.relu(self._norm(0, t, training))
        for i, deconv in enumerate(self.texture_deconvs):
            t = keras.ops.relu(self._norm(i + 1, deconv(t), training))
        texture = tf.sigmoid(self.texture_rgb(t))
        if not render:
            return {"texture": texture, "landmarks": landmarks}
        image = warp.warp_image(texture, control_from=self.mean_landmarks, control_to=landmarks,
                           regularization=c.tps_regularization)
        return {"image": image, "texture": texture, "landmarks": landmarks}

    def _norm(self, index, x, training):
        """The `index`-th texture batch norm (0: after the FC), or x itself without them."""
        return self.texture_norms[index](x, training=training) if self.texture_norms else x

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "dtype": keras.dtype_policies.serialize(self.dtype_policy),
                "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(config=DecoderConfig(**config.pop("config")), **config)


# ----------------------------------------------------------------------------------------------
# Losses.


@dataclasses.dataclass(frozen=True)
class DecoderLossWeights:
    """Weights of the decoder's loss terms (`decoder_losses`).

    Chosen so the weighted terms start within one order of magnitude of each other. Measured on
    32 toy-world faces at 64×64 against a freshly initialised "small" decoder (mean landmarks,
    near-grey texture): landmark MSE 4.7e-4 (landmarks 1.2 px rms off the mean at 64 px, ~2 %;
    real faces vary more) → ×100 ≈ 0.05; texture L1 0.15 → ×1; perceptual 0.08 with random
    VGG-Face weights (trained weights separate faces more) → ×1. Cole et al. have these three
    terms only (their embedding term is the negative cosine; 2 − 2 cos has the same gradient
    direction). The image L1 (rendered vs true face, 0.16 at the start) is ours and off by
    default; at 0.2 it is the only term through which image content steers the landmarks (via
    the warp): in a 300-step overfitting run it took the landmark MSE to 2e-5 where without it
    the MSE stayed at 3.4e-4 (one seed; a hint, not a study).

    Attributes:
      landmark: weight of `landmark_mse`.
      texture: weight of `texture_l1`.
      perceptual: weight of `perceptual` (ignored without a `perceptual_fn`).
      image: weight of `image_l1` (ours; 0, Cole et al.'s decoder, unless set).
    """

    landmark: float = 100.0
    texture: float = 1.0
    perceptual: float = 1.0
    image: float = 0.0


def decoder_losses(outputs: Dict[str, tf.Tensor], face_image, true_landmarks, mean_landmarks,
                   weights: DecoderLossWeights = DecoderLossWeights(),
                   perceptual_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
                   regularization: float = warp.DEFAULT_TPS_REGULARIZATION) -> Dict[str, tf.Tensor]:
    """Per-example losses of the face decoder (Cole et al.).

    Args:
      outputs: `FaceDecoder` outputs (`image`, `texture`, `landmarks`).
      face_image: [B, H, W, 3] true face crop in [0, 1]; resized (bilinear, antialiased) to the
        decoder's S×S when H, W differ (the landmarks are normalised, so they need no change).
      true_landmarks: [B, 68, 2] normalised (x, y) landmarks of the true face.
      mean_landmarks: [68, 2] normalised, the decoder's `mean_landmarks`.
      weights: `DecoderLossWeights`.
      perceptual_fn: optional callable, [B, S, S, 3] in [0, 1] → [B, d] embedding (e.g. VGG-Face
        fc7 after resizing and `preprocess_input`); frozen, the true face's embedding gets no
        gradient.
      regularization: TPS regulariser of the texture target's warp.

    Returns:
      dict of float32 [B]: `landmark_mse` (mean over the 68×2 coordinates), `texture_l1` (mean
      |texture − target| over pixels and channels; target = true face warped from its landmarks
      to the mean ones, without gradient), `perceptual` (‖e/‖e‖ − ê/‖ê‖‖² = 2 − 2 cos between the
      embeddings of the rendered and the true face, scale-free so the weight does not depend on
      the embedding's scale; zeros without `perceptual_fn`), `image_l1` (mean |image − face|;
      zeros when `outputs` holds no image),
      and `total` = the weighted sum of the four.
    """
    texture = tf.cast(outputs["texture"], tf.float32)
    landmarks = tf.cast(outputs["landmarks"], tf.float32)
    face = tf.cast(face_image, tf.float32)
    true_landmarks = tf.cast(true_landmarks, tf.float32)
    size = texture.shape[1:3]
    if face.shape[1:3] != size:
        face = tf.image.resize(face, size, method="bilinear", antialias=True)

    landmark_mse = tf.reduce_mean(tf.square(landmarks - true_landmarks), axis=[1, 2])
    target = tf.stop_gradient(warp.warp_image(face, control_from=true_landmarks,
                                         control_to=mean_landmarks, regularization=regularization))
    texture_l1 = tf.reduce_mean(tf.abs(texture - target), axis=[1, 2, 3])
    # The rendered image is needed only by its own two terms (a step without them can skip
    # the warp: `FaceDecoder.call(render=False)`).
    image = tf.cast(outputs["image"], tf.float32) if "image" in outputs else None
    if image is None and (weights.image or perceptual_fn is not None):
        raise ValueError("decoder_losses: the image-L1 and perceptual terms need the rendered "
                         "image; call the decoder with render=True")
    image_l1 = (tf.zeros_like(landmark_mse) if image is None
                else tf.reduce_mean(tf.abs(image - face), axis=[1, 2, 3]))
    if perceptual_fn is None:
        perceptual = tf.zeros_like(landmark_mse)
    else:
        rendered = tf.math.l2_normalize(tf.cast(perceptual_fn(image), tf.float32), axis=-1)
        true = tf.stop_gradient(
            tf.math.l2_normalize(tf.cast(perceptual_fn(face), tf.float32), axis=-1))
        perceptual = tf.reduce_sum(tf.square(rendered - true), axis=-1)
    total = (weights.landmark * landmark_mse + weights.texture * texture_l1
             + weights.perceptual * perceptual + weights.image * image_l1)
    return {"total": total, "landmark_mse": landmark_mse, "texture_l1": texture_l1,
            "perceptual": perceptual, "image_l1": image_l1}
