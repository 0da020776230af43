"""kbnn.train.multi_worker: the loop steps as `Model.fit` does; two worker processes on
127.0.0.1 train one model with `--distribute multi_worker`."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import kbnn
from fakes import write_fashion_mnist
from kbnn import train
from kbnn.train import cli, multi_worker

# Runs `python -m kbnn.train ARGS` in a worker, saving its model's weights before and
# after `kbnn.train.multi_worker.fit` to WEIGHTS (an .npz file).
WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from kbnn.train import cli, multi_worker

    weights, args = sys.argv[1], sys.argv[2:]
    fit = multi_worker.fit

    def fit_and_save_weights(model, *a, **k):
        before = model.get_weights()
        history = fit(model, *a, **k)
        np.savez(weights, *before, *model.get_weights())
        return history

    multi_worker.fit = fit_and_save_weights
    sys.exit(cli.main(args))
""")


# Keras 3.15 runs several steps per call on one replica only (see kbnn.train.fit).
@pytest.mark.parametrize("replicas, steps_per_execution", [(1, 3), (2, 1)])
def test_the_loop_steps_and_calls_back_as_model_fit(replicas, steps_per_execution,
                                                    mirrored_strategy):
    strategy = mirrored_strategy if replicas == 2 else tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x, y = rng.random((41, 28, 28, 1), "float32"), np.arange(41) % 10
    batches = lambda n: tf.data.Dataset.from_tensor_slices((x[:n], y[:n])).batch(20)

    def trained(ours):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            model = kbnn.zoo.bnn_mlp((16,), input_dropout=0.0, dropout=0.0)
            model.compile(keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.5),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"], steps_per_execution=steps_per_execution)
        # The validation and the result use the averaged weights, as kbnn.train's --ema.
        # Batch normalization's moving statistics are per replica in Model.fit (it keeps
        # the first replica's) and averaged over replicas here: with two, validation
        # would differ, so it is left out there.
        callbacks = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
        val = batches(40) if replicas == 1 else None
        if ours:  # on two replicas, a last batch of one example (41) is skipped
            history = multi_worker.fit(model, strategy, batches(39 + replicas), val,
                                       epochs=2, callbacks=callbacks, verbose=0)
        else:
            history = model.fit(batches(40), validation_data=val, epochs=2,
                                callbacks=callbacks, verbose=0, shuffle=False)
        return model, history.history

    (ours, our_history), (keras_model, keras_history) = trained(True), trained(False)
    assert sorted(our_history) == sorted(keras_history)
    keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if replicas == 1 else [])
    for key in keys:
        np.testing.assert_allclose(our_history[key], keras_history[key], rtol=1e-5)
    weights = "weights" if replicas == 1 else "trainable_weights"
    for a, b in zip(getattr(ours, weights), getattr(keras_model, weights)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    # Evaluation counts every example, a replica without any adding nothing.
    logits = ours(x, training=False)
    loss, accuracy = multi_worker.evaluate(ours, strategy, batches(41))
    assert accuracy == np.mean(np.argmax(logits, -1) == y)
    np.testing.assert_allclose(loss, np.mean(keras.losses.sparse_categorical_crossentropy(
        y, logits, from_logits=True)), rtol=1e-5)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait(processes, timeout):
    """The exit codes of `processes`; all are killed once one fails (the others would wait
    for it in their next collective) or `timeout` seconds pass (None for those killed)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes]
            if None not in codes or any(code for code in codes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes


def test_two_workers_train_the_same_weights_and_only_the_chief_writes(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_fashion_mnist(data, n_train=160, n_test=40)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers, logs = [], [tmp_path / f"log{index}" for index in range(2)]
    for index in range(2):
        # Without --out each writes to its models directory, whose default file name
        # needs a model built before training (the strategy must come first).
        env = {**os.environ, "KBNN_MODELS_DIR": str(tmp_path / f"models{index}"),
               "TF_CONFIG": json.dumps(
                   {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        args = ["bnn_mlp", "--hidden", "16", "--epochs", "1", "--batch-size", "20",
                "--validation-size", "40", "--data-dir", str(data), "--distribute",
                "multi_worker", "--quiet"]
        with open(logs[index], "w") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path / f"weights{index}.npz"), *args],
                env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = _wait(workers, timeout=240)
    outputs = [log.read_text() for log in logs]
    for index, code in enumerate(codes):
        assert code == 0, f"worker {index} exited with {code}:\n{outputs[index]}"
    assert "; wrote " in outputs[0] and "; the chief writes " in outputs[1]
    saved = [np.load(tmp_path / f"weights{index}.npz") for index in range(2)]
    count = len(saved[0].files) // 2
    before = [[w[f"arr_{i}"] for i in range(count)] for w in saved]
    after = [[w[f"arr_{i}"] for i in range(count, 2 * count)] for w in saved]
    # Both started from the same weights, took the same (all-reduced) steps, and moved.
    for b0, b1, a0, a1 in zip(*before, *after):
        np.testing.assert_array_equal(b0, b1)
        np.testing.assert_array_equal(a0, a1)
    assert any(not np.array_equal(b, a) for b, a in zip(before[0], after[0]))
    # Only the chief (worker 0) wrote, and its file holds the trained weights.
    name = "bnn_mlp_16_deterministic"
    assert sorted(p.name for p in (tmp_path / "models0").iterdir()) == [
        f"{name}.json", f"{name}.keras", f"{name}.png"]
    assert not (tmp_path / "models1").exists()
    model = keras.models.load_model(tmp_path / "models0" / f"{name}.keras")
    for ours, theirs in zip(model.get_weights(), after[1]):
        np.testing.assert_array_equal(ours, theirs)
    record = json.loads((tmp_path / "models0" / f"{name}.json").read_text())
    assert record["training"]["distribute"] == "multi_worker"
    assert len(record["history"]["loss"]) == 1 and np.isfinite(record["history"]["loss"]).all()
    assert 0 <= record["test_accuracy"] <= 1


def test_several_workers_are_accepted_but_not_with_jit(tmp_path, tiny_fashion_mnist,
                                                       monkeypatch, capsys):
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
        "task": {"type": "worker", "index": 0}}))
    assert train.Settings(distribute="multi_worker").distribute == "multi_worker"
    monkeypatch.setattr(cli, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["bnn_mlp", "--distribute", "multi_worker", "--jit", "--data-dir",
                    str(tiny_fashion_mnist), "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2
    assert "--jit True: kbnn.train's multi-worker loop" in capsys.readouterr().err
