"""QAT: fine-tuning through the fake quantizers (learnable LSQ scales, distilling from the float model)
recovers accuracy that low-bit PTQ lost; weights stay on their grids; the float model is untouched."""

from __future__ import annotations

import pytest
import torch

import distiq as dq
from distiq.quant import quantize
from distiq.quant.modules import quant_layers, quantizers


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread is faster, and on a shared machine far steadier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_qat_recovers_low_bit_accuracy():
    train, test = dq.data.load("digits", "train"), dq.data.load("digits", "test")
    torch.manual_seed(0)
    model = dq.models.create("lenet5", image_size=8)
    dq.train(model, train, epochs=4, lr=3e-3, batch_size=64, progress=False)
    model.eval()
    calib = dq.data.subsample(train, 256)
    accuracy = lambda m: dq.evaluate(m, test, ("accuracy",))["accuracy"]  # noqa: E731
    float_acc = accuracy(model)
    ptq = quantize(model, calib, bits=2, method="minmax")
    qat = quantize(model, calib, mode="qat", bits=2, method="minmax", train_data=train, epochs=3, lr=1e-3)
    ptq_acc, qat_acc = accuracy(ptq), accuracy(qat)
    assert ptq_acc < float_acc - 0.05  # 2-bit weights hurt ...
    assert qat_acc - ptq_acc >= 0.5 * (float_acc - ptq_acc)  # ... and QAT wins back at least half
    assert all(p.requires_grad for p in model.parameters())  # the teacher was copied, not frozen
    moved = [
        not torch.equal(a.scale, b.scale)
        for (_, a), (_, b) in zip(quantizers(ptq), quantizers(qat), strict=True)
        if a.scale.numel() and not getattr(a, "_source", None)
    ]
    assert any(moved)  # LSQ learned the step sizes
    assert not any(q.learned_scale is not None for _, q in quantizers(qat))  # frozen into buffers
    for layer in quant_layers(qat).values():  # symmetric 2-bit: every weight in {-1, 0, 1} * scale
        codes = layer.weight_quant(layer.weight) / layer.weight_quant.scale.view(
            -1, *[1] * (layer.weight.dim() - 1)
        )
        assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 1 + 1e-4
