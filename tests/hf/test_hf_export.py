"""ONNX export of sentence encoders: a right file passes the check, a wrong one is refused loudly."""

import pytest

pytest.importorskip("transformers", reason="the hf extra is not installed: pip install distiq[hf]")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
from tiny_bert import TEXTS  # noqa: E402

from distiq.errors import DistiqError  # noqa: E402
from distiq.hf.export import (  # noqa: E402
    INPUT_NAMES,
    OUTPUT_NAME,
    cosine_rows,
    export_encoder,
    export_verified,
    onnx_embeddings,
    verify_export,
)
from distiq.hf.minilm import SentenceEncoder, encode, mean_pool  # noqa: E402


def test_export_reproduces_pytorch_on_padded_batches(teacher, tokenizer, tmp_path):
    check = export_verified(teacher, tokenizer, tmp_path / "t.onnx", TEXTS[:40])
    assert check.mean_cosine >= 0.9999 and check.min_cosine >= 0.9999
    assert check.texts == 44  # 40 in padded batches + 4 alone
    model = onnx.load(str(tmp_path / "t.onnx"))
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in model.graph.output] == [OUTPUT_NAME]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert dims == [["batch", "sequence"], ["batch", "sequence"]]
    # the pooling and normalisation are inside the graph: unit-norm rows, equal to PyTorch's
    got = onnx_embeddings(tmp_path / "t.onnx", tokenizer, TEXTS[40:60], batch_size=7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    ref = encode(teacher, tokenizer, TEXTS[40:60]).numpy()
    assert cosine_rows(got, ref).min() > 0.9999


class _PoolsPadding(SentenceEncoder):
    """The classic wrong export: mean over every position, padding included."""

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        emb = mean_pool(out.last_hidden_state, torch.ones_like(attention_mask))
        return torch.nn.functional.normalize(emb, dim=-1)


class _IgnoresMask(SentenceEncoder):
    """Attention over padding tokens (a mask traced away), pooling still masked."""

    def forward(self, input_ids, attention_mask):
        out = self.model(input_ids=input_ids)
        emb = mean_pool(out.last_hidden_state, attention_mask)
        return torch.nn.functional.normalize(emb, dim=-1)


@pytest.mark.parametrize("broken", [_PoolsPadding, _IgnoresMask])
def test_broken_export_is_refused_naming_the_file(teacher, tokenizer, tmp_path, broken):
    path = export_encoder(broken(teacher.model), tokenizer, tmp_path / "broken.onnx")
    with pytest.raises(DistiqError, match=r"broken\.onnx: the ONNX export does not reproduce") as err:
        verify_export(path, teacher, tokenizer, TEXTS[:40])
    assert "mean cosine" in str(err.value)


def test_train_mode_is_compared_in_eval_and_restored(teacher, tokenizer, tmp_path):
    """Dropout on the PyTorch side was issue 11's cosine of 0.95: the check runs in eval mode."""
    teacher.train()
    check = export_verified(teacher, tokenizer, tmp_path / "t.onnx", TEXTS[:20])
    assert check.mean_cosine >= 0.9999
    assert teacher.training
    torch.manual_seed(0)
    with torch.no_grad():
        batch = tokenizer(TEXTS[:20], padding=True, return_tensors="pt")
        dropped = teacher(batch["input_ids"], batch["attention_mask"]).numpy()
    teacher.eval()
    clean = encode(teacher, tokenizer, TEXTS[:20]).numpy()
    assert cosine_rows(dropped, clean).mean() < 0.999  # what comparing in train mode would measure


def test_verify_needs_texts(teacher, tokenizer, tmp_path):
    path = export_encoder(teacher, tokenizer, tmp_path / "t.onnx")
    with pytest.raises(DistiqError, match="no texts"):
        verify_export(path, teacher, tokenizer, [])


def test_attention_is_exported_eager_with_one_mask_and_the_model_keeps_its_own(teacher, tokenizer, tmp_path):
    """SDPA attention exports a mask Where per layer and an IsNaN + Where over every attention map;
    the eager form one additive mask. The same embeddings (checked), and the model's choice restored."""
    model = teacher.model
    model.set_attn_implementation("sdpa")
    layers = model.config.num_hidden_layers
    check = export_verified(teacher, tokenizer, tmp_path / "t.onnx", TEXTS[:20])
    assert check.mean_cosine >= 0.9999 and model.config._attn_implementation == "sdpa"
    ops = [n.op_type for n in onnx.load(str(tmp_path / "t.onnx")).graph.node]
    assert "IsNaN" not in ops and ops.count("Where") < layers and ops.count("Softmax") == layers
