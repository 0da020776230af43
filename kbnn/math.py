"""Larq's math functions, same names: `sign` (never 0) and `heaviside`.

>>> import kbnn
>>> kbnn.math.sign([-2.0, 0.0, 3.0]).numpy()
array([-1.,  1.,  1.], dtype=float32)
>>> kbnn.math.heaviside([-2.0, 0.0, 3.0]).numpy()
array([0., 0., 1.], dtype=float32)

They are the conventions of `kbnn.quantizers` (sign(0) = +1,
heaviside(0) = 0), which every quantizer uses; this module only gives them
Larq's names. Unlike Larq's, they map NaN to -1 and 0 (Larq keeps NaN).
"""

from kbnn.quantizers import heaviside, sign

__all__ = ["sign", "heaviside"]
