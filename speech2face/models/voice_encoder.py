"""The Speech2Face voice encoder (paper Table 1): spectrogram → v_s, a 4096-D feature.

    [B, T, 257, 2] ─► conv1–3 ─► pool ─► conv4 ─► pool ─► conv5 ─► pool ─► conv6 ─► pool
                   ─► conv7 ─► conv8 (stride 2) ─► conv9 (stride 2, linear)
                   ─► mean over all of time ─► ReLU ─► BN ─► flatten ─► FC ─► ReLU ─► FC ─► v_s

Every conv is 4×4 with 'same' padding and is followed by ReLU → BN (that order, as in the
table), except conv9, which is linear. The max pools are 2×1 with 'valid' padding and act on
time only: frequency carries the voice characteristics, so the network keeps its resolution
there until the stride-2 convs. The paper writes the stride of convs 8 and 9 as "2" next to
pooling strides written "2×1", so they stride 2×2, over time AND frequency; that reading gives the
time axis 598 → 299 → 149 → 74 → 37 → 19 → 10 and frequency 257 → 129 → 65, the
paper's ~164 M parameters (most of them the first FC: 65 × 512 = 33,280 inputs × 4096) and
~0.21 TFLOP per 6 s forward pass (`flops_per_example`). A 2×1 stride there would leave 257
frequencies and a first FC of 539 M weights.

The time average is a true mean over however many frames arrive (`TimeMean`), so one model
serves 6 s (598 frames) and 3 s (298 frames) inputs. The time axis must keep at least one frame
through the four pools: T >= `MIN_FRAMES` (16); fewer gives an empty mean (NaN). Frequency is
fixed by the first FC's width (257 bins for the paper's STFT).

Batch norm: the paper gives no momentum or epsilon, so the Keras defaults are kept (momentum 0.99,
epsilon 1e-3, the same as TF1's `tf.layers.batch_normalization` the authors most likely used).
Nor does it say whether the convs have biases or how weights are initialised: they have biases
(a ReLU, not a BN, follows each conv, so a bias is not redundant) and Keras' default Glorot-uniform.

Mixed precision: layers follow the global Keras dtype policy; `TimeMean` averages in float32,
and v_s leaves the model as float32 (a final float32 `Activation`), ready for the loss.
"""

import dataclasses
import math
from typing import List, Optional, Tuple

import keras
import tensorflow as tf

from speech2face import records
from speech2face.models import presets

# 1-based indices of the convs after which a 2×1 time pool follows, and of the stride-2 convs.
_POOL_AFTER = (3, 4, 5, 6)
_STRIDE2 = (8, 9)
NUM_CONVS = 9
MIN_FRAMES = 2 ** len(_POOL_AFTER)
FEATURE_DIM = records.FEATURE_DIM  # v_f: VGG-Face fc7, 4096-D
OUTPUT_LAYER = "fc2"  # the Dense layer whose output is v_s


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the voice encoder (all presets share the topology of paper Table 1).

    Attributes:
      conv_channels: output channels of conv1 ... conv9 (9 values).
      hidden_units: width of the first fully connected layer (4096 in the paper).
      output_dim: size of v_s; must equal the face feature's (VGG-Face fc7: 4096), since the
        loss compares v_s with v_f through the same teachers.
      freq_bins: frequency bins of the input spectrogram (257 for a 512-point FFT).
      input_channels: 2 (real and imaginary part of the power-law compressed STFT).
      kernel_size: side of the square conv kernels (4).
      bn_momentum, bn_epsilon: batch-norm settings (Keras defaults; the paper gives none).
      conv1_stride: (time, frequency) stride of conv1; the paper's (1, 1) keeps the input's full
        resolution through conv1-3. The toy preset strides time here so that its early layers,
        memory-bound at full resolution, cost a fraction (docs/toy_world.md).
      band_bins: read only the lowest `band_bins` of the input's `freq_bins` frequency bins
        (None: all of them, the paper's). The input keeps its full shape; the encoder crops it
        first, so every layer after sees the band only (the toy preset's 0-4 kHz:
        docs/toy_world.md).
    """

    conv_channels: Tuple[int, ...] = (64, 64, 128, 128, 128, 256, 512, 512, 512)
    hidden_units: int = 4096
    output_dim: int = FEATURE_DIM
    freq_bins: int = 257
    input_channels: int = 2
    kernel_size: int = 4
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    conv1_stride: Tuple[int, int] = (1, 1)
    band_bins: Optional[int] = None

    def __post_init__(self):
        # JSON turns tuples into lists; frozen, hence object.__setattr__.
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        object.__setattr__(self, "conv1_stride", tuple(int(s) for s in self.conv1_stride))
        if len(self.conv1_stride) != 2 or min(self.conv1_stride) < 1:
            raise ValueError(f"EncoderConfig: conv1_stride needs two strides >= 1 (time, "
                             f"frequency), got {self.conv1_stride}.")
        if len(self.conv_channels) != NUM_CONVS:
            raise ValueError(f"EncoderConfig: conv_channels needs {NUM_CONVS} values (conv1 ... "
                             f"conv9 of paper Table 1), got {len(self.conv_channels)}.")
        sizes = self.conv_channels + (self.hidden_units, self.output_dim, self.freq_bins,
                                      self.input_channels, self.kernel_size)
        if min(sizes) < 1:
            raise ValueError(f"EncoderConfig: every size must be >= 1, got {self}.")
        if self.band_bins is not None and not 1 <= self.band_bins <= self.freq_bins:
            raise ValueError(f"EncoderConfig: band_bins must be in [1, freq_bins="
                             f"{self.freq_bins}] or None, got {self.band_bins}.")


_PRESETS = {
    # Paper Table 1 exactly: 164,844,800 parameters (4,608 of them batch-norm statistics),
    # 0.2076 TFLOP per 6 s forward pass.
    "paper": EncoderConfig(),
    # CPU tests: channels ÷8 and a 512-unit hidden FC (4.42 M parameters,
    # 3.3 GFLOP per 6 s forward pass); the output stays 4096-D because v_s is compared with v_f.
    "small": EncoderConfig(conv_channels=(8, 8, 16, 16, 16, 32, 64, 64, 64), hidden_units=512),
    # The toy world's: `small` with conv1 striding 4 in time (frequency keeps its resolution),
    # reading the lowest 128 of the 257 bins (0-4 kHz, where the toy voices' f0 and formants
    # lie), so that conv2 onwards see 150 × 128 instead of 598 × 257 (3.34 M parameters,
    # 0.42 GFLOP per 6 s forward pass; docs/toy_world.md has the measurements).
    "toy": EncoderConfig(conv_channels=(8, 8, 16, 16, 16, 32, 64, 64, 64), hidden_units=512,
                         conv1_stride=(4, 1), band_bins=128),
}

PRESETS = presets.names(_PRESETS)


def encoder_config(preset: str) -> EncoderConfig:
    """The `EncoderConfig` of a preset: "paper" (Table 1), "small" (channels ÷8, CPU-sized) or
    "toy" (`small` with conv1 striding 4 in time, on the 0-4 kHz band: the toy world's)."""
    return presets.lookup(_PRESETS, preset, "voice encoder")


@keras.saving.register_keras_serializable(package="speech2face")
class TimeMean(keras.layers.Layer):
    """Mean over axis 1 (time) of whatever length arrives: [B, T, F, C] → [B, F, C].

    The paper's "∞×1" average pool. A fixed-size pooling would tie the model to one clip length;
    this one serves 3 s and 6 s alike. Accumulates in float32 (float64 for a float64 policy) and
    returns the layer's compute dtype.
    """

    def call(self, inputs):
        acc = "float64" if self.compute_dtype == "float64" else "float32"
        mean = keras.ops.mean(keras.ops.cast(inputs, acc), axis=1)
        return keras.ops.cast(mean, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package="speech2face")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training step on [B, H, W, C] inputs is one fused
    op forward and one backward (`FusedBatchNormV3`: oneDNN on CPUs, cuDNN on GPUs).

    Keras 3 computes batch statistics and normalises with separate element-wise ops, and their
    gradients are as many more passes over the activations; on the encoder's memory-bound
    convolutions that was 31 % of the toy preset's forward and backward pass on two CPU cores
    (docs/performance.md). The result is the same batch norm to float tolerance: the
    normalisation uses the biased batch variance, and the moving statistics are updated with
    it, as Keras does (the fused op returns the unbiased one; it is rescaled). Where the fused op does not apply, the parent's code runs:
    inference, inputs of another rank, float64, a mask, renorm, no centre or scale, and
    synchronised statistics across more than one replica (the fused op sees only its replica's
    batch).
    """

    def _fused_applies(self, inputs, training, mask) -> bool:
        if not (training and self.trainable) or mask is not None or self.renorm:
            return False
        if len(inputs.shape) != 4 or self.axis not in (-1, 3) or not (self.center and self.scale):
            return False
        if keras.backend.standardize_dtype(inputs.dtype) == "float64":
            return False
        if self.synchronized:
            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                return False
        return True

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon, is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(x, out_type=tf.int64)[:-1]), tf.float32)
        variance = variance * tf.math.divide_no_nan(count - 1.0, count)  # unbiased -> biased
        self.moving_mean.assign(self.moving_mean * self.momentum
                                + tf.cast(mean, self.moving_mean.dtype) * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum
            + tf.cast(variance, self.moving_variance.dtype) * (1.0 - self.momentum))
        return tf.cast(y, self.compute_dtype)


def _same(n, stride):
    return None if n is None else -(-n // stride)


def _conv_stride(config: EncoderConfig, i: int) -> Tuple[int, int]:
    """(time, frequency) stride of conv i (1-based)."""
    if i == 1:
        return config.conv1_stride
    return (2, 2) if i in _STRIDE2 else (1, 1)


def min_frames(config: EncoderConfig) -> int:
    """The fewest input frames that keep one frame through conv1's stride and the four pools."""
    return MIN_FRAMES * config.conv1_stride[0]


def model_min_frames(model: keras.Model) -> int:
    """`min_frames` of a built (or loaded) voice encoder, read from its conv1's time stride."""
    return MIN_FRAMES * model.get_layer("conv1").strides[0]


def layer_shapes(config: EncoderConfig, num_frames=598) -> List[Tuple[str, tuple]]:
    """Hand-computed output shape (no batch axis) of every shape-changing layer, in order.

    Args:
      config: the encoder's sizes.
      num_frames: input frames T (None for unknown).

    Returns:
      [(layer name, shape)]: "input", "band" (with `band_bins`), "conv1" ... "conv9", "pool1" ... "pool4", "time_mean",
      "flatten", "fc1", "fc2" (= v_s), as `build_voice_encoder` names them.
    """
    t, f = num_frames, config.freq_bins
    shapes = [("input", (t, f, config.input_channels))]
    if config.band_bins is not None:
        f = config.band_bins
        shapes.append(("band", (t, f, config.input_channels)))
    pools = 0
    for i, channels in enumerate(config.conv_channels, start=1):
        stride_t, stride_f = _conv_stride(config, i)
        t, f = _same(t, stride_t), _same(f, stride_f)
        shapes.append((f"conv{i}", (t, f, channels)))
        if i in _POOL_AFTER:
            pools += 1
            t = None if t is None else t // 2  # 'valid' 2×1 pool: floor
            shapes.append((f"pool{pools}", (t, f, channels)))
    channels = config.conv_channels[-1]
    shapes += [("time_mean", (f, channels)), ("flatten", (f * channels,)),
               ("fc1", (config.hidden_units,)), ("fc2", (config.output_dim,))]
    return shapes


def flops_per_example(config: EncoderConfig, num_frames=598) -> int:
    """Forward-pass FLOPs of one example: 2 × the multiply-adds of the convs and FCs.

    Counts only the convolutions and dense layers (2 · T_out · F_out · k² · C_in · C_out per conv,
    2 · n_in · n_out per FC). Biases, ReLU, batch norm, pooling and the time mean add well under 1%
    and are left out, as is usual for FLOP/s reports. A training step costs about 3× this (forward,
    plus gradients w.r.t. activations and weights).

    Args:
      config: the encoder's sizes.
      num_frames: input frames T (598 for 6 s, 298 for 3 s).
    """
    if num_frames < min_frames(config):
        raise ValueError(f"num_frames must be >= {min_frames(config)}, got {num_frames}.")
    shapes = dict(layer_shapes(config, num_frames))
    k2 = config.kernel_size ** 2
    flops = 0
    c_in = config.input_channels
    for i, c_out in enumerate(config.conv_channels, start=1):
        t, f, _ = shapes[f"conv{i}"]
        flops += 2 * t * f * k2 * c_in * c_out
        c_in = c_out
    n_in = math.prod(shapes["flatten"])
    flops += 2 * n_in * config.hidden_units + 2 * config.hidden_units * config.output_dim
    return flops


def build_voice_encoder(config: EncoderConfig, name="voice_encoder") -> keras.Model:
    """Builds the voice encoder as a functional Keras model (saves to and loads from `.keras`).

    Args:
      config: an `EncoderConfig` (e.g. `encoder_config("paper")`).
      name: the model's name.

    Returns:
      A `keras.Model` taking the spectrogram [B, T, freq_bins, 2] (T free, >= `MIN_FRAMES`;
      channel 0 real, 1 imaginary; any float dtype, cast to the compute dtype) and returning
      v_s, float32 [B, output_dim]. Layers are named as in `layer_shapes`, plus "relu{i}"/"bn{i}"
      after conv1 ... conv8, "mean_relu"/"mean_bn" after the time mean, "fc1_relu", and the
      float32 output layer "v_s". Training mode matters (batch norm).
    """
    c = config
    inputs = keras.Input(shape=(None, c.freq_bins, c.input_channels), name="spectrogram")
    # synchronized: under tf.distribute, batch statistics over the global batch, so N replicas
    # train exactly like one device with the same global batch (a no-op without a strategy).
    bn = {"momentum": c.bn_momentum, "epsilon": c.bn_epsilon, "synchronized": True}
    x = inputs
    if c.band_bins is not None:
        x = keras.layers.Cropping2D(((0, 0), (0, c.freq_bins - c.band_bins)), name="band")(x)
    pools = 0
    for i, channels in enumerate(c.conv_channels, start=1):
        x = keras.layers.Conv2D(channels, c.kernel_size, strides=_conv_stride(c, i),
                                padding="same",
                                name=f"conv{i}")(x)
        if i < NUM_CONVS:  # conv9 is linear: its ReLU → BN come after the time mean
            x = keras.layers.ReLU(name=f"relu{i}")(x)
            x = BatchNorm(name=f"bn{i}", **bn)(x)
        if i in _POOL_AFTER:
            pools += 1
            x = keras.layers.MaxPooling2D((2, 1), strides=(2, 1), padding="valid",
                                          name=f"pool{pools}")(x)
    x = TimeMean(name="time_mean")(x)
    x = keras.layers.ReLU(name="mean_relu")(x)
    x = BatchNorm(name="mean_bn", **bn)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(c.hidden_units, name="fc1")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    x = keras.layers.Dense(c.output_dim, name=OUTPUT_LAYER)(x)
    # The loss and the teachers work in float32 whatever the compute policy.
    outputs = keras.layers.Activation("linear", dtype="float32", name="v_s")(x)
    return keras.Model(inputs, outputs, name=name)
