"""Which `tf.distribute` strategy trains, and which process of it writes the outputs.

Example:

    from kbnn.train.strategy import is_chief, is_multi_worker, make_strategy

    strategy = make_strategy("multi_worker")   # the machines of $TF_CONFIG
    if is_chief(strategy):
        ...                                    # only one process writes files
    is_multi_worker(strategy)                  # several processes: kbnn.train.multi_worker
"""

import functools

import tensorflow as tf

__all__ = ["DISTRIBUTE_CHOICES", "is_chief", "is_multi_worker", "make_strategy"]

DISTRIBUTE_CHOICES = ("mirrored", "multi_worker")


def make_strategy(distribute):
    """The strategy for `distribute`: None (the default one), "mirrored" (all local
    devices), "multi_worker" (the machines of TF_CONFIG) or a `tf.distribute.Strategy`.

    Make it first: multi-worker collectives must be set up before TensorFlow starts
    its runtime. "multi_worker" gives the same strategy at every call of a process, as
    a second one would collide on the keys of its collectives.
    """
    if distribute is None:
        return tf.distribute.get_strategy()
    if isinstance(distribute, tf.distribute.Strategy):
        return distribute
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        return _multi_worker_strategy()
    raise ValueError(f"distribute={distribute!r}: use None, 'mirrored', 'multi_worker' "
                     f"or a tf.distribute.Strategy.")


@functools.cache
def _multi_worker_strategy():
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy):
    """Whether this process writes the outputs (the chief, or worker 0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return (resolver.task_type == "worker" and resolver.task_id == 0
            and "chief" not in resolver.cluster_spec().as_dict())


def is_multi_worker(strategy):
    """Whether `strategy` spans several processes, where Keras' `fit` cannot train
    (keras-team/keras#20585) and `kbnn.train.multi_worker` trains instead."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return False
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1
