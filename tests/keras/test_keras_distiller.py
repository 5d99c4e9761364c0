"""distiq.keras.Distiller: a Keras user's script moves over by its import; distiq's losses inside."""

import os
import runpy
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

pytest.importorskip("keras", reason="the keras extra is not installed (pip install 'distiq[keras]')")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's

import keras  # noqa: E402
from kerasnets import cnn, nhwc  # noqa: E402

import distiq as dq  # noqa: E402
import distiq.keras as dk  # noqa: E402
from distiq.errors import DistiqError  # noqa: E402
from distiq.keras.backend import use_torch_backend  # noqa: E402

# A Keras user's distillation script, as the Keras documentation writes one; only its import changes.
SCRIPT = textwrap.dedent(
    """
    import keras
    import numpy as np
    from keras.distillation import Distiller, FeatureDistillation, LogitsDistillation

    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int64") + 2 * (x[:, :, :4].mean(axis=(1, 2, 3)) > 0)

    def make(width, seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="logits"),
        ])

    teacher, student = make(8, 0), make(2, 1)
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x, y, epochs=1, batch_size=32, verbose=0)

    distiller = Distiller(
        teacher=teacher,
        student=student,
        distillation_losses=[
            LogitsDistillation(temperature=3.0, loss=keras.losses.KLDivergence()),
            FeatureDistillation(loss="mse", teacher_layer_name="logits", student_layer_name="logits"),
        ],
        distillation_loss_weights=[1.0, 0.25],
        student_loss_weight=0.3,
    )
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    keras.utils.set_random_seed(2)
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0).history
    evaluation = distiller.evaluate(x, y, verbose=0, return_dict=True)
    predictions = distiller.predict(x[:5], verbose=0)
    trained_student = distiller.student
    """
)


def run_script(tmp_path, import_line: str) -> dict:
    path = tmp_path / f"script_{abs(hash(import_line))}.py"
    path.write_text(SCRIPT.replace("from keras.distillation import Distiller,", import_line))
    return runpy.run_path(str(path))


def test_keras_script_runs_with_only_the_import_changed(tmp_path):
    keras_run = run_script(tmp_path, "from keras.distillation import Distiller,")
    distiq_run = run_script(tmp_path, "from distiq.keras import Distiller\nfrom keras.distillation import")
    assert isinstance(distiq_run["distiller"], dk.Distiller)
    assert type(keras_run["distiller"]) is keras.distillation.Distiller
    assert distiq_run["history"].keys() == keras_run["history"].keys() >= {"loss", "student_loss"}
    for key, values in keras_run["history"].items():
        np.testing.assert_allclose(distiq_run["history"][key], values, rtol=1e-5, err_msg=key)
    for key, value in keras_run["evaluation"].items():
        assert distiq_run["evaluation"][key] == pytest.approx(value, rel=1e-5), key
    np.testing.assert_allclose(distiq_run["predictions"], keras_run["predictions"], rtol=1e-5, atol=1e-6)
    assert distiq_run["trained_student"] is distiq_run["student"]


def batch(data, n=32):
    x, y = nhwc(data[0])
    return torch.from_numpy(x[:n]), torch.from_numpy(y[:n])


def loss_of(distiller, x, y):
    """The Distiller's combined loss on one batch (the value fit minimises on its first step)."""
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return float(
        distiller.compute_loss(x=x, y=y, y_pred=distiller(x, training=False), training=False).detach()
    )


def test_dkd_in_the_distiller_is_distiqs_dkd_weighted_as_keras_weighs(teacher, data):
    x, y = batch(data)
    student = cnn(2, seed=3, name="student")
    dkd = {"loss": "dkd", "temperature": 4.0, "alpha": 0.5, "beta": 6.0}
    distiller = dk.Distiller(teacher, student, [dkd, "mse"], [1.0, 0.1], student_loss_weight=0.25)
    with torch.no_grad():
        s, t = student(x, training=False), teacher(x, training=False)
    ce = torch.nn.functional.cross_entropy(s, y)
    expected = 0.25 * ce + 0.75 * (dq.losses.dkd(s, t, y, 0.5, 6.0, 4.0) + 0.1 * dq.losses.logit_mse(s, t))
    assert loss_of(distiller, x, y) == pytest.approx(float(expected), rel=1e-5)


def test_default_is_kd_at_temperature_3_equal_to_keras_kl_on_softmaxes(teacher, data):
    x, y = batch(data)
    ours = dk.Distiller(teacher, cnn(2, seed=3, name="student"), student_loss_weight=0.0)
    theirs = keras.distillation.Distiller(
        teacher,
        cnn(2, seed=3, name="student"),
        keras.distillation.LogitsDistillation(temperature=3.0, loss=keras.losses.KLDivergence()),
        student_loss_weight=0.0,
    )
    assert ours.distillation_losses[0].get_config() == {"loss": "kd", "temperature": 3.0}
    with torch.no_grad():
        s, t = ours.student(x, training=False), teacher(x, training=False)
    value = loss_of(ours, x, y)
    assert value == pytest.approx(float(dq.losses.kd(s, t, 3.0)), rel=1e-5)
    assert value == pytest.approx(loss_of(theirs, x, y), rel=1e-4)  # Keras's own KL, computed apart


def test_hard_kd_by_hand_on_fixed_logits():
    """``hard-kd`` through the adapter (teacher first, as Keras passes it) on logits worked by hand.

    Teacher uniform, T = 1, gamma = 1, no disagreement term; labels are class 0 for both samples.
    Sample 1, student [0, 0]: p(true) = 1/2, r = 1/2, KL(u || u) = 0. Sample 2, student [0, 30]:
    p(true) = 1/(1 + e^30) ~ 0, r ~ 1, KL(u || softmax) = -ln 2 + ln(1 + e^30) - 15 ~ 15 - ln 2.
    Weights r / mean(r) = [2/3, 4/3]; the loss is mean(w · KL) = (4/3)(15 - ln 2) / 2.
    """
    loss = dk.DistiqLogits("hard-kd", temperature=1.0, gamma=1.0, disagreement=0.0)
    teacher = torch.zeros(2, 2)
    student = torch.tensor([[0.0, 0.0], [0.0, 30.0]])
    value = loss.compute_loss(teacher, student, target=np.array([[1.0, 0.0], [1.0, 0.0]]))  # one-hot
    assert float(value) == pytest.approx((4 / 3) * (15 - np.log(2)) / 2, rel=1e-5)


def test_hint_term_by_layer_name_trains_its_adapter(teacher, data):
    student = cnn(2, seed=4, name="student")
    hint = {"kind": "hint", "teacher_layer_name": "conv2", "student_layer_name": "conv2"}
    distiller = dk.Distiller(teacher, student, ["kd", hint], [1.0, 0.5])
    term = distiller.distillation_losses[1].term
    assert (term.student_shape, term.teacher_shape) == ((2, 4, 4), (8, 4, 4))  # channels first
    before = term.adapter.weight.detach().clone()
    assert len(distiller.trainable_weights) == len(student.trainable_weights) + 2
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(*nhwc(data[0]), epochs=1, batch_size=64, verbose=0).history
    assert not torch.equal(term.adapter.weight.detach(), before)
    assert history["distillation_loss"][0] > 0


def test_bad_losses_are_refused_in_one_line(teacher):
    student = cnn(2, seed=3, name="student")
    with pytest.raises(DistiqError, match="distillation_losses: unknown distillation loss 'dkdd'.*dkd"):
        dk.Distiller(teacher, student, "dkdd")
    with pytest.raises(DistiqError, match="does not accept option.*gamma"):
        dk.Distiller(teacher, student, {"loss": "dkd", "gamma": 2.0})
    with pytest.raises(DistiqError, match="merge.*several teacher layers"):
        dk.Distiller(
            teacher, student, {"kind": "merge", "teacher_layer_name": "conv", "student_layer_name": "conv"}
        )  # noqa: E501
    with pytest.raises(DistiqError, match="in the student model.*nope"):
        dk.Distiller(
            teacher, student, {"kind": "hint", "teacher_layer_name": "conv", "student_layer_name": "nope"}
        )  # noqa: E501
    with pytest.raises(DistiqError, match="needs the batch's labels"):
        dk.DistiqLogits("dkd").compute_loss(torch.zeros(2, 4), torch.zeros(2, 4))


def test_distiq_keras_selects_the_torch_backend_before_keras_loads(monkeypatch):
    monkeypatch.delitem(sys.modules, "keras")  # as before the user's first import of keras
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    use_torch_backend()
    assert os.environ["KERAS_BACKEND"] == "torch"
    assert keras.backend.backend() == "torch" and isinstance(keras.Sequential(), torch.nn.Module)


def test_another_backend_is_refused_in_one_line(monkeypatch):
    fake = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake)  # as if keras had been imported on tensorflow
    with pytest.raises(DistiqError, match="keras was already imported with the 'tensorflow' backend"):
        use_torch_backend()
    monkeypatch.delitem(sys.modules, "keras")  # not imported yet, but the user's setting names jax
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(DistiqError, match="KERAS_BACKEND=jax: distiq.keras runs Keras on its torch backend"):
        use_torch_backend()
