"""Which `tf.distribute` strategy trains, and which process of it writes the outputs.

Example:

    from kbnn.train.strategy import is_chief, make_strategy

    strategy = make_strategy("multi_worker")   # the machines of $TF_CONFIG
    if is_chief(strategy):
        ...                                    # only one process writes files
"""

import tensorflow as tf

__all__ = ["DISTRIBUTE_CHOICES", "is_chief", "make_strategy"]

DISTRIBUTE_CHOICES = ("mirrored", "multi_worker")


def make_strategy(distribute):
    """The strategy for `distribute`: None (the default one), "mirrored" (all local
    devices), "multi_worker" (the machines of TF_CONFIG) or a `tf.distribute.Strategy`.

    Make it once per process, first: multi-worker collectives must be set up before
    TensorFlow starts its runtime, and a second strategy would collide on their keys.
    """
    if distribute is None:
        return tf.distribute.get_strategy()
    if isinstance(distribute, tf.distribute.Strategy):
        return distribute
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"distribute={distribute!r}: use None, 'mirrored', 'multi_worker' "
                     f"or a tf.distribute.Strategy.")


def is_chief(strategy):
    """Whether this process writes the outputs (the chief, or worker 0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())
