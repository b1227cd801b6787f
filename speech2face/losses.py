"""The Speech2Face loss (paper Eq. 1–2) and the paper's optimiser settings (docs/training.md).

    L = ‖f_dec(v_f) − f_dec(v_s)‖₁ + λ1 ‖v_f/‖v_f‖ − v_s/‖v_s‖‖₂²
        + λ2 L_distill(f_VGG(v_f), f_VGG(v_s))
    L_distill(a, b) = −Σ_i p_i(a) log p_i(b),   p_i(a) = softmax(a / T)_i

v_f is the face feature (VGG-Face fc7 after its ReLU, 4096-D), v_s the voice encoder's output
(4096-D); f_dec is the face decoder's first layer (Dense 4096 → 1000, before its ReLU) and f_VGG
is VGG-Face fc8 (Dense 4096 → 2622 logits). Both are frozen teachers: the loss lets gradients
reach v_s only, never the teachers' weights nor v_f.

The loss is returned per example, so that a training loop under `tf.distribute` can average over
the GLOBAL batch itself (`tf.nn.compute_average_loss`).
"""

from typing import Callable, Dict

import keras
import tensorflow as tf

LAMBDA1 = 0.025
LAMBDA2 = 200.0
TEMPERATURE = 2.0
# Floor of the squared norm in the L2 normalisation: a zero vector normalises to zero (and keeps
# finite gradients) instead of giving 0/0.
_NORM_EPSILON = 1e-12


def _frozen_call(teacher: Callable, x: tf.Tensor) -> tf.Tensor:
    """teacher(x) with gradients w.r.t. x only: none reach the teacher's variables.

    `layer.trainable = False` is not enough: Keras 3 variables are still watched by a
    `tf.GradientTape`, so `tape.gradient(loss, fc8.kernel)` would be a real tensor. Here the
    teacher runs under `tf.custom_gradient`, whose gradient function returns the vector-Jacobian
    product for x (from an inner tape) and None for every variable the teacher read.
    """

    @tf.custom_gradient
    def call(inputs):
        # persistent: an outer persistent tape may ask for the gradient more than once.
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(inputs)
            outputs = tf.cast(teacher(inputs), tf.float32)

        def grad(upstream, variables=None):
            d_inputs = tape.gradient(outputs, inputs, output_gradients=upstream)
            if variables:
                return d_inputs, [None] * len(variables)
            return d_inputs

        return outputs, grad

    return call(x)


def speech2face_loss(face_features, voice_features, decoder_first_layer, vgg_fc8,
                     lambda1=LAMBDA1, lambda2=LAMBDA2,
                     temperature=TEMPERATURE) -> Dict[str, tf.Tensor]:
    """The Speech2Face loss of each example (paper Eq. 1–2).

    Args:
      face_features: v_f, [B, D] float (any float dtype; D = 4096), the target.
      voice_features: v_s, [B, D] float, the voice encoder's output.
      decoder_first_layer: f_dec, a callable [B, D] → [B, 1000] (the face decoder's first
        Dense layer, before its ReLU).
      vgg_fc8: f_VGG, a callable [B, D] → [B, 2622] logits (VGG-Face fc8).
      lambda1: weight of `feature_l2` in `total` (0.025).
      lambda2: weight of `distill` in `total` (200).
      temperature: T of the softmaxes of the distillation term (2).

    Returns:
      dict of float32 [B] tensors, each term summed over its feature axis:
        `decoder_l1`: Σ_j |f_dec(v_f)_j − f_dec(v_s)_j|.
        `feature_l2`: Σ_j (v_f/‖v_f‖ − v_s/‖v_s‖)_j², in [0, 4].
        `distill`: −Σ_i p_i(fc8(v_f)) log p_i(fc8(v_s)), p = softmax(logits / T): the
          cross-entropy of the paper, as written. It equals KL(p_f ‖ p_s) plus the entropy of
          p_f, which does not depend on v_s, so the gradients are those of the KL divergence;
          only the value differs (it is the teacher's entropy, not 0, when v_s = v_f).
        `total`: decoder_l1 + lambda1 · feature_l2 + lambda2 · distill.
      The three terms are UNWEIGHTED (log them as they are; λ's only enter `total`).

    Gradients: `total` is differentiable w.r.t. `voice_features` only. The v_f side is wrapped in
    `tf.stop_gradient`, and the teachers run in `_frozen_call`, so their variables get None.
    Precision: v_f and v_s are cast to float32 and every term is computed in float32; the teachers
    run under their own dtype policy (build them float32 for full float32) and their outputs
    are cast to float32.
    """
    v_f = tf.stop_gradient(tf.cast(face_features, tf.float32))
    v_s = tf.cast(voice_features, tf.float32)
    if v_f.shape.rank is not None and v_s.shape.rank is not None:
        if v_f.shape.rank != 2 or not v_f.shape.is_compatible_with(v_s.shape):
            raise ValueError(f"speech2face_loss expects face and voice features of the same shape "
                             f"[B, D]; got {v_f.shape} and {v_s.shape}.")

    # Teacher outputs of the target: constants for the optimisation.
    dec_f = tf.stop_gradient(tf.cast(decoder_first_layer(v_f), tf.float32))
    logits_f = tf.stop_gradient(tf.cast(vgg_fc8(v_f), tf.float32))
    dec_s = _frozen_call(decoder_first_layer, v_s)
    logits_s = _frozen_call(vgg_fc8, v_s)

    decoder_l1 = tf.reduce_sum(tf.abs(dec_f - dec_s), axis=-1)

    unit_f = tf.math.l2_normalize(v_f, axis=-1, epsilon=_NORM_EPSILON)
    unit_s = tf.math.l2_normalize(v_s, axis=-1, epsilon=_NORM_EPSILON)
    feature_l2 = tf.reduce_sum(tf.square(unit_f - unit_s), axis=-1)

    temperature = tf.constant(temperature, tf.float32)
    p_f = tf.nn.softmax(logits_f / temperature, axis=-1)
    # log_softmax, not log(softmax): no log(0) = -inf for logits far below the maximum.
    log_p_s = tf.nn.log_softmax(logits_s / temperature, axis=-1)
    distill = -tf.reduce_sum(p_f * log_p_s, axis=-1)

    total = decoder_l1 + lambda1 * feature_l2 + lambda2 * distill
    return {"total": total, "decoder_l1": decoder_l1, "feature_l2": feature_l2,
            "distill": distill}


def learning_rate_schedule(initial=1e-3, decay_rate=0.95, decay_steps=10000):
    """The paper's learning rate, initial · decay_rate^floor(step / decay_steps).

    Returns:
      A staircase `keras.optimizers.schedules.ExponentialDecay`: 1e-3 for steps 0–9,999,
      9.5e-4 from step 10,000, and so on (decay_rate 1 keeps the rate constant).

    Raises:
      ValueError: decay_rate outside (0, 1] or decay_steps below 1.
    """
    if not 0.0 < decay_rate <= 1.0:
        raise ValueError(f"the learning rate's decay_rate must be in (0, 1], got {decay_rate}")
    if decay_steps < 1:
        raise ValueError(f"the learning rate's decay_steps must be at least 1, got {decay_steps}")
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=initial, decay_steps=decay_steps, decay_rate=decay_rate,
        staircase=True)


@keras.saving.register_keras_serializable(package="speech2face")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update of each dense float variable is one fused op
    (TensorFlow's `ResourceApplyAdam`) instead of Keras's eleven element-wise ones.

    The same update (Kingma & Ba, as Keras writes it): m ← β1 m + (1 − β1) g,
    v ← β2 v + (1 − β2) g², θ ← θ − lr · √(1 − β2ᵗ) / (1 − β1ᵗ) · m / (√v + ε), on the same
    slot variables, so checkpoints are interchangeable with Keras's Adam. Each of Keras's ops is
    a pass over the variable; on the toy face decoder's 12.9 M weights the update took 65 ms per
    step on two CPU cores, the fused op 21 (docs/performance.md). AMSGrad, sparse gradients and
    non-float32 variables take Keras's own path.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or keras.backend.standardize_dtype(variable.dtype) != "float32"):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle,
            v=self._velocities[index].handle, beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step), lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32))


def paper_optimizer(learning_rate=None):
    """Adam(β1 = 0.5, β2 = 0.999, ε = 1e-4) of the paper (docs/training.md), as `Adam` above.

    Args:
      learning_rate: a float or a schedule; None gives `learning_rate_schedule()`.
    """
    if learning_rate is None:
        learning_rate = learning_rate_schedule()
    return Adam(learning_rate, beta_1=0.5, beta_2=0.999, epsilon=1e-4)
