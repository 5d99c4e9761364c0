"""Does TinyBERT's hidden-state term pay for the 3-layer MiniLM student, at equal compute?

Distils the 3-layer student (teacher layers 0, 3, 5) on the first ``--train`` training fortunes with
``EmbeddingDistillSpec(hidden_weight=w)`` for each ``w`` of ``--weights`` and ``--epochs`` epochs, then
prints the mean cosine and the top-10 neighbour overlap of its PyTorch embeddings with the teacher's
on ``--held-out`` held-out fortunes, and the seconds each arm took. The hidden term runs the teacher
on every batch, so an arm with it costs about as much as a second epoch without it: compare it with
``--weights 0 --epochs 2`` run after it.

    .venv/bin/python bench/minilm_hidden_term.py --weights 0,1,5,20 --epochs 1
    .venv/bin/python bench/minilm_hidden_term.py --weights 0 --epochs 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from minilm import top_k_overlap  # noqa: E402

from distiq.hf.corpus import load_fortunes, split_texts  # noqa: E402
from distiq.hf.distill import EmbeddingDistillSpec, distill_embeddings  # noqa: E402
from distiq.hf.export import cosine_rows  # noqa: E402
from distiq.hf.minilm import SentenceEncoder, encode, load_minilm  # noqa: E402
from distiq.hf.student import make_student  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0,1,5,20", help="hidden_weight of each arm")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--held-out", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    train_all, held = split_texts(load_fortunes(), args.held_out, seed=0)
    train = train_all[: args.train]
    model, tokenizer = load_minilm()
    teacher = SentenceEncoder(model).eval()
    t_train = encode(teacher, tokenizer, train, max_length=64)
    t_held = encode(teacher, tokenizer, held, max_length=128).numpy()
    print("| hidden_weight | epochs | held-out cos | top-10 overlap | seconds |\n|---:|---:|---:|---:|---:|")
    for weight in [float(w) for w in args.weights.split(",")]:
        torch.manual_seed(0)
        student = make_student(teacher, [0, 3, 5])
        start = time.perf_counter()
        distill_embeddings(
            teacher, student, tokenizer, train, spec=EmbeddingDistillSpec(hidden_weight=weight),
            teacher_embeddings=t_train, epochs=args.epochs, lr=3e-4, batch_size=32, seed=0,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        s = encode(student, tokenizer, held, max_length=128).numpy()
        cos, top10 = float(cosine_rows(s, t_held).mean()), top_k_overlap(t_held, s)
        print(f"| {weight:g} | {args.epochs} | {cos:.4f} | {top10:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
