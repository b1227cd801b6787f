"""Tests of the Speech2Face loss against a NumPy twin, its gradients, and the optimiser settings."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from speech2face import losses

DIM = 6  # stands in for 4096


def teachers(seed=0):
    """f_dec: Dense 6 → 4 and fc8: Dense 6 → 5, with fixed weights."""
    rng = np.random.default_rng(seed)
    f_dec = keras.layers.Dense(4, name="f_dec")
    fc8 = keras.layers.Dense(5, name="fc8")
    for layer, units in ((f_dec, 4), (fc8, 5)):
        layer.build((None, DIM))
        layer.set_weights([rng.normal(size=(DIM, units)).astype(np.float32),
                           rng.normal(size=units).astype(np.float32)])
    return f_dec, fc8


def features(seed):
    """Hand-made v_f, v_s: float32 [3, 6]; row 2 of v_s is a scaled copy of row 2 of v_f."""
    rng = np.random.default_rng(seed)
    v_f = np.maximum(rng.normal(size=(3, DIM)), 0.0).astype(np.float32)  # post-ReLU, like fc7
    v_s = rng.normal(size=(3, DIM)).astype(np.float32)
    v_s[2] = 3.0 * v_f[2]
    return v_f, v_s


def np_loss(v_f, v_s, f_dec, fc8, lambda1=0.025, lambda2=200.0, temperature=2.0):
    """NumPy float64 twin of `speech2face_loss` (paper Eq. 1–2)."""
    def dense(layer, x):
        kernel, bias = (w.astype(np.float64) for w in layer.get_weights())
        return x.astype(np.float64) @ kernel + bias

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    decoder_l1 = np.abs(dense(f_dec, v_f) - dense(f_dec, v_s)).sum(-1)
    feature_l2 = ((unit(v_f.astype(np.float64)) - unit(v_s.astype(np.float64))) ** 2).sum(-1)
    p = softmax(dense(fc8, v_f) / temperature)
    q = softmax(dense(fc8, v_s) / temperature)
    distill = -(p * np.log(q)).sum(-1)
    return {"decoder_l1": decoder_l1, "feature_l2": feature_l2, "distill": distill,
            "total": decoder_l1 + lambda1 * feature_l2 + lambda2 * distill}


@pytest.mark.parametrize("kwargs", [{}, {"lambda1": 1.5, "lambda2": 0.5, "temperature": 1.0}])
def test_matches_numpy_reference(kwargs):
    f_dec, fc8 = teachers()
    v_f, v_s = features(seed=1)
    got = losses.speech2face_loss(v_f, v_s, f_dec, fc8, **kwargs)
    want = np_loss(v_f, v_s, f_dec, fc8, **kwargs)
    assert set(got) == {"total", "decoder_l1", "feature_l2", "distill"}
    for key, value in got.items():
        assert value.shape == (3,) and value.dtype == tf.float32, key
        np.testing.assert_allclose(value, want[key], rtol=2e-5, atol=1e-5, err_msg=key)
    # Row 2: v_s ∥ v_f, so the normalised features agree although the raw ones do not.
    assert got["feature_l2"][2] < 1e-6 and got["decoder_l1"][2] > 0.1


def test_defaults_are_the_papers():
    params = inspect.signature(losses.speech2face_loss).parameters
    assert params["lambda1"].default == 0.025
    assert params["lambda2"].default == 200.0
    assert params["temperature"].default == 2.0
    f_dec, fc8 = teachers()
    v_f, v_s = features(seed=2)
    got = losses.speech2face_loss(v_f, v_s, f_dec, fc8)
    np.testing.assert_allclose(
        got["total"], got["decoder_l1"] + 0.025 * got["feature_l2"] + 200.0 * got["distill"],
        rtol=1e-6)


def test_identical_features_leave_only_the_teacher_entropy():
    f_dec, fc8 = teachers()
    v_f, _ = features(seed=3)
    got = losses.speech2face_loss(v_f, v_f, f_dec, fc8)
    np.testing.assert_allclose(got["decoder_l1"], 0.0, atol=1e-6)
    np.testing.assert_allclose(got["feature_l2"], 0.0, atol=1e-6)
    logits = fc8(v_f).numpy().astype(np.float64) / 2.0
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    entropy = -(p * np.log(p)).sum(-1)
    np.testing.assert_allclose(got["distill"], entropy, rtol=1e-5)
    assert np.all(entropy > 0.01)


def test_zero_vectors_are_safe():
    f_dec, fc8 = teachers()
    v_f, _ = features(seed=4)
    v_s = tf.Variable(np.zeros_like(v_f))
    with tf.GradientTape() as tape:
        got = losses.speech2face_loss(v_f, v_s, f_dec, fc8)
    # A zero v_s normalises to zero: the distance is ‖v_f/‖v_f‖‖² = 1.
    np.testing.assert_allclose(got["feature_l2"], 1.0, rtol=1e-6)
    assert np.all(np.isfinite(tape.gradient(got["total"], v_s).numpy()))
    both_zero = losses.speech2face_loss(np.zeros_like(v_f), np.zeros_like(v_f), f_dec, fc8)
    np.testing.assert_allclose(both_zero["feature_l2"], 0.0)


@pytest.mark.parametrize("in_graph", [False, True])
def test_gradients_reach_only_the_voice_features(in_graph):
    f_dec, fc8 = teachers()
    f_dec.trainable = False  # as the trainer freezes them; the loss must not rely on it
    v_f, v_s = features(seed=5)
    v_f, v_s = tf.constant(v_f), tf.constant(v_s)
    teacher_weights = [f_dec.kernel, f_dec.bias, fc8.kernel, fc8.bias]

    def grads(v_f, v_s):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([v_f, v_s])
            total = tf.reduce_sum(losses.speech2face_loss(v_f, v_s, f_dec, fc8)["total"])
        return [tape.gradient(total, x) for x in [v_s, v_f] + teacher_weights]

    if in_graph:
        grads = tf.function(grads)
    d_v_s, d_v_f, *d_teachers = grads(v_f, v_s)
    assert np.all(np.abs(d_v_s.numpy()) > 0)
    assert d_v_f is None or not np.any(d_v_f.numpy())
    assert all(g is None for g in d_teachers), d_teachers

    # The gradient w.r.t. v_s is the true one: a central finite difference of the NumPy twin.
    v_f_np, v_s_np = v_f.numpy().astype(np.float64), v_s.numpy().astype(np.float64)
    i, j, h = 0, 3, 1e-4
    plus, minus = v_s_np.copy(), v_s_np.copy()
    plus[i, j] += h
    minus[i, j] -= h
    numeric = (np_loss(v_f_np, plus, f_dec, fc8)["total"].sum()
               - np_loss(v_f_np, minus, f_dec, fc8)["total"].sum()) / (2 * h)
    np.testing.assert_allclose(d_v_s.numpy()[i, j], numeric, rtol=1e-3)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_inputs_compute_in_float32(dtype):
    f_dec, fc8 = teachers()
    v_f, v_s = features(seed=6)
    v_f_low, v_s_low = tf.cast(v_f, dtype), tf.cast(v_s, dtype)
    got = losses.speech2face_loss(v_f_low, v_s_low, f_dec, fc8)
    # The reference on the same (rounded) inputs: only the inputs lose precision.
    want = np_loss(tf.cast(v_f_low, tf.float32).numpy(), tf.cast(v_s_low, tf.float32).numpy(),
                   f_dec, fc8)
    for key, value in got.items():
        assert value.dtype == tf.float32, key
        np.testing.assert_allclose(value, want[key], rtol=2e-5, atol=1e-5, err_msg=key)


def test_mismatched_shapes_raise():
    f_dec, fc8 = teachers()
    with pytest.raises(ValueError, match="same shape"):
        losses.speech2face_loss(np.zeros((2, DIM), np.float32), np.zeros((3, DIM), np.float32),
                                f_dec, fc8)


def test_learning_rate_schedule_is_staircase():
    schedule = losses.learning_rate_schedule()
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    for step, want in [(0, 1e-3), (9_999, 1e-3), (10_000, 9.5e-4), (25_000, 1e-3 * 0.95 ** 2)]:
        np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-6, err_msg=str(step))


def test_paper_optimizer_hyperparameters():
    optimizer = losses.paper_optimizer(1e-3)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.5, 0.999, 1e-4)
    np.testing.assert_allclose(float(optimizer.learning_rate), 1e-3)
    # Without a learning rate: the paper's schedule.
    schedule = losses.paper_optimizer().get_config()["learning_rate"]
    assert schedule["class_name"] == "ExponentialDecay"
    assert schedule["config"]["staircase"] and schedule["config"]["decay_steps"] == 10_000


def _adam_trajectory(make_optimizer, strategy=None, steps=5):
    """Variables after `steps` updates by `make_optimizer()` with fixed per-step gradients, in a
    tf.function (under `strategy` when given, each replica seeing the same gradients)."""
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    shapes = [(6, 5), (5,), (3, 3, 2, 4)]
    with strategy.scope():
        variables = [keras.Variable(rng.standard_normal(s).astype(np.float32)) for s in shapes]
        optimizer = make_optimizer()
        optimizer.build(variables)
    grads = [[tf.constant(rng.standard_normal(s).astype(np.float32)) for s in shapes]
             for _ in range(steps)]
    num_replicas = strategy.num_replicas_in_sync

    @tf.function
    def apply(step_grads):
        def replica(*g):  # summed over replicas: each contributes its share
            optimizer.apply_gradients(zip([x / num_replicas for x in g], variables))
        strategy.run(replica, args=tuple(step_grads))

    for step_grads in grads:
        apply(step_grads)
    return [v.numpy() for v in variables]


def test_fused_adam_equals_keras_adam(mirrored):
    schedule = losses.learning_rate_schedule(1e-2, 0.5, 2)  # the rate changes within the run
    keras_adam = _adam_trajectory(lambda: keras.optimizers.Adam(schedule, beta_1=0.5,
                                                                beta_2=0.999, epsilon=1e-4))
    for strategy in (None, mirrored):
        ours = _adam_trajectory(lambda: losses.paper_optimizer(schedule), strategy)
        for a, b in zip(ours, keras_adam):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    start = np.random.default_rng(0).standard_normal((6, 5))
    assert np.abs(keras_adam[0] - start).max() > 1e-3  # the updates moved the variables
    # The fused op is what runs.
    optimizer = losses.paper_optimizer(1e-3)
    variable = keras.Variable(np.ones(3, np.float32))
    optimizer.build([variable])
    graph = tf.function(lambda g: optimizer.apply_gradients([(g, variable)])).get_concrete_function(
        tf.TensorSpec([3], tf.float32)).graph
    assert "ResourceApplyAdam" in {op.type for op in graph.get_operations()}
