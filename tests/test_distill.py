import json

import keras
import numpy as np
import pytest

from kbnn import train, zoo
from kbnn.distill import Distiller, distillation_loss, with_teacher_logits


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_distillation_loss_is_the_mean_kl_of_softened_predictions_times_t_squared():
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(2, 6, 10)) * 3
    for t in (1.0, 2.0, 4.0):
        p, q = _softmax(teacher / t), _softmax(student / t)
        expected = np.mean(np.sum(p * np.log(p / q), -1)) * t * t
        got = float(distillation_loss(teacher.astype("float32"), student.astype("float32"), t))
        assert got == pytest.approx(expected, rel=1e-5)
    assert float(distillation_loss(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)


def _tiny_pair():
    keras.utils.set_random_seed(1)
    student = zoo.bnn_mlp((8,), input_dropout=0.0, dropout=0.0)
    teacher = zoo.float_mlp((8,), input_dropout=0.0, dropout=0.0)
    return student, teacher


def test_loss_mixes_labels_and_teacher_while_training_and_is_plain_in_evaluation():
    student, teacher = _tiny_pair()
    distiller = Distiller(student, teacher, alpha=0.25, temperature=3.0)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller.compile("adam", ce)
    x = np.random.default_rng(2).random((5, 28, 28, 1)).astype("float32")
    y = np.array([0, 3, 9, 1, 1])
    y_pred = distiller(x, training=False)
    hard = float(ce(y, y_pred))
    soft = float(distillation_loss(teacher(x, training=False), y_pred, 3.0))
    assert soft > 0.01
    train_loss = float(distiller.compute_loss(x, y, y_pred, training=True))
    assert train_loss == pytest.approx(0.75 * hard + 0.25 * soft, rel=1e-5)
    assert float(distiller.compute_loss(x, y, y_pred, training=False)) == pytest.approx(hard)


def test_fit_trains_the_student_and_leaves_the_teacher_alone():
    student, teacher = _tiny_pair()
    frozen = [w.copy() for w in teacher.get_weights()]
    before = [w.copy() for w in student.get_weights()]
    distiller = Distiller(student, teacher)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(3)
    distiller.fit(rng.random((40, 28, 28, 1)), rng.integers(0, 10, 40), epochs=1,
                  batch_size=10, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(frozen, teacher.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))
    x = rng.random((3, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(distiller.predict(x, verbose=0), student.predict(x, verbose=0))


def test_bad_arguments_say_what_to_use():
    student, teacher = _tiny_pair()
    with pytest.raises(ValueError, match=r"alpha=1.5.*\[0, 1\]"):
        Distiller(student, teacher, alpha=1.5)
    with pytest.raises(ValueError, match="positive temperature"):
        Distiller(student, teacher, temperature=0)
    other = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="same classes"):
        Distiller(student, other)


def test_cli_distills_from_a_saved_teacher(tmp_path, tiny_fashion_mnist):
    teacher_path = tmp_path / "teacher.keras"
    zoo.float_mlp((16,)).save(teacher_path)
    out = tmp_path / "student"
    assert train.main(["bnn_mlp", "--hidden", "16", "--epochs", "2", "--batch-size", "20",
                       "--data-dir", str(tiny_fashion_mnist), "--validation-size", "50",
                       "--teacher", str(teacher_path), "--alpha", "0.7",
                       "--temperature", "3", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["training"]["distillation"] == {
        "teacher": "teacher.keras", "alpha": 0.7, "temperature": 3.0,
        "teacher_logits": "computed once"}  # no augmentation: the teacher ran once
    saved = keras.models.load_model(out.with_suffix(".keras"))
    assert saved.name == "bnn_mlp_16_deterministic"  # the student alone, not the distiller
    assert not any("distiller" in layer.name for layer in saved.layers)


def test_train_and_save_takes_a_teacher_model(tmp_path, tiny_fashion_mnist):
    teacher = zoo.float_mlp((16,), name="my_teacher")
    metrics = train.train_and_save(
        "bnn_mlp", {"hidden_units": (16,)}, tmp_path / "s", epochs=1, batch_size=20,
        data_dir=tiny_fashion_mnist, validation_size=50, teacher=teacher, verbose=0)
    assert metrics["training"]["distillation"]["teacher"] == "my_teacher"
    flipped = train.train_and_save(
        "bnn_mlp", {"hidden_units": (16,)}, tmp_path / "f", epochs=1, batch_size=20,
        data_dir=tiny_fashion_mnist, validation_size=50, teacher=teacher, flip=True, verbose=0)
    assert flipped["training"]["distillation"]["teacher_logits"] == "every step"


def test_cached_teacher_logits_give_the_same_loss_and_the_same_training():
    student, teacher = _tiny_pair()
    rng = np.random.default_rng(4)
    x = rng.random((40, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 40)
    ds = with_teacher_logits(teacher, x, y, batch_size=10, shuffle=False)
    assert int(ds.cardinality()) == 4
    cached = np.concatenate([t for (_, t), _ in ds.as_numpy_iterator()])
    np.testing.assert_allclose(cached, teacher.predict(x, verbose=0), rtol=1e-6, atol=1e-6)

    distiller = Distiller(student, teacher, alpha=0.4, temperature=2.0)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y_pred = distiller((x, cached), training=False)
    np.testing.assert_array_equal(y_pred, distiller(x, training=False))
    assert float(distiller.compute_loss((x, cached), y, y_pred)) == pytest.approx(
        float(distiller.compute_loss(x, y, y_pred)), rel=1e-6)

    # Training on cached logits moves the student exactly as running the teacher does.
    twin = zoo.bnn_mlp((8,), input_dropout=0.0, dropout=0.0)
    twin.set_weights(student.get_weights())
    online = Distiller(twin, teacher, alpha=0.4, temperature=2.0)
    online.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(ds, epochs=1, verbose=0)
    online.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(student.get_weights(), twin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(student.get_weights()[0], _tiny_pair()[0].get_weights()[0])


def test_both_loss_terms_are_divided_alike_among_replicas(mirrored_strategy):
    student, teacher = _tiny_pair()
    distiller = Distiller(student, teacher, alpha=0.5, temperature=2.0)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(4).random((6, 28, 28, 1)).astype("float32")
    y = np.array([0, 3, 9, 1, 1, 2])
    y_pred = distiller(x, training=False)
    whole = float(distiller.compute_loss(x, y, y_pred, training=True))
    per_replica = mirrored_strategy.run(
        lambda: distiller.compute_loss(x, y, y_pred, training=True))
    shares = [float(v) for v in mirrored_strategy.experimental_local_results(per_replica)]
    assert shares == pytest.approx([whole / 2, whole / 2], rel=1e-6)
