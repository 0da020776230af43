import keras
import numpy as np
import pytest
import tensorflow as tf

from kbnn import constraints
from kbnn import quantizers as q

POINTS = np.array([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.5], "float32")


def value_and_grad(fn, x, dy=None):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    dy = tf.ones_like(y) if dy is None else tf.constant(dy)
    return y.numpy(), tape.gradient(y, x, output_gradients=dy).numpy()


def test_sign_of_zero_is_plus_one():
    np.testing.assert_array_equal(q.sign(POINTS), [-1, -1, -1, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("fn", [q.ste_sign, q.approx_sign, q.swish_sign])
def test_sign_family_forward(fn):
    y, _ = value_and_grad(fn, POINTS)
    np.testing.assert_array_equal(y, [-1, -1, -1, 1, 1, 1, 1, 1])
    assert y.dtype == np.float32


def test_ste_sign_gradient_inside_on_and_outside_the_clip():
    dy = np.arange(1, 9, dtype="float32")
    _, g = value_and_grad(q.ste_sign, POINTS, dy)
    # |x| <= 1 passes dy (1.0 and -1.0 included), |x| > 1 gives 0.
    np.testing.assert_array_equal(g, [0, 2, 3, 4, 5, 6, 7, 0])
    _, g = value_and_grad(lambda x: q.ste_sign(x, clip_value=0.5), POINTS, dy)
    np.testing.assert_array_equal(g, [0, 0, 3, 4, 5, 6, 0, 0])
    _, g = value_and_grad(lambda x: q.ste_sign(x, clip_value=None), POINTS, dy)
    np.testing.assert_array_equal(g, dy)


@pytest.mark.parametrize("clip_value", [1.0, 0.5, 1.3, 2, 1e-3, 1e30, np.float32(0.75)])
def test_clipped_gradient_is_exact_at_the_clip_in_float32_and_float64(clip_value):
    # float32 takes a fused kernel (FakeQuant's gradient), other dtypes tf.where;
    # both must pass dy exactly where |x| <= clip_value, the neighbours of
    # +-clip_value included.
    c = np.float32(clip_value)
    edges = [np.nextafter(c, np.float32(0)), c, np.nextafter(c, np.float32(np.inf))]
    x = np.array([0, *edges, *np.negative(edges), np.inf, -np.inf, np.nan], "float32")
    x = np.concatenate([x, np.random.default_rng(0).uniform(-2 * c, 2 * c, 500).astype("float32")])
    dy = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    for dtype in (np.float32, np.float64):
        xd, dyd = x.astype(dtype), dy.astype(dtype)
        _, g = value_and_grad(lambda t: q.ste_sign(t, clip_value=clip_value), xd, dyd)
        assert g.dtype == dtype
        np.testing.assert_array_equal(g, np.where(np.abs(xd) <= dtype(clip_value), dyd, 0))


@pytest.mark.parametrize("clip_value", [1.0, 0.5, 1e-3, 1e30, None])
def test_ste_sign_of_a_variable_has_the_same_gradient_as_of_a_tensor(clip_value):
    # A latent kernel (a variable) takes the fused backward pass, an activation
    # the bool mask: the gradients must be identical, NaN and inf included.
    c = np.float32(1.0 if clip_value is None else clip_value)
    edges = [np.nextafter(c, np.float32(0)), c, np.nextafter(c, np.float32(np.inf))]
    x = np.array([0, -0.0, *edges, *np.negative(edges), np.inf, -np.inf, np.nan], "float32")
    x = np.concatenate([x, np.random.default_rng(0).uniform(-2 * c, 2 * c, 500).astype("float32")])
    dy = np.random.default_rng(1).normal(size=x.shape).astype("float32")
    dy[:3] = [np.nan, np.inf, -np.inf]
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = q.ste_sign(variable, clip_value=clip_value)
    g = tape.gradient(y, variable, output_gradients=tf.constant(dy)).numpy()
    y_tensor, g_tensor = value_and_grad(lambda t: q.ste_sign(t, clip_value=clip_value), x, dy)
    np.testing.assert_array_equal(y.numpy(), y_tensor)
    np.testing.assert_array_equal(g, g_tensor)


def test_approx_sign_gradient():
    _, g = value_and_grad(q.approx_sign, POINTS)
    expected = np.where(np.abs(POINTS) <= 1, 2 - 2 * np.abs(POINTS), 0)
    np.testing.assert_allclose(g, expected, rtol=1e-6)
    assert g[2] == 1.0 and g[4] == 2.0 and g[1] == 0.0


def test_swish_sign_gradient():
    beta = 3.0
    _, g = value_and_grad(lambda x: q.swish_sign(x, beta=beta), POINTS)
    bx = beta * POINTS.astype("float64")
    expected = beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))
    np.testing.assert_allclose(g, expected, rtol=1e-5, atol=1e-7)
    assert g[4] == pytest.approx(beta)  # peak at 0


def test_ste_heaviside():
    y, g = value_and_grad(q.ste_heaviside, POINTS)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 0])


def test_magnitude_aware_sign_scales_per_output_channel():
    w = np.array([[1.0, -2.0, 0.0], [-3.0, 0.5, 0.0]], "float32")
    y, g = value_and_grad(q.magnitude_aware_sign, w)
    np.testing.assert_allclose(y, [[2.0, -1.25, 0.0], [-2.0, 1.25, 0.0]])
    # The scale is not differentiated: gradient = scale * STE mask.
    np.testing.assert_allclose(g, [[2.0, 0.0, 0.0], [0.0, 1.25, 0.0]])


@pytest.mark.parametrize("x", [-1.5, -0.6, 0.0, 0.3, 0.9, 2.0])
def test_stochastic_sign_probability_is_hard_sigmoid(x):
    n = 200_000
    y = q.stochastic_sign(tf.fill([n], x), seed=keras.random.SeedGenerator(7)).numpy()
    assert set(np.unique(y)) <= {-1.0, 1.0}
    expected = min(max((x + 1) / 2, 0.0), 1.0)
    assert abs((y == 1).mean() - expected) < 0.01


def test_stochastic_sign_gradient_is_straight_through():
    seed = keras.random.SeedGenerator(0)
    _, g = value_and_grad(lambda x: q.stochastic_sign(x, seed), POINTS)
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 0])


def test_stochastic_sign_quantizer_seeded_and_deterministic_at_inference():
    x = tf.random.stateless_uniform([1000], seed=[1, 2], minval=-1, maxval=1)
    a, b, c = (q.StochasticSign(seed=s) for s in (3, 3, 4))
    first = [a(x, training=True).numpy() for _ in range(2)]
    second = [b(x, training=True).numpy() for _ in range(2)]
    np.testing.assert_array_equal(first, second)      # same seed, same draws
    assert (first[0] != first[1]).any()               # fresh draws each call
    assert (c(x, training=True).numpy() != first[0]).any()
    for training in (False, None):
        np.testing.assert_array_equal(a(x, training=training), q.sign(x))


def test_get_by_name_object_function_dict_and_none():
    assert isinstance(q.get("ste_sign"), q.SteSign)
    assert isinstance(q.get("SwishSign"), q.SwishSign)
    assert isinstance(q.get(q.approx_sign), q.ApproxSign)
    obj = q.SteSign(clip_value=0.25)
    assert q.get(obj) is obj
    restored = q.get(q.serialize(q.StochasticSign(clip_value=0.5, seed=9)))
    assert isinstance(restored, q.StochasticSign)
    assert (restored.clip_value, restored.seed) == (0.5, 9)
    assert q.get(None) is None
    custom = lambda x: x  # noqa: E731
    assert q.get(custom) is custom


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown quantizer 'ste_sing'; known: ste_sign, "
                       "stochastic_sign, approx_sign, swish_sign, magnitude_aware_sign, "
                       "ste_heaviside"):
        q.get("ste_sing")
    with pytest.raises(ValueError, match=r"Cannot interpret \[1\] as a quantizer: pass a name"):
        q.get([1])


def test_larq_style_config_dicts():
    quantizer = q.get({"class_name": "SteSign", "config": {"clip_value": 0.5}})
    assert isinstance(quantizer, q.SteSign) and quantizer.clip_value == 0.5
    clip = constraints.get({"class_name": "WeightClip", "config": {"clip_value": 0.3}})
    assert isinstance(clip, constraints.WeightClip) and clip.clip_value == 0.3


def test_is_binary_and_levels():
    for name in ("ste_sign", "stochastic_sign", "approx_sign", "swish_sign",
                 "magnitude_aware_sign", "ste_heaviside"):
        assert q.is_binary(q.get(name)), name
    assert not q.is_binary(None)
    assert not q.is_binary(lambda x: x)
    kernel = np.array([[1.0, -4.0], [-3.0, 0.0]], "float32")
    for name, low, high in [("ste_sign", [-1, -1], [1, 1]),
                            ("ste_heaviside", [0, 0], [1, 1]),
                            ("magnitude_aware_sign", [-2, -2], [2, 2])]:
        quantizer = q.get(name)
        lo, hi = (np.asarray(v) for v in quantizer.levels(kernel))
        np.testing.assert_allclose(lo, low)
        np.testing.assert_allclose(hi, high)
        # Every quantized weight is one of its channel's two levels.
        qk = quantizer(kernel).numpy()
        assert np.all((qk == lo) | (qk == hi))


def test_every_quantizer_has_a_precision_and_is_binary_reads_it():
    for name in ("ste_sign", "stochastic_sign", "approx_sign", "swish_sign",
                 "magnitude_aware_sign", "ste_heaviside"):
        assert q.get(name).precision == 1, name
    assert q.SteTern().precision == 2 and not q.is_binary(q.SteTern())
    assert q.DoReFa(k_bit=4).precision == 4 and not q.is_binary(q.DoReFa(k_bit=4))
    assert q.is_binary(q.DoReFa(k_bit=1, mode="weights"))

    class Custom(q.Quantizer):  # a user's 1-bit quantizer: binary by its precision
        precision = 1

        def call(self, inputs):
            return q.sign(inputs) * 0.5

    assert q.is_binary(Custom())
    kernel = np.array([[1.0, -4.0, 2.0], [-3.0, 0.0, 5.0]], "float32")
    low, high = (np.asarray(v) for v in Custom().levels(kernel))  # read off the kernel
    np.testing.assert_array_equal(low, [-0.5, -0.5, 0.5])
    np.testing.assert_array_equal(high, [0.5, 0.5, 0.5])


def test_noop_marks_a_precision_without_quantizing():
    noop = q.NoOp(precision=1)
    x = np.array([0.3, -2.0, 0.0], "float32")
    y, g = value_and_grad(noop, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(g, np.ones(3))
    assert noop.precision == 1 and not q.is_binary(noop)
    restored = q.get(q.serialize(noop))
    assert type(restored) is q.NoOp and restored.precision == 1
    assert q.get({"class_name": "NoOpQuantizer", "config": {"precision": 2}}).precision == 2
    with pytest.raises(ValueError, match="needs a precision.*NoOp\\(precision=...\\)"):
        q.get("NoOp")


def test_ste_tern_levels_threshold_and_gradient():
    x = np.array([-2.0, -0.5, -0.05, -0.01, 0.0, 0.04, 0.05, 0.3, 1.0, 1.5], "float32")
    y, g = value_and_grad(q.ste_tern, x)
    np.testing.assert_array_equal(y, [-1, -1, -1, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    y, _ = value_and_grad(lambda v: q.ste_tern(v, threshold_value=0.0), x)
    np.testing.assert_array_equal(y, np.sign(x))  # 0 stays 0
    y, g = value_and_grad(lambda v: q.ste_tern(v, threshold_value=0.4, clip_value=0.5), x)
    np.testing.assert_array_equal(y, [-1, -1, 0, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 1, 0, 0])


def test_ste_tern_ternary_weight_networks_threshold():
    w = np.array([[-1.0, 0.2], [0.5, 0.3]], "float32")  # mean |w| = 0.5, threshold 0.35
    y = q.SteTern(ternary_weight_networks=True)(w).numpy()
    np.testing.assert_array_equal(y, [[-1, 0], [1, 0]])
    config = q.SteTern(threshold_value=0.2, ternary_weight_networks=True,
                       clip_value=None).get_config()
    restored = q.get({"class_name": "SteTern", "config": config})
    assert (restored.threshold_value, restored.ternary_weight_networks,
            restored.clip_value) == (0.2, True, None)


def test_dorefa_activations():
    x = np.array([-0.5, 0.0, 0.1, 0.2, 0.5, 0.84, 1.0, 3.0], "float32")
    y, g = value_and_grad(lambda v: q.dorefa_quantizer(v, k_bit=2), x)
    # Rounding is half to even: 0.5 * 3 = 1.5 -> 2.
    np.testing.assert_allclose(y * 3, [0, 0, 0, 1, 2, 3, 3, 3], atol=1e-6)
    np.testing.assert_array_equal(g, [0, 1, 1, 1, 1, 1, 1, 0])  # the clip's gradient
    assert q.get("dorefa_quantizer").get_config()["mode"] == "activations"


def test_dorefa_weights_levels_and_gradient():
    x = np.array([-3.0, -0.2, 0.0, 0.2, 0.6, 3.0], "float32")
    y, g = value_and_grad(lambda v: q.dorefa_quantizer(v, k_bit=2, mode="weights"), x)
    # tanh, / (2 max|tanh|) + 0.5, round to thirds, * 2 - 1: levels -1, -1/3, 1/3, 1.
    unit = np.tanh(x) / (2 * np.abs(np.tanh(x)).max()) + 0.5
    np.testing.assert_allclose(y, 2 * np.round(unit * 3) / 3 - 1, atol=1e-6)
    assert set(np.round(y * 3).astype(int)) <= {-3, -1, 1, 3}
    scale = np.abs(np.tanh(x)).max()
    np.testing.assert_allclose(g, 1 / np.cosh(x) ** 2 / scale, rtol=1e-5)
    y, _ = value_and_grad(lambda v: q.dorefa_quantizer(v, mode="weights"), np.zeros(3, "float32"))
    np.testing.assert_allclose(y, np.full(3, 1 / 3), rtol=1e-6)  # 0.5 -> 2/3 (half to even) -> 1/3
    with pytest.raises(ValueError, match="Unknown DoReFa mode 'weight'"):
        q.DoReFa(mode="weight")
    restored = q.get(q.serialize(q.DoReFa(k_bit=3, mode="weights")))
    assert (restored.k_bit, restored.mode) == (3, "weights")
    assert q.get({"class_name": "DoReFaQuantizer", "config": {"k_bit": 3}}).precision == 3


def test_heaviside_of_zero_is_zero():
    np.testing.assert_array_equal(q.heaviside(POINTS), [0, 0, 0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("fn", [q.ste_sign, q.ste_heaviside, q.ste_tern,
                                lambda x: q.stochastic_sign(x, seed=1)])
def test_straight_through_backward_holds_a_bool_mask_not_the_input(fn):
    # The backward pass adds no reader of x: it multiplies dy by the mask taken
    # (as bool) in the forward pass, so x can be freed after the forward pass.
    def readers_of_x(with_gradient):
        @tf.function(autograph=False)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return tape.gradient(y, x, output_gradients=tf.ones_like(y)) if with_gradient else y

        graph = step.get_concrete_function(tf.TensorSpec([4], tf.float32)).graph
        ops = graph.get_operations()
        casts = [op for op in ops if op.type == "Cast" and op.inputs[0].dtype == tf.bool]
        readers = [op.type for op in ops if any(t.op.type == "Placeholder" for t in op.inputs)]
        return sorted(readers), casts

    forward_readers, _ = readers_of_x(False)
    readers, bool_casts = readers_of_x(True)
    assert readers == forward_readers
    assert bool_casts
