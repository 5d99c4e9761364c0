"""Weight sharing: codebooks of at most 2**bits values, pruned zeros kept, k-means as scikit-learn's,
grouped centroid gradients, fine-tuning through the engine, and the shared file format."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from torch import nn

import distiq as dq
from distiq.errors import DataError, DistiqError
from distiq.prune import fold_masks_, prune_magnitude_, share_weights, sparse
from distiq.prune.entropy import huffman_decode, huffman_encode, huffman_lengths
from distiq.prune.sharing import (
    attach_sharing_,
    codebook_for,
    fold_sharing_,
    initial_centroids,
    kmeans_1d,
    shared_layers,
)
from distiq.prune.sparse_format import effective_state


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


def pruned_net(amount: float = 0.8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 32), nn.ReLU(), nn.Linear(32, 10)
    )
    prune_magnitude_(model, amount)
    return fold_masks_(model)


@pytest.fixture(scope="module")
def digits():
    return dq.data.load("digits", "train"), dq.data.load("digits", "test")


@pytest.mark.parametrize("n_bits", [2, 3, 5, 8])
@pytest.mark.parametrize("init", ["linear", "density"])
def test_codebook_size_and_zeros(n_bits, init):
    model = pruned_net(0.7)
    before = {n: m.weight.detach().clone() for n, m in model.named_modules() if hasattr(m, "weight")}
    shared = share_weights(model, n_bits, init=init)
    assert set(shared_layers(shared)) == set(before)
    for name, module in shared_layers(shared).items():
        w = module.weight
        assert torch.unique(w[w != 0]).numel() <= 2**n_bits
        assert len(module.weight_codebook) <= 2**n_bits
        assert torch.equal(w == 0, before[name] == 0)  # pruned stay zero, and nothing else becomes zero
        assert bits(w[before[name] == 0]).eq(0).all()  # +0.0, never -0.0
        # each weight went to its nearest centroid
        book = module.weight_codebook.detach()
        nz = before[name][before[name] != 0]
        assert torch.allclose(w[w != 0], book[(nz[:, None] - book[None]).abs().argmin(1)])
    assert not shared_layers(model)  # the input model is left as it was
    assert all(torch.equal(m.weight, before[n]) for n, m in model.named_modules() if n in before)


def test_initial_centroids():
    v = np.array([-2.0, -1.0, 0.5, 1.0, 4.0])
    assert np.allclose(initial_centroids(v, 4, "linear"), [-2.0, 0.0, 2.0, 4.0])
    assert np.allclose(initial_centroids(v, 2, "density"), np.quantile(v, [0.25, 0.75]))
    with pytest.raises(DistiqError, match="init: expected one of linear, density"):
        initial_centroids(v, 4, "random")


@pytest.mark.parametrize("init", ["linear", "density"])
def test_kmeans_agrees_with_sklearn(init):
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-0.3, 0.05, 700), rng.normal(0.25, 0.04, 500), rng.normal(0.6, 0.1, 50)])
    start = initial_centroids(np.sort(v), 8, init)
    centroids, labels = kmeans_1d(v, start)
    km = KMeans(8, init=start[:, None], n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(v[:, None])
    order = np.argsort(km.cluster_centers_[:, 0])
    assert np.allclose(centroids, km.cluster_centers_[order, 0], rtol=0, atol=1e-12)
    assert np.array_equal(labels, np.argsort(order)[km.labels_])


def test_kmeans_relocates_empty_clusters():
    v = np.array([-1.0, -0.9, -0.8, 0.8, 0.9, 1.0, 3.0])
    centroids, labels = kmeans_1d(v, np.linspace(-1, 3, 5))  # 0 and 2 start with nothing
    assert len(centroids) == 5 and np.all(np.diff(centroids) > 0)
    assert np.allclose(centroids[labels], v, atol=0.11)
    few, _ = kmeans_1d(v, np.linspace(-1, 3, 5), relocate=False)
    assert len(few) < 5


def test_centroid_gradient_is_sum_of_member_gradients():
    layer = nn.Linear(3, 2, bias=False)
    attach_sharing_(
        layer,
        torch.tensor([-0.5, 0.25, 1.0]),
        torch.tensor([[1, 0, 3], [2, 1, 3]], dtype=torch.int16),  # 0: pruned
    )
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    (layer(x) * torch.tensor([[1.0, -2.0], [0.5, 3.0]])).sum().backward()
    # dL/dW[o, i] = sum_n g[n, o] * x[n, i], by hand
    g_w = torch.tensor(
        [[1.0 * 1 + 0.5 * -1, 1 * 2 + 0.5 * 0.5, 1 * 3 + 0.5 * 2], [-2 + 3 * -1, -4 + 1.5, -6 + 6]]
    )
    expected = torch.tensor(
        [g_w[0, 0] + g_w[1, 1], g_w[1, 0], g_w[0, 2] + g_w[1, 2]]
    )  # pruned [0, 1] left out
    assert torch.allclose(layer.weight_codebook.grad, expected)
    assert torch.equal(layer.weight, torch.tensor([[-0.5, 0.0, 1.0], [0.25, -0.5, 1.0]]))


def test_fold_sharing_gives_plain_weights():
    shared = share_weights(pruned_net(), 4)
    state = effective_state(shared)
    fold_sharing_(shared)
    assert not shared_layers(shared)
    assert all(torch.equal(bits(v), bits(shared.state_dict()[k])) for k, v in state.items())
    copy.deepcopy(shared)


def test_bits_options_and_errors():
    model = pruned_net()
    shared = share_weights(model, {"3": 2}, exclude=["5"])
    sizes = {n: len(m.weight_codebook) for n, m in shared_layers(shared).items()}
    assert sizes["3"] <= 4 and sizes["0"] > 4 and "5" not in sizes
    assert all(
        len(m.weight_codebook) <= 2**3 or n == "0"
        for n, m in shared_layers(share_weights(model, 3, conv_bits=6)).items()
    )
    with pytest.raises(DistiqError, match=r"bits: expected an integer in \[1, 8\]"):
        share_weights(model, 9)
    with pytest.raises(DistiqError, match="bits: no Linear/Conv layer named nope"):
        share_weights(model, {"nope": 3})


def test_fine_tuning_lowers_the_loss_and_keeps_assignments(digits):
    train, test = digits
    torch.manual_seed(0)
    model = dq.models.create("mlp", image_size=8)
    dq.train(model, train, epochs=4, lr=3e-3, progress=False)
    pruned = dq.prune(model, 0.8)
    shared = share_weights(pruned, 2)  # few centroids: a clear loss to recover
    index = {n: m.weight_index.clone() for n, m in shared_layers(shared).items()}
    loss = nn.CrossEntropyLoss()
    x, y = (
        torch.stack([train[i][0] for i in range(len(train))]),
        torch.tensor([train[i][1] for i in range(len(train))]),
    )
    with torch.no_grad():
        before = float(loss(shared(x), y))
    tuned = share_weights(pruned, 2, train_data=train, epochs=3, lr=1e-3, progress=False)
    with torch.no_grad():
        after = float(loss(tuned(x), y))
    assert after < before - 0.01
    for name, module in shared_layers(tuned).items():
        assert torch.equal(module.weight_index, index[name])  # assignments fixed
        assert len(module.weight_codebook) <= 4
    # the teacher path (KD through dq.distill) trains the centroids too
    distilled = share_weights(pruned, 2, train_data=train, teacher=model, epochs=1, lr=1e-3, progress=False)
    first = next(iter(shared_layers(shared)))
    assert not torch.equal(
        shared_layers(distilled)[first].weight_codebook, shared_layers(shared)[first].weight_codebook
    )


def test_save_load_exact_and_smaller_than_int8(tmp_path, digits):
    torch.manual_seed(0)
    model = dq.models.create("lenet300-100", image_size=8)
    pruned = dq.prune(model, 0.9, scope="layer")  # global would empty fc2 of this untrained net
    shared = share_weights(pruned, 5)
    report = sparse.save(shared, tmp_path / "s.dqsp")
    int8 = sparse.save(pruned, tmp_path / "i8.dqsp", values="int8")
    assert report.file_bytes < int8.file_bytes
    assert report.records[0].values.startswith("32 centroids, 5-bit")
    fresh = sparse.load(dq.models.create("lenet300-100", image_size=8), tmp_path / "s.dqsp")
    want = effective_state(shared)
    assert want.keys() == fresh.state_dict().keys()
    assert all(torch.equal(bits(v), bits(fresh.state_dict()[k])) for k, v in want.items())
    rebuilt = sparse.load_model(tmp_path / "s.dqsp")
    x = torch.stack([digits[1][i][0] for i in range(64)])
    with torch.no_grad():
        assert torch.equal(rebuilt(x), shared(x))
    # a shared model loads the file too (its sharing is folded) and an explicit format is honoured
    assert sparse.load(copy.deepcopy(shared), tmp_path / "s.dqsp").state_dict().keys() == want.keys()
    assert sparse.save(shared, tmp_path / "f.dqsp", values="float32").file_bytes > report.file_bytes
    with pytest.raises(DistiqError, match="no shared layers"):
        sparse.save(pruned, tmp_path / "x.dqsp", values="shared")


def test_corrupt_shared_file_rejected(tmp_path):
    shared = share_weights(pruned_net(0.6), 3)
    path = tmp_path / "s.dqsp"
    sparse.save(shared, path)
    data = path.read_bytes()
    assert data[8:10] == (2).to_bytes(2, "little")  # version 2: a shared file
    rng = np.random.default_rng(0)
    for pos in [*rng.choice(len(data), 60, replace=False), len(data) // 2]:
        bad = bytearray(data)
        bad[pos] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(DataError) as err:
            sparse.load(pruned_net(0.6), path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_bytes(data[:-7])
    with pytest.raises(DataError, match="truncated"):
        sparse.read(path)


@pytest.mark.parametrize(
    "data",
    [
        b"a",
        b"ab" * 50,
        bytes(range(256)) * 3,
        np.random.default_rng(1).geometric(0.1, 5000).clip(1, 255).astype(np.uint8).tobytes(),
    ],
)
def test_huffman_round_trip(data):
    coded = huffman_encode(data)
    assert huffman_decode(coded, len(data)) == data
    with pytest.raises(ValueError):
        huffman_decode(coded, len(data) + 9)


def test_huffman_lengths_optimal_and_limited():
    assert huffman_lengths(np.array([5, 0, 1, 1, 3])).tolist() == [1, 0, 3, 3, 2]
    fib = np.array([1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181])
    lengths = huffman_lengths(fib)
    assert lengths.max() <= 15 and np.sum(2.0**-lengths) <= 1.0


def test_few_distinct_values_kept_exactly():
    w = torch.tensor([[0.0, 0.5, -0.25], [0.5, 0.0, 3.0]])
    book, index = codebook_for(w, 2)
    assert book.tolist() == [-0.25, 0.5, 3.0]
    assert index.tolist() == [[0, 2, 1], [2, 0, 3]]


def test_shared_biases_round_trip(tmp_path):
    model = pruned_net(0.6)
    plain, with_bias = share_weights(model, 3), share_weights(model, 3, biases=True)
    for module in shared_layers(with_bias).values():
        assert torch.unique(module.bias).numel() <= 2**3 and len(module.bias_codebook) <= 2**3
    assert list(effective_state(with_bias)) == list(model.state_dict())  # same keys, same order
    a = sparse.save(plain, tmp_path / "a.dqsp").file_bytes
    b = sparse.save(with_bias, tmp_path / "b.dqsp").file_bytes
    assert b < a
    fresh = sparse.load(pruned_net(0.6), tmp_path / "b.dqsp")
    assert all(
        torch.equal(bits(v), bits(fresh.state_dict()[k])) for k, v in effective_state(with_bias).items()
    )
    fold_sharing_(with_bias)
    assert list(with_bias.state_dict()) == list(model.state_dict())
