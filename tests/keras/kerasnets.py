"""Tiny seeded Keras models and generated images shared by the tests of the keras extra."""

import numpy as np
import torch

from distiq.data.arrays import ArrayDataset

SIDE, CLASSES = 8, 4


def squares(n: int, seed: int = 0) -> ArrayDataset:
    """``[n, 1, 8, 8]`` images, class k = a bright 3x3 square in quadrant k plus noise (separable)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0.0, 0.3, (n, 1, SIDE, SIDE)).astype(np.float32)
    for i, k in enumerate(y):
        r, c = (k // 2) * 4, (k % 2) * 4
        x[i, 0, r : r + 3, c : c + 3] += 1.5
    return ArrayDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)), name="squares")


def nhwc(data: ArrayDataset) -> tuple[np.ndarray, np.ndarray]:
    """The images as a Keras user feeds them: channels last."""
    return data.x.permute(0, 2, 3, 1).numpy(), data.y.numpy()


def cnn(width: int, seed: int, name: str, classes: int = CLASSES):
    """A small channels-last Keras CNN giving logits (a Sequential with named layers)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
            layers.MaxPooling2D(name="pool"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name="conv2"),
            layers.Flatten(name="flatten"),
            layers.Dense(classes, name="logits"),
        ],
        name=name,
    )


def fit(model, data: ArrayDataset, epochs: int = 4, lr: float = 1e-2):
    """``model`` compiled and trained the Keras way on channels-last copies of ``data``."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(*nhwc(data), epochs=epochs, batch_size=32, verbose=0)
    return model
