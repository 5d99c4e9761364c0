"""The one registry: duplicates raise, and a misspelt name is bad input (DistiqError) on every path."""

from __future__ import annotations

import pytest
import torch

import distiq as dq
from distiq.distill.logits import make_logit_loss
from distiq.errors import DistiqError
from distiq.registry import Registry


def make_registry() -> Registry:
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    reg.register("beta")(lambda: 2)
    return reg


def test_unknown_name_names_kind_name_closest_and_known():
    with pytest.raises(DistiqError) as info:
        make_registry().get("alpah")
    assert str(info.value) == "unknown widget 'alpah' (did you mean 'alpha'?); known: alpha, beta"
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working


def test_unknown_name_without_a_close_match_has_no_hint():
    with pytest.raises(DistiqError) as info:
        make_registry().get("zzzzzz")
    assert str(info.value) == "unknown widget 'zzzzzz'; known: alpha, beta"


def test_unhashable_name_is_bad_input_too():
    with pytest.raises(DistiqError, match="unknown widget"):
        make_registry().get(["alpha"])  # type: ignore[arg-type]


def test_duplicate_name_raises():
    reg = make_registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: 3)
    assert reg.get("alpha")() == 1


def _mlp() -> torch.nn.Module:
    return dq.models.create("mlp", image_size=8, hidden=[8])


@pytest.mark.parametrize(
    ("lookup", "bad", "close"),
    [
        (lambda: dq.data.load("digitz"), "digitz", "digits"),
        (lambda: dq.data.resolve("digitz"), "digitz", "digits"),
        (
            lambda: dq.evaluate(_mlp(), dq.data.load("digits", "test"), metrics=["acuracy"]),
            "acuracy",
            "accuracy",
        ),
        (lambda: dq.calibrate(torch.randn(64), method="klx"), "klx", None),
        (lambda: dq.quantize(_mlp(), None, mode="dynamic", method="minmaz"), "minmaz", None),
        (lambda: make_logit_loss("kdd"), "kdd", "kd"),
        (lambda: dq.distill(_mlp(), _mlp(), dq.data.load("digits"), loss="kdd", epochs=1), "kdd", "kd"),
        (lambda: dq.prune(_mlp(), 0.3, structured=True, importance="l3"), "l3", None),
        (lambda: dq.models.create("mlpp"), "mlpp", None),
    ],
    ids=["dataset", "resolve", "metric", "calibrate", "quantize", "loss", "distill", "importance", "model"],
)
def test_every_lookup_of_a_misspelt_name_raises_distiq_error(lookup, bad, close):
    with pytest.raises(DistiqError) as info:
        lookup()
    message = str(info.value)
    assert repr(bad) in message and "\n" not in message
    if close is not None:
        assert f"did you mean {close!r}" in message
