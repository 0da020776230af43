"""The product of a binary layer: exact in bfloat16, held as int8 for the backward pass.

When a layer's input and kernel are both integer-valued (+-1, or 0 where
"same" padding pads with zeros), their product is a sum of small integers.
Two things follow, and this module does both:

* the backward pass needs the input and the kernel only as those integers,
  so `integer_product` keeps them as int8 (one byte an element, against four)
  and rebuilds float copies when the gradient is taken. The gradient is the
  one the float product would have: the same ops on the same values.
* the forward product can run in bfloat16, which holds +-1 and 0 exactly.
  TensorFlow's bfloat16 matmul and convolution accumulate in float32 on CPU
  (oneDNN) but round their output to bfloat16, whose 8 significant bits hold
  every integer up to 256 and not 257, so a sum of more terms could round.
  `compute="bfloat16"` therefore splits the sum into chunks of at most 256
  terms, each exact in bfloat16, and adds the chunks in float32 (exact below
  2**24): the result is bit-identical to the float32 product.
* with `signs=True` the caller promises that both operands are exactly +-1
  (zeros only where "same" padding pads): a sum of an even number of +-1 terms
  is even, and bfloat16 holds every even integer up to 512, so chunks may hold
  512 terms if they hold an even number. That rests on the kernel rounding only
  its float32 total, not on the order of the sum as the 256 limit does:
  `kernels_round_only_their_total` checks it once per process on this
  platform's kernels (partial sums odd and above 256; TensorFlow's CPU kernels,
  oneDNN and Eigen, pass here), and where it fails the 256 rule is used.
  Zeros break it (0/1 or ternary operands: 511 ones and a zero sum to 511,
  which rounds to 512), so it is opt-in.

>>> import numpy as np, kbnn
>>> x = np.ones((2, 600), "float32")            # worst case: every term +1
>>> w = np.ones((600, 3), "float32")
>>> kbnn.exact_product.matmul(x, w, compute="bfloat16").numpy()[0]
array([600., 600., 600.], dtype=float32)

The layers choose with their `compute` argument ("float32", the default, or
"bfloat16"); see `kbnn.layers`. Whether bfloat16 is faster depends on the
shapes: the chunks cost transposes and a float32 sum, which pay off on wide
convolutions and not on a small dense layer (`benchmarks/memory.py` times both).
"""

import functools

import numpy as np
import tensorflow as tf

__all__ = ["COMPUTES", "check_compute", "integer_product", "matmul", "conv2d_groups", "conv2d",
           "kernels_round_only_their_total", "fast_bfloat16"]

COMPUTES = ("float32", "bfloat16")
# bfloat16 has 8 significant bits: every integer of magnitude <= 2**8 is exact,
# and every even one <= 2**9 (a sum of an even number of +-1 terms is even).
MAX_EXACT_TERMS = 256
MAX_EXACT_SIGN_TERMS = 512


@functools.cache
def kernels_round_only_their_total():
    """Whether this platform's bfloat16 matmul, batched matmul and conv2d round only their
    float32 total, so that 512 +-1 terms whose partial sums are odd and above 256 sum
    exactly (what `signs=True` rests on). Run once per process, eagerly.

    >>> kbnn.exact_product.kernels_round_only_their_total()  # oneDNN or Eigen on x86
    True
    """
    # 300 ones, then -1, +1, ...: every odd position past 300 has an odd partial sum > 256.
    column = np.where((np.arange(512) < 300) | (np.arange(512) % 2 == 1), 1.0, -1.0)
    with tf.init_scope():
        ones = tf.ones((1, 512), tf.bfloat16)
        w = tf.constant(column.astype("float32"), tf.bfloat16)
        sums = [tf.matmul(ones, tf.reshape(w, (512, 1)))[0, 0],
                tf.matmul(ones[None], tf.reshape(w, (1, 512, 1)))[0, 0, 0],
                tf.nn.conv2d(tf.reshape(ones, (1, 1, 1, 512)), tf.reshape(w, (1, 1, 512, 1)),
                             1, "VALID")[0, 0, 0, 0]]
        return all(float(total) == 300.0 for total in sums)


# CPU flags (/proc/cpuinfo) of native bfloat16 dot products: x86 AVX512-BF16 and AMX,
# ARMv8.6 BF16. Without them oneDNN has to convert bfloat16 to float32 (not measured
# here: this machine has AVX512-BF16), so "auto" does not count on bfloat16 there.
_BFLOAT16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.cache
def fast_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU has bfloat16 dot-product instructions (Linux; False where unknown).

    >>> isinstance(kbnn.exact_product.fast_bfloat16(), bool)
    True
    """
    try:
        with open(cpuinfo) as lines:
            for line in lines:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return bool(_BFLOAT16_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def check_compute(compute, owner="compute"):
    """`compute` if it is one of `COMPUTES`, else a ValueError naming it.

    >>> kbnn.exact_product.check_compute("bfloat16")
    'bfloat16'
    """
    if compute not in COMPUTES:
        raise ValueError(f"Unknown {owner} {compute!r}; use one of: {', '.join(COMPUTES)}.")
    return compute


def integer_product(product, x, w, forward=None):
    """`product(x, w)` whose gradient holds `x` and `w` as int8, not as floats.

    `x` and `w` must be integer-valued in [-127, 127] (binary activations and
    weights); the gradient is taken through `product` itself on float copies
    rebuilt from the int8 ones, so it is exactly the float product's.
    `forward(x, w)`, when given, computes the forward value instead of
    `product` (an exact low-precision product).

    >>> import tensorflow as tf
    >>> x, w = np.ones((2, 3), "float32"), -np.ones((3, 4), "float32")
    >>> kbnn.exact_product.integer_product(tf.matmul, x, w).numpy()[0]
    array([-3., -3., -3., -3.], dtype=float32)
    """
    x, w = tf.convert_to_tensor(x), tf.convert_to_tensor(w)

    @tf.custom_gradient
    def _product(x, w):
        held_x, held_w = tf.cast(x, tf.int8), tf.cast(w, tf.int8)

        def grad(dy):
            # The float copies only once dy exists: TensorFlow runs an op as
            # soon as its inputs are ready, so casts of forward values alone
            # would run in the forward pass and be held until here.
            with tf.control_dependencies([dy]):
                x_, w_ = tf.cast(held_x, x.dtype), tf.cast(held_w, w.dtype)
            with tf.GradientTape() as tape:
                tape.watch([x_, w_])
                # Only the gradient ops are used: in a tf.function this
                # product is pruned, only eager mode computes it again.
                y = product(x_, w_)
            return tape.gradient(y, [x_, w_], output_gradients=dy)

        return (forward or product)(x, w), grad

    return _product(x, w)


def _chunks(terms, signs=False):
    """(number of chunks, terms per chunk) covering `terms`, each sum exact in bfloat16.

    Chunks of <= 256 terms; with `signs` (+-1 operands) and an even `terms`,
    chunks of <= 512 and an even number of terms each (the last one too).

    >>> kbnn.exact_product._chunks(1024), kbnn.exact_product._chunks(1024, signs=True)
    ((4, 256), (2, 512))
    """
    if signs and terms % 2 == 0 and kernels_round_only_their_total():
        count = -(-terms // MAX_EXACT_SIGN_TERMS)
        size = -(-terms // count)
        return count, size + size % 2
    count = -(-terms // MAX_EXACT_TERMS)
    return count, -(-terms // count)


def matmul(x, w, compute="float32", signs=False):
    """x @ w over the last axis of x, for integer-valued operands; exact in any `compute`.

    >>> kbnn.exact_product.matmul(np.ones((1, 2), "float32"), np.ones((2, 1), "float32"),
    ...                           compute="bfloat16").numpy()
    array([[2.]], dtype=float32)

    `signs=True`: both operands are exactly +-1, so bfloat16 chunks may hold up
    to 512 terms (see the module's docstring); wrong for operands with zeros.
    """
    x, w = tf.convert_to_tensor(x), tf.convert_to_tensor(w)
    if check_compute(compute) == "float32":
        return tf.matmul(x, w)
    terms, units = w.shape
    count, size = _chunks(terms, signs)
    rows = tf.reshape(tf.cast(x, tf.bfloat16), [-1, terms])
    w = tf.cast(w, tf.bfloat16)
    if count == 1:
        y = tf.cast(tf.matmul(rows, w), tf.float32)
    else:
        pad = count * size - terms
        if pad:
            rows = tf.pad(rows, [[0, 0], [0, pad]])
            w = tf.pad(w, [[0, pad], [0, 0]])
        # [count, rows, size] @ [count, size, units]: one exact bfloat16 sum a chunk.
        rows = tf.transpose(tf.reshape(rows, [-1, count, size]), [1, 0, 2])
        partial = tf.matmul(rows, tf.reshape(w, [count, size, units]))
        y = tf.reduce_sum(tf.cast(partial, tf.float32), axis=0)
    y = tf.reshape(y, tf.concat([tf.shape(x)[:-1], [units]], axis=0))
    return tf.cast(y, x.dtype)


def conv2d_groups(kernel_shape, signs=False):
    """How many input-channel groups make each output of a 2D convolution exact in bfloat16.

    The fewest groups of <= 256 terms each; with `signs` (+-1 operands) the
    fewest of <= 512 terms and an even number of channels each, so that every
    window's sum, padded positions left out, has an even number of terms (else
    the 256 rule). None when no split gets there (a window of more than 256
    positions).

    >>> kbnn.exact_product.conv2d_groups((3, 3, 192, 192))  # 9 * 24 = 216 terms a group
    8
    >>> kbnn.exact_product.conv2d_groups((3, 3, 192, 192), signs=True)  # 9 * 48 = 432
    4
    """
    height, width, channels, _ = kernel_shape
    if signs and kernels_round_only_their_total():
        for groups in range(1, channels + 1):
            per_group = channels // groups
            if channels % groups == 0 and per_group % 2 == 0 \
                    and height * width * per_group <= MAX_EXACT_SIGN_TERMS:
                return groups
    for groups in range(1, channels + 1):
        if channels % groups == 0 and height * width * channels // groups <= MAX_EXACT_TERMS:
            return groups
    return None


def conv2d(x, w, strides, padding, dilations, compute="float32", signs=False):
    """NHWC 2D convolution of integer-valued operands; exact in any `compute`.

    Arguments are `tf.nn.conv2d`'s (padding "SAME" or "VALID"). In bfloat16
    the input channels are split into `conv2d_groups` groups, convolved as one
    grouped convolution (each group's sum exact in bfloat16), and the groups'
    outputs added in float32. `signs=True`: both operands are exactly +-1, so
    groups may hold up to 512 terms (`conv2d_groups`).

    >>> x, w = np.ones((1, 3, 3, 64), "float32"), np.ones((3, 3, 64, 2), "float32")
    >>> kbnn.exact_product.conv2d(x, w, 1, "VALID", 1, compute="bfloat16").numpy().ravel()
    array([576., 576.], dtype=float32)
    """
    x, w = tf.convert_to_tensor(x), tf.convert_to_tensor(w)
    groups = conv2d_groups(w.shape, signs)
    if check_compute(compute) == "float32" or groups is None:
        return tf.nn.conv2d(x, w, strides, padding, dilations=dilations)
    height, width, channels, filters = w.shape
    # Group g's filters [.., g * filters:(g + 1) * filters] see input channels
    # [g * channels / groups, (g + 1) * channels / groups): TensorFlow's grouped
    # convolution, chosen by a kernel with channels / groups input channels.
    grouped = tf.reshape(w, [height, width, groups, channels // groups, filters])
    grouped = tf.reshape(tf.transpose(grouped, [0, 1, 3, 2, 4]),
                         [height, width, channels // groups, groups * filters])
    y = tf.nn.conv2d(tf.cast(x, tf.bfloat16), tf.cast(grouped, tf.bfloat16), strides, padding,
                     dilations=dilations)
    y = tf.reshape(tf.cast(y, tf.float32), tf.concat([tf.shape(y)[:-1], [groups, filters]], 0))
    return tf.cast(tf.reduce_sum(y, axis=-2), x.dtype)
