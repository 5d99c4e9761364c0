"""Fixtures of the keras extra's tests: tiny, seeded, generated.

Keras reads ``KERAS_BACKEND`` when first imported; distiq.keras selects torch, and so does this file,
before any test module imports Keras (each skips when the extra is not installed).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest  # noqa: E402
from kerasnets import cnn, fit, squares  # noqa: E402


@pytest.fixture(scope="session")
def data():
    return squares(256, seed=0), squares(128, seed=1)


@pytest.fixture(scope="session")
def teacher(data):
    """A Keras teacher trained for a few epochs on the generated data (well above chance)."""
    return fit(cnn(8, seed=0, name="teacher"), data[0])
