"""Train a compiled model on the machines of MultiWorkerMirroredStrategy, in a loop of our own.

Keras 3.15's `Model.fit` and `evaluate` stop under `tf.distribute.MultiWorkerMirroredStrategy`
with more than one worker (keras-team/keras#20585: they reduce the (x, y) batch as one nest
and scalar metrics along axis 0, which the strategy refuses), so `kbnn.train` trains there
with `fit` below: the model's own loss (`model.compute_loss`), optimizer and Keras callbacks,
each global batch split between the replicas, and the epoch's loss and accuracy summed over
all of them. The same code runs under any strategy, so this example runs in one process:

>>> import keras, tensorflow as tf
>>> from kbnn.train import multi_worker
>>> strategy = tf.distribute.get_strategy()  # MultiWorkerMirroredStrategy() on each worker
>>> x, y = np.random.rand(64, 28, 28, 1).astype("float32"), np.arange(64) % 10
>>> train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
>>> with strategy.scope():
...     model = kbnn.zoo.bnn_mlp((16,))
...     model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = multi_worker.fit(model, strategy, train, train, epochs=2, verbose=0)
>>> sorted(history.history), len(history.history["loss"])
(['accuracy', 'loss', 'val_accuracy', 'val_loss'], 2)
>>> loss, accuracy = multi_worker.evaluate(model, strategy, train)  # as Model.evaluate

Every worker runs the same program on the same dataset and keeps its share of each batch
(tf.data's DATA auto-sharding), so a shuffled dataset needs the same seed on all of them.
"""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["evaluate", "fit"]


def fit(model, strategy, train, val=None, *, epochs, callbacks=(), verbose=1):
    """Train `model` (compiled in `strategy.scope()`) for `epochs`; return its History.

    `train` and `val` are datasets of global `(x, y)` batches with integer class labels.
    `callbacks` see the logs `Model.fit` gives them (loss and accuracy per batch and epoch,
    val_loss and val_accuracy per epoch), and `model.stop_training` ends the training
    after the batch that set it, on every worker alike since all see the same logs.
    A last batch with fewer examples than replicas is skipped: a replica without
    examples would make batch normalization's statistics NaN (as in `Model.fit`).
    """
    replicas = strategy.num_replicas_in_sync
    train_batches = _distribute(
        strategy, train.filter(lambda *batch: tf.shape(batch[-1])[0] >= replicas))
    val_batches = _distribute(strategy, val)
    with strategy.scope():  # its slots are distributed variables, made before the steps
        model.optimizer.build(model.trainable_variables)
    steps = getattr(model, "steps_per_execution", 1)  # batches per call, as compiled
    train_step = _step(strategy, model, training=True, steps=steps)
    val_step = _step(strategy, model, steps=steps)
    average_statistics = _replica_average(strategy, model.non_trainable_weights)
    callbacks = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=int(train.cardinality()))
    model.stop_training, logs = False, {}
    callbacks.on_train_begin()
    for epoch in range(epochs):
        callbacks.on_epoch_begin(epoch)
        batches, sums, done = iter(train_batches), np.zeros(3), 0
        while not model.stop_training:
            callbacks.on_train_batch_begin(done)
            added, taken = train_step(batches)
            if taken:
                sums, done = sums + added, done + taken
                logs = _logs(sums)
                callbacks.on_train_batch_end(done - 1, logs)
            if taken < steps:
                break
        average_statistics()  # validation, callbacks and the result see one model
        if val_batches is not None:
            callbacks.on_test_begin()  # e.g. SwapEMAWeights validates the averaged weights
            val_logs = _logs(_summed(val_step, val_batches))
            callbacks.on_test_end(val_logs)
            logs = {**logs, **{f"val_{name}": value for name, value in val_logs.items()}}
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)  # as Model.fit
    callbacks.on_train_end(logs)
    return model.history


def evaluate(model, strategy, dataset):
    """[loss, accuracy] of `model` over `dataset`, as `Model.evaluate` returns them,
    with the batches split between the replicas of `strategy`."""
    steps = getattr(model, "steps_per_execution", 1)
    logs = _logs(_summed(_step(strategy, model, steps=steps), _distribute(strategy, dataset)))
    return [logs["loss"], logs["accuracy"]]


def _distribute(strategy, dataset):
    """`dataset` split by element between the workers (it is not read from files)."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def _summed(step, batches):
    """The sums of `step` over all `batches`."""
    batches, sums, taken = iter(batches), np.zeros(3), None
    while taken is None or taken == step.steps:
        added, taken = step(batches)
        sums += added
    return sums


def _logs(sums):
    loss, correct, count = sums
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1)}


def _step(strategy, model, *, training=False, steps=1):
    """A function of an iterator of global batches that runs up to `steps` of them in one
    tf.function call: their (loss sum, correct, examples) over all replicas, and how many
    it ran (fewer than `steps` at the end of the data).

    With `training`, each is one optimizer step. Keras' `compute_loss` divides a replica's
    mean loss by the number of replicas and its optimizer, called in a replica context,
    all-reduces (sums) the gradients: the mean gradient of the global batch.
    """
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():  # each replica adds to its own copy; a read sums them
        sums = tf.Variable(tf.zeros(3), trainable=False,
                           synchronization=tf.VariableSynchronization.ON_READ,
                           aggregation=tf.VariableAggregation.SUM)

    def on_replica(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=training)
            loss = model.compute_loss(x, y, y_pred, training=training)
            scaled = model.optimizer.scale_loss(loss) if training else loss
        if training:
            gradients = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        labels = tf.reshape(tf.cast(y, "int64"), [-1])
        count = tf.cast(tf.size(labels), "float32")
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(y_pred, -1), labels), "float32"))
        loss = tf.where(count > 0, tf.cast(loss, "float32") * replicas * count, 0.0)
        sums.assign_add(tf.stack([loss, correct, count]))  # no examples: adds 0

    @tf.function
    def run(iterator):
        strategy.run(lambda: sums.assign(tf.zeros(3)))
        taken = tf.constant(0)
        for _ in tf.range(steps):
            batch = iterator.get_next_as_optional()  # agreed by all workers
            if not batch.has_value():
                break
            strategy.run(on_replica, args=batch.get_value())
            taken += 1
        return sums.read_value(), taken  # one all-reduce a call, not one a step

    def step(iterator):
        added, taken = run(iterator)
        return added.numpy(), int(taken)

    step.steps = steps
    return step


def _replica_average(strategy, variables):
    """A function that sets each of `variables` to its mean over the replicas.

    Batch normalization's moving statistics are mirrored variables that each replica
    updates from its own batches (aggregation "none"), so the workers' copies drift
    apart. Their mean is the moving average of the replicas' batch means: the moving
    mean of the global batches when the replicas' batches are the same size.
    """
    variables = [v for v in variables if "float" in v.dtype]

    def on_replica():
        context = tf.distribute.get_replica_context()
        # Read through tf.identity: a read of a variable has no device, which a
        # collective needs (MultiWorkerMirroredStrategy: "destinations can not be empty").
        values = [tf.identity(variable.value) for variable in variables]
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN, values)
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    @tf.function
    def average():
        strategy.run(on_replica)

    return average if variables else lambda: None
