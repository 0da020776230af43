"""Optimizers: Larq's `Bop` and `CaseOptimizer`, and Keras 3's Adam with a fused update.

Bop trains binary weights without latent real values (Helwegen et al. 2019);
`CaseOptimizer` gives it the binary kernels and another optimizer the rest.
Mark a kernel binary for Bop with `NoOp(precision=1)` (it computes with the
kernel as it is, which Bop keeps at +-1):

>>> import keras, kbnn
>>> optimizer = kbnn.optimizers.CaseOptimizer(
...     (kbnn.optimizers.Bop.is_binary_variable, kbnn.optimizers.Bop(threshold=1e-6)),
...     default_optimizer=keras.optimizers.Adam(0.01))
>>> model = keras.Sequential([keras.Input((8,)), kbnn.layers.QuantDense(
...     4, kernel_quantizer=kbnn.quantizers.NoOp(precision=1))])
>>> model.compile(optimizer, "mse")

Adam:

>>> model = kbnn.zoo.bnn_mlp((128,))
>>> model.compile(kbnn.optimizers.Adam(1e-3),
...               keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Keras 3 updates each variable with about ten separate element-wise ops; Keras 2
(and so Larq) called TensorFlow's fused `ResourceApplyAdam`, one pass over the
variable. For the 784x1024 kernel of the zoo MLPs that is a tenth of a training
step on CPU. `Adam` here computes exactly Keras 3's update (same formula,
same slots, same config) with the fused kernel, and falls back to Keras's own
update where the kernel does not apply (amsgrad, sparse gradients).
"""

import warnings

import keras
import tensorflow as tf
from keras import ops

from kbnn import quantizers

__all__ = ["Adam", "Bop", "CaseOptimizer"]


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (per replica in updates)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


# The versions on which `_variable_index` and `_adam_slots` (Keras-private
# attributes) and `_handle` (a Keras variable's TensorFlow handle, per replica
# under a strategy) were
# checked; tests/test_optimizers.py fails on any other, so someone checks again.
_CHECKED_ON = {"keras": "3.15", "tensorflow": "2.21"}


def _variable_index(optimizer, variable):
    """The position of `variable` in the lists an optimizer built (as Keras's own use).

    Keras 3 has no public accessor, so this reads the private
    `_get_variable_index` (checked on the Keras of `_CHECKED_ON`).
    """
    return optimizer._get_variable_index(variable)


def _adam_slots(optimizer, variable):
    """(momentum, velocity) of `variable` in a built Keras 3 Adam, or None.

    Keras 3 has no public accessor for an optimizer's per-variable slots, so
    this reads the private `_get_variable_index`, `_momentums` and
    `_velocities` of `keras.optimizers.Adam` (checked on the Keras of
    `_CHECKED_ON`) and nowhere else. None if they are gone, so the
    caller can fall back to Keras's own update.
    """
    try:
        index = _variable_index(optimizer, variable)
        return optimizer._momentums[index], optimizer._velocities[index]
    except (AttributeError, KeyError, IndexError):
        return None


@keras.saving.register_keras_serializable(package="kbnn")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose dense updates run as one fused TensorFlow op."""

    def update_step(self, gradient, variable, learning_rate):
        slots = None
        if not (self.amsgrad or isinstance(gradient, tf.IndexedSlices)):
            slots = _adam_slots(self, variable)
        if slots is None:
            return super().update_step(gradient, variable, learning_rate)
        momentum, velocity = slots
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(momentum), v=_handle(velocity),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
            use_locking=False)


def _at_step(value, step):
    """`value`, or its value at `step` if it is a schedule (a callable of the step)."""
    return value(step) if callable(value) else value


@keras.saving.register_keras_serializable(package="kbnn")
class Bop(keras.optimizers.Optimizer):
    """Binary optimizer (Bop): flips a binary weight when its gradient's average says so.

    Per weight w (+-1), m <- m + gamma * (g - m), an exponential moving
    average of the gradient; w flips sign where w * m > threshold, that is
    w <- sign(-sign(w * m - threshold) * w) with sign(0) = +1 (so a weight
    that is not +-1 yet becomes +-1 at its first step). `gamma` and
    `threshold` may be schedules (`keras.optimizers.schedules`). Give it
    only binary weights, through `CaseOptimizer` and `Bop.is_binary_variable`.

    >>> bop = kbnn.optimizers.Bop(threshold=1e-6, gamma=1e-3)
    >>> round(float(bop.threshold.numpy()), 9), round(float(bop.gamma.numpy()), 6)
    (1e-06, 0.001)
    """

    def __init__(self, threshold=1e-8, gamma=1e-4, name="Bop", **kwargs):
        kwargs.pop("learning_rate", None)  # gamma plays its part
        super().__init__(learning_rate=gamma, name=name, **kwargs)
        # A variable (like the learning rate), so a callback can change it
        # after the training step was traced; a schedule stays a schedule.
        self._threshold = threshold if callable(threshold) else self.add_variable(
            (), initializer=keras.initializers.Constant(threshold), name="threshold",
            aggregation="only_first_replica")

    @property
    def gamma(self):
        return self.learning_rate

    @gamma.setter
    def gamma(self, value):
        self.learning_rate = value

    @property
    def threshold(self):
        return self._threshold

    @threshold.setter
    def threshold(self, value):
        if callable(self._threshold) or callable(value):
            raise ValueError("Bop's threshold is a schedule or a number for the whole "
                             "training; to change a number, assign a new number.")
        self._threshold.assign(value)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._moving_gradients = [self.add_variable_from_reference(v, "moving_gradient")
                                  for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gamma = ops.cast(learning_rate, dtype)
        threshold = ops.cast(_at_step(self.threshold, self.iterations), dtype)
        m = self._moving_gradients[_variable_index(self, variable)]
        self.assign_add(m, gamma * (ops.cast(gradient, dtype) - m))
        self.assign(variable, quantizers.sign(-ops.sign(variable * m - threshold) * variable))

    def get_config(self):
        config = super().get_config()
        threshold = self._threshold
        return {**config, "gamma": config.pop("learning_rate"),
                "threshold": keras.saving.serialize_keras_object(threshold)
                if callable(threshold) else float(ops.convert_to_numpy(threshold))}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for name in ("gamma", "threshold"):
            if isinstance(config.get(name), dict):
                config[name] = keras.saving.deserialize_keras_object(
                    config[name], custom_objects=custom_objects)
        return cls(**config)

    @staticmethod
    def is_binary_variable(variable):
        """Whether `variable` is marked 1-bit: a kernel whose quantizer has precision 1.

        kbnn's quantized layers give each quantized kernel variable the
        `precision` of its quantizer; Bop wants those of `NoOp(precision=1)`
        (a binarizing quantizer would keep computing with the sign of what
        Bop already keeps at +-1, which is the same, so they qualify too).
        """
        return getattr(variable, "precision", 32) == 1


@keras.saving.register_keras_serializable(package="kbnn")
class CaseOptimizer(keras.optimizers.Optimizer):
    """One optimizer per group of variables, chosen by predicates (Larq's, on Keras 3).

    Each `(predicate, optimizer)` pair trains the variables for which
    `predicate(variable)` is true; `default_optimizer` (keyword) trains the
    others (without one they are not trained, with a warning). A variable
    claimed by two predicates, or an optimizer that claims none, is an error.
    Predicates are not saved: a restored CaseOptimizer keeps the assignment
    of variables (by path) it had when saved.
    """

    def __init__(self, *predicate_optimizer_pairs, default_optimizer=None,
                 name="optimizer_case", **kwargs):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        for i, pair in enumerate(predicate_optimizer_pairs):
            if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or not callable(pair[0])
                    or not isinstance(pair[1], keras.optimizers.Optimizer)):
                raise TypeError(f"CaseOptimizer argument {i} is {pair!r}; pass "
                                f"(predicate, keras optimizer) pairs.")
        if default_optimizer is not None and not isinstance(
                default_optimizer, keras.optimizers.Optimizer):
            raise TypeError(f"default_optimizer is {default_optimizer!r}; pass a Keras "
                            f"optimizer or None.")
        self.predicate_optimizer_pairs = [tuple(p) for p in predicate_optimizer_pairs]
        self.default_optimizer = default_optimizer
        self.optimizers = [opt for _, opt in self.predicate_optimizer_pairs]
        if default_optimizer is not None:
            self.optimizers.append(default_optimizer)
        self.var_opt_mapping = None  # variable path -> index into self.optimizers

    def _claim(self, variables):
        mapping = {}
        for variable in variables:
            claims = [i for i, (predicate, _) in enumerate(self.predicate_optimizer_pairs)
                      if predicate(variable)]
            if len(claims) > 1:
                raise ValueError(f"Variable {variable.path!r} is claimed by optimizers "
                                 f"{claims} of the CaseOptimizer; make its predicates exclusive.")
            if claims:
                mapping[variable.path] = claims[0]
            elif self.default_optimizer is not None:
                mapping[variable.path] = len(self.predicate_optimizer_pairs)
            else:
                warnings.warn(f"No default_optimizer: variable {variable.path!r} is not trained.")
        for i, (_, optimizer) in enumerate(self.predicate_optimizer_pairs):
            if i not in mapping.values():
                raise ValueError(f"Optimizer {i} ({optimizer.name}) of the CaseOptimizer "
                                 f"claimed no variable; check its predicate.")
        return mapping

    def _split(self, pairs):
        groups = [[] for _ in self.optimizers]
        for grad, variable in pairs:
            if variable.path in self.var_opt_mapping:
                groups[self.var_opt_mapping[variable.path]].append((grad, variable))
        return groups

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        if self.var_opt_mapping is None:
            self.var_opt_mapping = self._claim(variables)
        for optimizer, group in zip(self.optimizers, self._split((None, v) for v in variables)):
            optimizer.build([v for _, v in group])

    @property
    def variables(self):
        return [*self._variables, *(v for opt in self.optimizers for v in opt.variables)]

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        for optimizer, group in zip(self.optimizers,
                                    self._split(zip(grads, trainable_variables))):
            if group:
                optimizer.apply([g for g, _ in group], [v for _, v in group])
        self._iterations.assign_add(1)

    def get_config(self):
        return {
            **super().get_config(),
            "optimizers": [keras.optimizers.serialize(opt)
                           for _, opt in self.predicate_optimizer_pairs],
            "default_optimizer": None if self.default_optimizer is None
            else keras.optimizers.serialize(self.default_optimizer),
            "var_opt_mapping": self.var_opt_mapping,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizers = [keras.optimizers.deserialize(c, custom_objects=custom_objects)
                      for c in config.pop("optimizers")]
        default = config.pop("default_optimizer")
        mapping = config.pop("var_opt_mapping")
        for key in ("learning_rate", "name"):
            config.pop(key, None)
        case = cls(*[(lambda variable: False, opt) for opt in optimizers],
                   default_optimizer=None if default is None
                   else keras.optimizers.deserialize(default, custom_objects=custom_objects))
        case.var_opt_mapping = mapping  # the predicates are not saved: their verdicts are
        return case
