import doctest

import numpy as np
import pytest
import tensorflow as tf

import kbnn
from kbnn import exact_product

rng = np.random.default_rng(0)


def signs(shape, plus=0.5):
    """+-1 with P(+1) = plus: plus near 1 makes long sums of one sign."""
    return np.where(rng.random(shape) < plus, 1.0, -1.0).astype("float32")


def test_bfloat16_matmul_of_tensorflow_rounds_a_sum_of_more_than_256_terms():
    # Why the chunks: 257 +1 terms come out as 256 (and 514 as 512).
    for terms, rounded in ((257, 256), (514, 512)):
        x = tf.ones((1, terms), tf.bfloat16)
        assert float(tf.matmul(x, tf.ones((terms, 1), tf.bfloat16))[0, 0]) == rounded


@pytest.mark.parametrize("terms", [1, 255, 256, 257, 513, 600, 784, 1024, 1728])
@pytest.mark.parametrize("plus", [0.5, 0.97, 1.0])
def test_bfloat16_matmul_is_exact(terms, plus):
    x, w = signs((9, terms), plus), signs((terms, 5), plus)
    w[:, 0] = 1.0  # column 0 sums each row of x: odd sums above 256 included
    x[0] = 1.0
    expected = x.astype(np.int64) @ w.astype(np.int64)
    got = exact_product.matmul(x, w, compute="bfloat16")
    assert got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(got.numpy(), tf.matmul(x, w).numpy())


def test_bfloat16_matmul_keeps_leading_axes_and_zeros():
    x = signs((2, 3, 700))
    x[:, :, :5] = 0.0
    w = signs((700, 4), 1.0)
    got = exact_product.matmul(x, w, compute="bfloat16")
    np.testing.assert_array_equal(got.numpy(), np.einsum("abk,kn->abn", x, w))


@pytest.mark.parametrize("kernel_shape, strides, padding, dilations", [
    ((3, 3, 48, 5), 1, "SAME", 1),       # 432 terms: 2 groups
    ((3, 3, 192, 4), 1, "SAME", 1),      # 1728 terms: 8 groups
    ((3, 3, 30, 4), 2, "VALID", 1),      # 270 terms: 2 groups
    ((3, 3, 58, 3), 1, "SAME", 1),       # 522 terms: 29 groups (58 = 2 x 29)
    ((2, 3, 64, 3), 1, "SAME", 2),
    ((3, 3, 8, 3), 1, "SAME", 1),        # 72 terms: one group
])
@pytest.mark.parametrize("plus", [0.5, 1.0])
def test_bfloat16_conv2d_is_exact(kernel_shape, strides, padding, dilations, plus):
    x = signs((2, 9, 8, kernel_shape[2]), plus)
    w = signs(kernel_shape, plus)
    expected = tf.nn.conv2d(x, w, strides, padding, dilations=dilations).numpy()
    assert np.abs(expected).max() > 256 or kernel_shape[2] < 48 or plus < 1
    got = exact_product.conv2d(x, w, strides, padding, dilations, compute="bfloat16")
    assert got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), expected)


def test_conv2d_groups_is_the_fewest_groups_of_at_most_256_terms():
    assert exact_product.conv2d_groups((3, 3, 28, 1)) == 1
    assert exact_product.conv2d_groups((3, 3, 48, 1)) == 2
    assert exact_product.conv2d_groups((3, 3, 96, 1)) == 4
    assert exact_product.conv2d_groups((3, 3, 30, 1)) == 2
    assert exact_product.conv2d_groups((3, 3, 58, 1)) == 29  # 2 groups of 29: 261 terms
    assert exact_product.conv2d_groups((17, 17, 2, 1)) is None


def _odd_partial_sums(terms):
    """+-1 terms whose running sum stays odd and above 256 at every odd position
    past 300 (300 +1s, then -1, +1, ...): a kernel that rounded a partial sum
    to bfloat16 anywhere there, or summed in bfloat16, would miss the total."""
    return np.where((np.arange(terms) < 300) | (np.arange(terms) % 2 == 1), 1.0, -1.0)


def test_bfloat16_kernels_round_only_their_float32_total():
    # What signs=True rests on, checked on this platform's kernels: an even
    # total of 512 terms is exact although partial sums are odd and above 256.
    column = _odd_partial_sums(512).astype("float32")
    assert column.sum() == 300
    x = tf.ones((1, 512), tf.bfloat16)
    assert float(tf.matmul(x, tf.constant(column[:, None], tf.bfloat16))[0, 0]) == 300
    batched = tf.matmul(x[None], tf.constant(column[None, :, None], tf.bfloat16))
    assert float(batched[0, 0, 0]) == 300
    kernel = tf.constant(column.reshape(1, 1, 512, 1), tf.bfloat16)
    convolved = tf.nn.conv2d(tf.ones((1, 1, 1, 512), tf.bfloat16), kernel, 1, "VALID")
    assert float(convolved[0, 0, 0, 0]) == 300
    assert exact_product.kernels_round_only_their_total()  # the library's own check agrees


def test_signs_fall_back_to_256_terms_where_kernels_round_partial_sums(monkeypatch):
    monkeypatch.setattr(exact_product, "kernels_round_only_their_total", lambda: False)
    assert exact_product._chunks(1024, signs=True) == (4, 256)
    assert exact_product.conv2d_groups((3, 3, 192, 192), signs=True) == 8
    x, w = signs((3, 1024), 1.0), signs((1024, 2), 1.0)
    np.testing.assert_array_equal(
        exact_product.matmul(x, w, compute="bfloat16", signs=True).numpy(),
        x.astype(np.int64) @ w.astype(np.int64))


@pytest.mark.parametrize("terms", [2, 256, 258, 512, 514, 784, 1024, 1026, 1728])
@pytest.mark.parametrize("plus", [0.5, 0.97, 1.0])
def test_bfloat16_matmul_of_signs_is_exact_in_chunks_of_512(terms, plus):
    x, w = signs((9, terms), plus), signs((terms, 5), plus)
    w[:, 0] = 1.0  # sums of rows of x, up to `terms`
    w[:, 1] = np.resize(_odd_partial_sums(512), terms)
    x[0] = 1.0
    expected = x.astype(np.int64) @ w.astype(np.int64)
    got = exact_product.matmul(x, w, compute="bfloat16", signs=True)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_chunks_of_signs_hold_up_to_512_terms_an_even_number_each():
    assert exact_product._chunks(1024, signs=True) == (2, 512)
    assert exact_product._chunks(514, signs=True) == (2, 258)   # 258 + 256
    assert exact_product._chunks(1026, signs=True) == (3, 342)
    assert exact_product._chunks(511, signs=True) == (2, 256)   # odd: the 256 rule
    for terms in range(2, 3000, 2):
        count, size = exact_product._chunks(terms, signs=True)
        last = terms - (count - 1) * size
        assert size <= 512 and size % 2 == 0 and 0 < last and last % 2 == 0, terms


def test_bfloat16_matmul_with_zeros_needs_the_256_rule():
    # Why signs=True is opt-in: 511 ones and a zero (a 0/1 operand) sum to 511,
    # which bfloat16 cannot hold (oneDNN rounds it to 512, Eigen to 510).
    x = np.ones((1, 512), "float32")
    x[0, 0] = 0.0
    w = np.ones((512, 1), "float32")
    assert float(exact_product.matmul(x, w, compute="bfloat16", signs=True)[0, 0]) != 511
    assert float(exact_product.matmul(x, w, compute="bfloat16")[0, 0]) == 511


@pytest.mark.parametrize("kernel_shape, strides, padding, dilations", [
    ((3, 3, 48, 5), 1, "SAME", 1),       # 432 terms: 1 group
    ((3, 3, 96, 4), 1, "SAME", 1),       # 864 terms: 2 groups
    ((3, 3, 192, 4), 1, "SAME", 1),      # 1728 terms: 4 groups
    ((3, 3, 58, 3), 1, "SAME", 1),       # 522 terms: 29 odd channels a half: 256 rule
    ((2, 3, 64, 3), 1, "SAME", 2),
    ((3, 3, 30, 4), 2, "VALID", 1),
])
@pytest.mark.parametrize("plus", [0.5, 1.0])
def test_bfloat16_conv2d_of_signs_is_exact(kernel_shape, strides, padding, dilations, plus):
    x = signs((2, 9, 8, kernel_shape[2]), plus)
    w = signs(kernel_shape, plus)
    expected = tf.nn.conv2d(x, w, strides, padding, dilations=dilations).numpy()
    got = exact_product.conv2d(x, w, strides, padding, dilations, compute="bfloat16",
                               signs=True)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_conv2d_groups_of_signs_hold_an_even_number_of_channels():
    assert exact_product.conv2d_groups((3, 3, 48, 1), signs=True) == 1
    assert exact_product.conv2d_groups((3, 3, 96, 1), signs=True) == 2
    assert exact_product.conv2d_groups((3, 3, 192, 1), signs=True) == 4
    assert exact_product.conv2d_groups((3, 3, 58, 1), signs=True) == 29  # 29 odd: 256 rule
    assert exact_product.conv2d_groups((3, 3, 57, 1), signs=True) == 3   # all odd: 256 rule


@pytest.mark.parametrize("compute", ["float32", "bfloat16"])
def test_integer_product_gradient_is_the_float_products(compute):
    x, w = signs((6, 700)), signs((700, 3))
    dy = rng.normal(size=(6, 3)).astype("float32")

    def grads(fn):
        xt, wt = tf.constant(x), tf.constant(w)
        with tf.GradientTape() as tape:
            tape.watch([xt, wt])
            y = fn(xt, wt)
        return [y, *tape.gradient(y, [xt, wt], output_gradients=dy)]

    forward = None if compute == "float32" else (
        lambda a, b: exact_product.matmul(a, b, compute=compute))
    got = grads(lambda a, b: exact_product.integer_product(tf.matmul, a, b, forward))
    for g, e in zip(got, grads(tf.matmul)):
        np.testing.assert_array_equal(g.numpy(), e.numpy())


def test_integer_product_backward_reads_int8_copies():
    # The gradient's matmuls take the operands through int8 -> float casts:
    # what the backward pass holds is the int8 copy, not the float input.
    x, w = tf.constant(signs((4, 8))), tf.constant(signs((8, 2)))

    @tf.function
    def step(x, w):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            y = exact_product.integer_product(tf.matmul, x, w)
        return tape.gradient(y, [x, w])

    graph = step.get_concrete_function(x, w).graph
    ops = {op.name: op for op in graph.get_operations()}
    grad_matmuls = [op for op in ops.values()
                    if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3")
                    and "gradient" in op.name.lower()]
    assert len(grad_matmuls) == 2
    for op in grad_matmuls:
        sources = [t.op for t in op.inputs if t.op.type == "Cast"]
        assert sources and all(s.inputs[0].dtype == tf.int8 for s in sources)
        assert not any(t.op.type == "Placeholder" for t in op.inputs)


def test_unknown_compute_names_it_and_the_choices():
    with pytest.raises(ValueError, match=r"Unknown compute 'float16'; use one of: "
                                         r"float32, bfloat16"):
        exact_product.matmul(np.ones((1, 1), "float32"), np.ones((1, 1), "float32"),
                             compute="float16")


def test_docstring_examples():
    result = doctest.testmod(exact_product, extraglobs={"kbnn": kbnn, "np": np},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("input_quantizer, channels_per_group", [
    ("ste_sign", 48),       # +-1 operands: 4 groups of 9 x 48 = 432 terms
    ("ste_heaviside", 24),  # 0/1 inputs: the 256 rule, 8 groups of 216 terms
])
def test_binary_conv_layer_uses_512_term_groups_only_for_signs(input_quantizer,
                                                               channels_per_group):
    layer = kbnn.layers.QuantConv2D(8, 3, padding="same", input_quantizer=input_quantizer,
                                    kernel_quantizer="ste_sign", use_bias=False,
                                    compute="bfloat16")
    x = tf.constant(rng.normal(size=(2, 5, 5, 192)).astype("float32"))
    layer(x)
    graph = tf.function(layer).get_concrete_function(x).graph
    convs = [op for op in graph.get_operations() if op.type == "Conv2D"
             and op.inputs[0].dtype == tf.bfloat16]
    assert [op.inputs[1].shape[2] for op in convs] == [channels_per_group]
    reference = kbnn.layers.QuantConv2D(8, 3, padding="same", input_quantizer=input_quantizer,
                                        kernel_quantizer="ste_sign", use_bias=False)
    reference(x)
    reference.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(x).numpy(), reference(x).numpy())


def test_binary_dense_layer_uses_512_term_chunks_for_signs():
    layer = kbnn.layers.QuantDense(3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                   use_bias=False, compute="bfloat16")
    x = tf.constant(rng.normal(size=(4, 1024)).astype("float32"))
    layer(x)
    graph = tf.function(layer).get_concrete_function(x).graph
    products = [op for op in graph.get_operations()
                if op.type in ("BatchMatMulV2", "BatchMatMulV3")]
    assert [op.inputs[1].shape[0] for op in products] == [2]  # 2 chunks of 512, not 4 of 256
    assert layer.sign_operands()
