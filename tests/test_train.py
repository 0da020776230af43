import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from kbnn import train, zoo
from kbnn.train import cli, strategy
from kbnn.data import load_fashion_mnist


def test_cli_writes_model_metrics_and_curves(tmp_path, tiny_fashion_mnist, capsys):
    # A dot in the name is part of it, not a suffix to replace.
    out = tmp_path / "models" / "bnn_lr0.01"
    written = lambda suffix: out.parent / (out.name + suffix)
    assert train.main(["bnn_mlp", "--hidden", "32", "--epochs", "3", "--batch-size", "20",
                       "--lr", "0.01", "--data-dir", str(tiny_fashion_mnist),
                       "--validation-size", "50", "--out", str(out), "--quiet"]) == 0
    assert "bnn_lr0.01: test accuracy" in capsys.readouterr().out
    metrics = json.loads(written(".json").read_text())
    assert metrics["model"] == {"builder": "bnn_mlp", "hidden_units": [32],
                                "binarization": "deterministic", "input_dropout": 0.1,
                                "dropout": 0.2}
    assert metrics["training"]["epochs"] == 3 and metrics["training"]["batch_size"] == 20
    for key in ("loss", "accuracy", "val_accuracy", "val_loss"):
        assert len(metrics["history"][key]) == 3
    assert len(metrics["epoch_seconds"]) == 3 and metrics["peak_memory_mb"] > 100
    assert metrics["params_1bit"] == 784 * 32 + 32 * 10
    # The kept epoch is the best on validation, and the file holds that model.
    assert metrics["best_val_accuracy"] == metrics["history"]["val_accuracy"][
        metrics["best_epoch"] - 1]
    model = keras.models.load_model(written(".keras"))
    x, y = load_fashion_mnist("test", data_dir=tiny_fashion_mnist, as_numpy=True)
    accuracy = np.mean(model.predict(x, verbose=0).argmax(-1) == y)
    assert abs(accuracy - metrics["test_accuracy"]) < 1e-6
    xv, yv = load_fashion_mnist("train", data_dir=tiny_fashion_mnist, validation_size=50,
                                subset="validation", as_numpy=True)
    val_accuracy = np.mean(model.predict(xv, verbose=0).argmax(-1) == yv)
    assert abs(val_accuracy - metrics["best_val_accuracy"]) < 1e-6
    assert written(".png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "bnn_lr0.01.json", "bnn_lr0.01.keras", "bnn_lr0.01.png"]


def test_learns_the_tiny_task_with_augmentation(tmp_path, tiny_fashion_mnist):
    metrics = train.train_and_save(
        "float_mlp", {"hidden_units": (32,)}, tmp_path / "f", epochs=8, batch_size=20,
        lr=0.01, data_dir=tiny_fashion_mnist, validation_size=50, shift=1, verbose=0)
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert metrics["training"]["shift"] == 1


def test_mirrored_strategy_on_two_logical_cpus(tmp_path, tiny_fashion_mnist,
                                               mirrored_strategy):
    assert mirrored_strategy.num_replicas_in_sync == 2
    metrics = train.train_and_save(
        "bnn_mlp", {"hidden_units": (16,), "binarization": "stochastic"}, tmp_path / "m",
        epochs=2, batch_size=20, data_dir=tiny_fashion_mnist, validation_size=50,
        distribute=mirrored_strategy, verbose=0)
    assert metrics["training"]["distribute"] == "MirroredStrategy"
    assert np.isfinite(metrics["history"]["loss"]).all()
    # A teacher from a file is loaded in the same strategy, its logits cached or not.
    zoo.float_mlp((8,)).save(tmp_path / "teacher.keras")
    for flip, logits in ((False, "computed once"), (True, "every step")):
        distilled = train.train_and_save(
            "bnn_mlp", {"hidden_units": (16,)}, tmp_path / f"d{flip}", epochs=1, batch_size=20,
            data_dir=tiny_fashion_mnist, validation_size=50, distribute=mirrored_strategy,
            teacher=tmp_path / "teacher.keras", flip=flip, verbose=0)
        assert distilled["training"]["distillation"]["teacher"] == "teacher.keras"
        assert distilled["training"]["distillation"]["teacher_logits"] == logits
        assert np.isfinite(distilled["history"]["loss"]).all()


def test_distribute_option_names_the_strategies():
    import tensorflow as tf

    assert isinstance(strategy.make_strategy("mirrored"), tf.distribute.MirroredStrategy)
    with pytest.raises(ValueError, match="'mirrored', 'multi_worker'"):
        strategy.make_strategy("tpu")
    assert cli._parser().parse_args(["bnn_mlp", "--distribute", "mirrored"]).distribute \
        == "mirrored"


def test_augment_flips_and_shifts_within_bounds():
    import tensorflow as tf

    image = np.zeros((1, 5, 5, 1), "float32")
    image[0, 2, 0] = 1.0  # one pixel on the left edge
    ds = tf.data.Dataset.from_tensors((image, np.zeros(1, "int32"))).repeat(50)
    seen = {tuple(np.argwhere(x[0, ..., 0])[0]) for x, _ in
            train.augment(ds, flip=True, shift=1, seed=0).as_numpy_iterator()
            if x.any()}
    # Flipped to column 4 or kept at 0, shifted by at most one pixel each way.
    assert seen <= {(r, c) for r in (1, 2, 3) for c in (0, 1, 3, 4)}
    assert any(c >= 3 for _, c in seen) and any(c <= 1 for _, c in seen)


def test_without_validation_trains_on_everything_and_keeps_the_last_epoch(
        tmp_path, tiny_fashion_mnist):
    metrics = train.train_and_save(
        "bnn_mlp", {"hidden_units": (16,)}, tmp_path / "all", epochs=2, batch_size=50,
        data_dir=tiny_fashion_mnist, validation_size=0, verbose=0)
    assert metrics["best_epoch"] == 2 and metrics["best_val_accuracy"] is None
    assert "val_accuracy" not in metrics["history"]
    assert (tmp_path / "all.png").exists()


def test_default_output_is_the_models_dir_never_replaced_and_bad_options_fail(
        tmp_path, tiny_fashion_mnist, monkeypatch, capsys):
    monkeypatch.setenv("KBNN_MODELS_DIR", str(tmp_path / "released"))
    assert train.main(["float_mlp", "--hidden", "8", "--epochs", "1", "--quiet",
                       "--data-dir", str(tiny_fashion_mnist), "--validation-size", "50"]) == 0
    assert sorted(p.name for p in (tmp_path / "released").iterdir()) == [
        "float_mlp_8.json", "float_mlp_8.keras", "float_mlp_8.png"]
    written = (tmp_path / "released" / "float_mlp_8.keras").read_bytes()
    with pytest.raises(SystemExit):  # refused; the model there is kept
        train.main(["float_mlp", "--hidden", "8", "--epochs", "1", "--quiet",
                    "--data-dir", str(tiny_fashion_mnist), "--validation-size", "50"])
    assert "float_mlp_8.keras exists already" in capsys.readouterr().err
    assert (tmp_path / "released" / "float_mlp_8.keras").read_bytes() == written
    with pytest.raises(SystemExit):
        train.main(["float_mlp", "--binarization", "stochastic"])
    assert "float_mlp does not take --binarization" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["float_cnn", "--shortcuts"])
    assert "float_cnn does not take --shortcuts" in capsys.readouterr().err


def test_cli_trains_bnn_cnn_with_shortcuts(tmp_path, tiny_fashion_mnist):
    assert train.main(["bnn_cnn", "--filters", "4", "8", "--dense-units", "8", "--shortcuts",
                       "--epochs", "1", "--quiet", "--data-dir", str(tiny_fashion_mnist),
                       "--validation-size", "50", "--out", str(tmp_path / "cnn")]) == 0
    record = json.loads((tmp_path / "cnn.json").read_text())["model"]
    assert record["shortcuts"] is True and record["filters"] == [4, 8]
    saved = keras.models.load_model(tmp_path / "cnn.keras")
    assert sum(isinstance(l, keras.layers.Add) for l in saved.layers) == 3


def test_only_the_chief_writes():
    import tensorflow as tf

    class Resolver:
        def __init__(self, task_type, task_id, cluster):
            self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

        def cluster_spec(self):
            return tf.train.ClusterSpec(self._cluster)

    class Strategy:
        def __init__(self, *args):
            self.cluster_resolver = Resolver(*args)

    workers = {"worker": ["a:1", "b:1"]}
    assert strategy.is_chief(tf.distribute.get_strategy())
    assert strategy.is_chief(Strategy("worker", 0, workers))
    assert not strategy.is_chief(Strategy("worker", 1, workers))
    assert not strategy.is_chief(Strategy("worker", 0, {**workers, "chief": ["c:1"]}))
    assert strategy.is_chief(Strategy("chief", 0, {**workers, "chief": ["c:1"]}))


def test_released_file_holds_no_optimizer_state(tmp_path, tiny_fashion_mnist):
    import io
    import zipfile

    import h5py

    train.train_and_save("bnn_mlp", {"hidden_units": (16,)}, tmp_path / "m", epochs=1,
                         data_dir=tiny_fashion_mnist, validation_size=50, verbose=0)
    model = keras.models.load_model(tmp_path / "m.keras")
    assert getattr(model, "optimizer", None) is None
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")))
        assert "optimizer" not in weights and "layers" in weights


def test_init_starts_from_a_models_weights_and_rejects_another_architecture(
        tmp_path, tiny_fashion_mnist, capsys):
    first = tmp_path / "first"
    train.train_and_save("bnn_mlp", {"hidden_units": (16,)}, first, epochs=1, batch_size=50,
                         data_dir=tiny_fashion_mnist, validation_size=50, verbose=0)
    assert train.main(["bnn_mlp", "--hidden", "16", "--epochs", "1", "--lr", "1e-12",
                       "--seed", "1", "--data-dir", str(tiny_fashion_mnist),
                       "--validation-size", "50", "--init", f"{first}.keras",
                       "--out", str(tmp_path / "second"), "--quiet"]) == 0
    before = keras.models.load_model(f"{first}.keras")
    after = keras.models.load_model(tmp_path / "second.keras")
    init = json.loads((tmp_path / "second.json").read_text())["training"]["init"]
    assert init["file"] == "first.keras" and init["training"]["epochs"] == 1
    # With a vanishing learning rate only the batch-norm statistics move.
    for old, new in zip(before.weights, after.weights):
        if "moving" not in old.path:
            np.testing.assert_allclose(new.numpy(), old.numpy(), atol=1e-6, err_msg=old.path)
    fresh = zoo.bnn_mlp((16,), seed=1)
    assert fresh.weights[0].path.endswith("kernel")
    assert not np.allclose(fresh.weights[0].numpy(), after.weights[0].numpy())
    assert train.main(["bnn_mlp", "--hidden", "8", "--epochs", "1", "--quiet",
                       "--data-dir", str(tiny_fashion_mnist), "--validation-size", "50",
                       "--init", f"{first}.keras", "--out", str(tmp_path / "third")]) == 1
    assert "same model options" in capsys.readouterr().err
    assert not list(tmp_path.glob("third*"))


def test_ema_validates_and_keeps_the_averaged_weights(tmp_path, tiny_fashion_mnist):
    def run(name, ema):
        return train.train_and_save(
            "bnn_mlp", {"hidden_units": (16,)}, tmp_path / name, epochs=3, batch_size=20,
            lr=0.01, data_dir=tiny_fashion_mnist, validation_size=50, ema=ema, verbose=0)

    plain, zero, averaged = run("plain", None), run("zero", 0.0), run("ema", 0.9)
    assert averaged["training"]["ema"] == 0.9
    # Momentum 0 averages nothing: the same training, number for number.
    assert zero["history"]["val_accuracy"] == plain["history"]["val_accuracy"]
    np.testing.assert_array_equal(
        keras.models.load_model(tmp_path / "zero.keras").get_weights()[0],
        keras.models.load_model(tmp_path / "plain.keras").get_weights()[0])
    # With averaging, the saved model is the averaged one the validation scored.
    model = keras.models.load_model(tmp_path / "ema.keras")
    assert not np.array_equal(model.get_weights()[0],
                              keras.models.load_model(tmp_path / "plain.keras").get_weights()[0])
    xv, yv = load_fashion_mnist("train", data_dir=tiny_fashion_mnist, validation_size=50,
                                subset="validation", as_numpy=True)
    accuracy = np.mean(model.predict(xv, verbose=0).argmax(-1) == yv)
    assert abs(accuracy - averaged["best_val_accuracy"]) < 1e-6


# --- refusing nonsense, failing clearly, never leaving a partial output (issue 21) ----------


@pytest.mark.parametrize("options, message", [
    (["--lr", "nan"], "--lr nan: give a finite learning rate > 0"),
    (["--lr", "-1"], "--lr -1.0: give a finite learning rate > 0"),
    (["--lr", "inf"], "--lr inf: give a finite learning rate > 0"),
    (["--epochs", "0"], "--epochs 0: train for at least 1 epoch"),
    (["--batch-size", "0"], "--batch-size 0: give a batch size >= 1"),
    (["--validation-size", "-5"], "--validation-size -5: give a number of held-out"),
    (["--hidden", "16", "0"], "--hidden: hidden_units=(16, 0): give one or more positive"),
    (["--alpha", "1.5"], "--alpha 1.5: the weight of the distillation term is in [0, 1]"),
    (["--ema", "1"], "--ema 1.0: give a moving-average momentum in [0, 1)"),
    (["--init", "missing.keras"], "--init missing.keras: no such file"),
])
def test_bad_options_exit_2_with_one_line_before_any_work(
        options, message, tmp_path, tiny_fashion_mnist, monkeypatch, capsys):
    monkeypatch.setattr(cli, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["bnn_mlp", *options, "--data-dir", str(tiny_fashion_mnist),
                    "--out", str(tmp_path / "out" / "m")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_or_empty_test_split_exits_2_before_training(
        tmp_path, tiny_fashion_mnist, monkeypatch, capsys):
    from fakes import write_fashion_mnist

    monkeypatch.setattr(cli, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    (tmp_path / "file").write_text("")
    (tmp_path / "m.keras").write_text("read-only")
    (tmp_path / "m.keras").chmod(0o444)
    for out, message in ((tmp_path / "file" / "m", "file is a file, not a directory"),
                         (tmp_path / "m", "m.keras: it is read-only")):
        with pytest.raises(SystemExit) as exit_:
            train.main(["bnn_mlp", "--data-dir", str(tiny_fashion_mnist), "--out", str(out)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"--out {out}: " in err and message in err and err.count("\n") == 1, err
    empty = tmp_path / "empty"
    empty.mkdir()
    write_fashion_mnist(empty, n_test=0)
    with pytest.raises(SystemExit) as exit_:
        train.main(["bnn_mlp", "--data-dir", str(empty), "--out", str(tmp_path / "e")])
    assert exit_.value.code == 2
    assert "the test split holds no images" in capsys.readouterr().err


def test_kbnn_errors_are_one_line_and_verbose_adds_the_traceback(
        tmp_path, tiny_fashion_mnist, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise train.TrainingError("the data went away; point --data-dir at a copy.")

    monkeypatch.setattr(cli, "train_and_save", fail)
    argv = ["bnn_mlp", "--data-dir", str(tiny_fashion_mnist), "--out", str(tmp_path / "m")]
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert err == ("error: the data went away; point --data-dir at a copy.\n"
                   "nothing written.\n")
    assert train.main([*argv, "--verbose"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_nan_loss_stops_training_says_so_and_writes_nothing(
        tmp_path, tiny_fashion_mnist, capsys):
    assert train.main(["float_mlp", "--hidden", "8", "--lr", "1e30", "--epochs", "3",
                       "--batch-size", "50", "--quiet", "--data-dir", str(tiny_fashion_mnist),
                       "--validation-size", "50", "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "the training loss became nan at epoch 1" in err
    assert "lower the learning rate (lr=1e+30)" in err
    assert os.listdir(tmp_path) == ["fashion_mnist"]


def test_the_record_is_strict_json():
    from kbnn.train.record import dumps

    text = dumps({"history": {"val_loss": [0.5, float("nan"), float("inf")]},
                  "test_accuracy": np.float32(0.5)})
    assert json.loads(text, parse_constant=pytest.fail) == {
        "history": {"val_loss": [0.5, None, None]}, "test_accuracy": 0.5}


def test_sigterm_while_saving_leaves_no_partial_file(tmp_path, tiny_fashion_mnist):
    # The model file is half written when SIGTERM arrives: the run exits 143 and leaves
    # nothing in the output directory, not even a hidden staging directory.
    code = f"""
        import os, signal, keras
        from kbnn import train

        def save(self, path, *args, **kwargs):
            open(path, "wb").write(b"half a model")
            os.kill(os.getpid(), signal.SIGTERM)

        keras.Model.save = save
        train.main(["float_mlp", "--hidden", "4", "--epochs", "1", "--quiet",
                    "--data-dir", {str(tiny_fashion_mnist)!r}, "--validation-size", "50",
                    "--out", {str(tmp_path / "out" / "m")!r}])
        """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr
    assert os.listdir(tmp_path / "out") == []


def test_the_command_line_hides_tensorflow_start_up_lines_unless_verbose(
        tmp_path, tiny_fashion_mnist):
    def run(*extra):
        return subprocess.run(
            [sys.executable, "-m", "kbnn.train", "float_mlp", "--hidden", "4", "--epochs", "1",
             "--quiet", "--data-dir", str(tiny_fashion_mnist), "--validation-size", "50",
             "--out", str(tmp_path / "m"), *extra],
            capture_output=True, text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})

    quiet = run()
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("training float_mlp for 1 epochs")
    noise = ("I0000", "W0000", "E0000", "oneDNN", "cuda", "absl::InitializeLog")
    assert not [line for line in quiet.stderr.splitlines() if any(n in line for n in noise)]
    verbose = run("--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "absl::InitializeLog" in verbose.stderr or "I0000" in verbose.stderr


def test_curves_follow_the_chain_of_cycles_and_replot_from_the_json(tmp_path):
    from kbnn.train.record import curves_title, cycle_chain, replot

    history = {"loss": [1.0, 0.8], "accuracy": [0.5, 0.6], "val_loss": [1.1, 0.9],
               "val_accuracy": [0.4, None]}
    first = {"epochs": 3, "init": None}  # its JSON is gone: only its settings are known
    second = {"name": "cycle2", "training": {"epochs": 2, "init": {
        "file": "cycle1.keras", "training": first}}, "history": history, "best_epoch": 1}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "cycle2.json").write_text(json.dumps(second))
    final = {"name": "bnn_cnn_deterministic", "test_accuracy": 0.93, "best_epoch": 2,
             "training": {"epochs": 2, "init": {"file": "cycle2.keras",
                                                "training": second["training"]}},
             "history": history}
    (tmp_path / "bnn_cnn_deterministic.json").write_text(json.dumps(final))
    chain = cycle_chain(final, [tmp_path / "runs"])
    assert [(c is not None and c["name"], t["epochs"]) for c, t in chain] == [
        (False, 3), ("cycle2", 2), ("bnn_cnn_deterministic", 2)]
    assert [t["epochs"] for _, t in cycle_chain(final)] == [3, 2, 2]  # settings recorded
    assert curves_title(final, chain) == \
        "bnn_cnn_deterministic, 3 cycles (7 epochs): test accuracy 93.00%"
    png = replot(tmp_path / "bnn_cnn_deterministic.json", search=[tmp_path / "runs"])
    assert png == tmp_path / "bnn_cnn_deterministic.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bnn_cnn_deterministic.json", "bnn_cnn_deterministic.png", "runs"]


def test_steps_per_execution_and_precision_reach_the_model_and_the_record(
        tmp_path, tiny_fashion_mnist):
    record = train.train_and_save(
        "bnn_mlp", {"hidden_units": (16,)}, tmp_path / "m", epochs=1, batch_size=20,
        data_dir=tiny_fashion_mnist, validation_size=50, steps_per_execution=3,
        precision="bfloat16", verbose=0)
    assert record["training"]["steps_per_execution"] == 3
    assert 0 < record["training_memory_mb"] < record["peak_memory_mb"]
    assert record["training"]["precision"] == "bfloat16"
    model = keras.models.load_model(tmp_path / "m.keras")
    assert [layer.compute for layer in model.layers if hasattr(layer, "compute")] == \
        ["bfloat16", "bfloat16"]
    assert train.Settings().steps_per_execution == 50
    assert train.Settings().precision == "auto"


@pytest.mark.parametrize("options, message", [
    (["--steps-per-execution", "0"], "--steps-per-execution 0: give a number of training "
                                     "steps per call >= 1"),
    (["--precision", "float16"], "argument --precision: invalid choice: 'float16'"),
])
def test_bad_step_options_exit_2_naming_them(options, message, tmp_path, tiny_fashion_mnist,
                                            monkeypatch, capsys):
    monkeypatch.setattr(cli, "train_and_save", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit) as exit_:
        train.main(["bnn_mlp", *options, "--data-dir", str(tiny_fashion_mnist),
                    "--out", str(tmp_path / "m")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_training_memory_is_what_fit_adds_to_the_process():
    from kbnn.train.callbacks import TrainingMemory

    held = []

    class Allocate(keras.callbacks.Callback):  # 300 MiB held from the first batch to the end
        def on_train_batch_end(self, batch, logs=None):
            if not held:
                held.append(np.ones(300 * 2**20, np.uint8))

        def on_train_end(self, logs=None):
            held.clear()

    model = zoo.float_mlp((8,))
    model.compile("adam", "sparse_categorical_crossentropy")
    memory = TrainingMemory()
    model.fit(np.zeros((40, 28, 28, 1), "float32"), np.zeros(40, "int32"), batch_size=10,
              callbacks=[Allocate(), memory], verbose=0)
    # The 300 MiB, less what the process frees during the fit (a few MiB: 297.4 once in
    # CI), plus tracing the tiny model's step; not the process's whole RSS (> 700 MiB).
    assert 280 <= memory.training_mb < 600
    assert memory.peak_mb == pytest.approx(memory.before_mb + memory.training_mb)
