"""Would more transfer text, or a term on in-batch similarities, lift the 3-layer MiniLM student?

The 3-layer student (all-MiniLM-L6-v2's layers 0, 3, 5) reaches 0.98 mean cosine on its training
fortunes but about 0.92 on held-out ones (``bench/minilm.py``, 8 epochs): it looks short of texts.
This bench gives each arm the same wall-clock budget (``--minutes``), all arms at once, one process
and one thread each, and prints the held-out mean cosine and top-10 neighbour overlap with the
teacher every five minutes and at the end. Arms (``--arms``, ``corpus:relation_weight``):

* corpus ``fortunes``: the 13,679 training fortunes (as ``bench/minilm.py``);
* corpus ``fortunes+wordnet``: the same plus ``--wordnet`` WordNet 3.0 texts (Debian's
  ``wordnet-base``: each synset's words and gloss as ``"words: definition"``, and each quoted usage
  example as its own text; 153,659 distinct texts of 20 characters or more, mean 16 tokens);
* ``relation_weight`` w > 0 adds ``w * MSE(S_s, S_t)`` between the student's and the teacher's
  in-batch cosine-similarity matrices (what neighbour retrieval reads) to distiq's embedding loss.

Training: distiq's :func:`distiq.hf.distill.embedding_loss` (1 - cos plus MSE), Adam, lr 3e-4
falling linearly to 0 over the budget, batch 32, no dropout, batches of similar length in random
order (so WordNet's short texts cost less), texts truncated to 64 tokens. Teacher embeddings are
computed once, before the arms start, and cached in ``--out``. Held-out: 1,200 fortunes, split as
``bench/minilm.py`` splits them; no WordNet text equals one of them.

    apt-get install wordnet-base fortunes fortunes-min     # once, as root
    .venv/bin/python bench/minilm_transfer.py --arms fortunes:0,fortunes+wordnet:0 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from minilm import top_k_overlap  # noqa: E402

from distiq.hf.corpus import dedupe, load_fortunes, normalise, split_texts  # noqa: E402
from distiq.hf.distill import _dropout, embedding_loss  # noqa: E402
from distiq.hf.export import cosine_rows  # noqa: E402
from distiq.hf.minilm import SentenceEncoder, encode, load_minilm, tokenize  # noqa: E402
from distiq.hf.student import make_student  # noqa: E402

WORDNET = Path("/usr/share/wordnet")
MAX_LENGTH = 64
EVAL_EVERY_S = 300


def wordnet_texts(root: Path = WORDNET) -> list[str]:
    """WordNet's glosses as ``"words: definition"`` and its quoted examples, distinct, >= 20 chars."""
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (root / f"data.{pos}").read_text(errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence header
                continue
            gloss = line.split(" | ", 1)[1].strip()
            definition = re.sub(r'"[^"]*"', "", gloss).strip(" ;")
            out.append(f"{line.split()[4].replace('_', ' ')}: {definition}")
            out.extend(q.strip() for q in re.findall(r'"([^"]+)"', gloss))
    return [t for t in dedupe(normalise(t) for t in out) if len(t) >= 20]


def prepare(out: Path, n_wordnet: int) -> None:
    """Texts and the teacher's embeddings of them, once (the arms read them)."""
    if (out / "teacher.safetensors").is_file():
        return
    model, tokenizer = load_minilm()
    teacher = SentenceEncoder(model).eval()
    train, held = split_texts(load_fortunes(), 1200, seed=0)
    held_set = set(held)
    wordnet = random.Random(1).sample([t for t in wordnet_texts() if t not in held_set], n_wordnet)
    start = time.perf_counter()
    tensors = {
        "fortunes": encode(teacher, tokenizer, train, max_length=MAX_LENGTH),
        "held": encode(teacher, tokenizer, held, max_length=128),
        "wordnet": encode(teacher, tokenizer, wordnet, max_length=MAX_LENGTH),
    }
    print(f"teacher embeddings: {time.perf_counter() - start:.0f} s", flush=True)
    (out / "texts.json").write_text(json.dumps({"fortunes": train, "held": held, "wordnet": wordnet}))
    save_file(tensors, out / "teacher.safetensors")


def length_batches(lengths: np.ndarray, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless epochs of batches of texts of similar length (ties broken at random), in random order."""
    while True:
        order = np.argsort(lengths + rng.uniform(0, 3, len(lengths)))
        batches = [order[i : i + batch] for i in range(0, len(order), batch)]
        rng.shuffle(batches)
        yield from batches


def run_arm(out: Path, corpus: str, relation: float, minutes: float) -> None:
    torch.set_num_threads(1)
    texts, emb = json.loads((out / "texts.json").read_text()), load_file(out / "teacher.safetensors")
    model, tokenizer = load_minilm()
    torch.manual_seed(0)
    student = make_student(SentenceEncoder(model), [0, 3, 5])
    parts = corpus.split("+")
    train = [t for p in parts for t in texts[p]]
    targets = torch.cat([emb[p] for p in parts])
    enc = tokenize(tokenizer, train, MAX_LENGTH, padding="max_length")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(1).numpy()
    rng = np.random.default_rng(0)
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-4)
    label = f"{corpus} w={relation:g}"

    def measure(elapsed: float, seen: int) -> None:
        s, t = encode(student, tokenizer, texts["held"], max_length=128).numpy(), emb["held"].numpy()
        cos, top10 = float(cosine_rows(s, t).mean()), top_k_overlap(t, s)
        row = f"| {label} | {len(train)} | {elapsed / 60:.1f} | {seen} | {cos:.4f} | {top10:.3f} |"
        print(row, flush=True)

    budget, seen, start, next_eval = minutes * 60, 0, time.perf_counter(), EVAL_EVERY_S
    with _dropout(student, 0.0):
        for b in length_batches(lengths, 32, rng):
            if (elapsed := time.perf_counter() - start) >= budget:
                break
            for group in optimizer.param_groups:
                group["lr"] = 3e-4 * (1 - elapsed / budget)
            width = int(lengths[b].max())
            s, t = student(ids[b, :width], mask[b, :width]), targets[b]
            loss = embedding_loss(s, t)["loss"]
            if relation > 0:
                sn, tn = F.normalize(s, dim=-1), F.normalize(t, dim=-1)
                loss = loss + relation * F.mse_loss(sn @ sn.T, tn @ tn.T)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(b)
            if elapsed >= next_eval:
                next_eval += EVAL_EVERY_S
                measure(elapsed, seen)
    measure(budget, seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="fortunes:0,fortunes+wordnet:0", help="corpus:relation_weight,...")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of every arm")
    parser.add_argument("--wordnet", type=int, default=40000, help="WordNet texts added in +wordnet arms")
    parser.add_argument("--out", type=Path, default=Path("bench/out/minilm_transfer"))
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # one arm, in a child process
    args = parser.parse_args()
    if args.arm:
        corpus, relation = args.arm.split(":")
        run_arm(args.out, corpus, float(relation), args.minutes)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    prepare(args.out, args.wordnet)
    print("| arm | texts | minutes | text-passes | held-out cos | top-10 overlap |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--arm", arm, "--minutes", str(args.minutes), "--out", str(args.out)]
        )  # fmt: skip
        for arm in args.arms.split(",")
    ]
    if any(child.wait() for child in children):
        sys.exit("an arm failed (its error is above)")


if __name__ == "__main__":
    main()
