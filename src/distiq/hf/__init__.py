"""Pretrained transformers (the ``distiq[hf]`` extra): all-MiniLM-L6-v2 loaded offline, layer-subset
students distilled on its sentence embeddings, verified ONNX exports and their int8 versions.

One concept per module, in the order data flows: :mod:`~distiq.hf.corpus` (the offline fortunes
corpus and its split), :mod:`~distiq.hf.minilm` (loading, mean pooling, the sentence encoder),
:mod:`~distiq.hf.student` (students cut from teacher layers), :mod:`~distiq.hf.distill` (embedding
distillation through distiq's training loop), :mod:`~distiq.hf.export` (ONNX with the pooling inside,
and the check that the file reproduces PyTorch), :mod:`~distiq.hf.quantize` (dynamic int8 through
:func:`distiq.quantize_onnx` and row-quantized embedding tables). ``transformers`` is imported only
when a model or tokenizer is loaded.
"""

from .corpus import load_fortunes, split_texts
from .distill import DistillResult, EmbeddingDistillSpec, distill_embeddings, embedding_loss
from .export import ExportCheck, export_encoder, export_verified, onnx_embeddings, verify_export
from .minilm import SentenceEncoder, encode, load_minilm, mean_pool, model_dir, sentence_embedding
from .quantize import EncoderQuantReport, quantize_embedding_tables, quantize_encoder
from .student import layer_subset, make_student, spread_layers

__all__ = [
    "DistillResult",
    "EmbeddingDistillSpec",
    "EncoderQuantReport",
    "ExportCheck",
    "SentenceEncoder",
    "distill_embeddings",
    "embedding_loss",
    "encode",
    "export_encoder",
    "export_verified",
    "layer_subset",
    "load_fortunes",
    "load_minilm",
    "make_student",
    "mean_pool",
    "model_dir",
    "onnx_embeddings",
    "quantize_embedding_tables",
    "quantize_encoder",
    "sentence_embedding",
    "split_texts",
    "spread_layers",
    "verify_export",
]
