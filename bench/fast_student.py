"""Is the shipped fast recipe's student 10x faster than its teacher, and at what accuracy (issue 13)?

Runs ``recipes/fashion_mnist_fast.yaml`` end to end (vgg-small teacher -> stride-2-stem KD student ->
a quarter of its channels removed in blocks of 8, fine-tuned with the teacher -> static int8), then times the
teacher's float ONNX file and every stage's file again in one interleaved measurement (ORT, 2
threads, medians), and prints one table: test accuracy (the int8 stage's is ONNX Runtime's on this
CPU), file size and speed-up against the teacher, with the issue's four targets checked. A rerun
reuses the finished stages (the run folder is ``bench/out/fast``).

    .venv/bin/python bench/fast_student.py    # ~45-50 min on a 2-core AMD EPYC; table to bench/out/fast.md
    .venv/bin/python bench/fast_student.py --seed 1   # the same recipe, another shuffling seed

``--seed N`` trains the student (distillation and the pruned student's fine-tune) with shuffling
seed N instead of the recipe's: the data split, the student's initial weights and the teacher stay
those of the shipped run, whose finished teacher stage is copied in (its key is checked as any
stage's is), so the seeds differ only in the student's training. Run folder ``bench/out/fast-seedN``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml

import distiq as dq
from distiq.quant.target import cpu_info
from distiq.runtime import time_files

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "fashion_mnist_fast.yaml"
OUT = ROOT / "bench" / "out"
BATCHES = (1, 256)
#: The issue's targets: at least these speed-ups and size ratio, at most this many points lost.
MIN_SPEEDUP = {1: 3.0, 256: 10.0}
MIN_SMALLER = 30.0
MAX_DROP_POINTS = 1.0


def stage_files(result) -> dict[str, Path]:
    """Each stage's ONNX file by stage name, the teacher first."""
    return {s.name: result.run_dir / s.artifacts["onnx"] for s in result.stages if "onnx" in s.artifacts}


def table(result, files: dict[str, Path], timing: dict) -> list[str]:
    """One row per stage: accuracy, size and speed against the teacher (the first file)."""
    teacher = next(iter(files))
    acc = {s.name: s.metrics["accuracy"] for s in result.stages}
    rows = [
        "| stage | test accuracy | file bytes | x smaller | b1 ms | x faster b1 | b256 ms | x faster b256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, path in files.items():
        ms = {b: timing[b][name].p50_ms for b in BATCHES}
        fast = {b: timing[b][teacher].p50_ms / ms[b] for b in BATCHES}
        smaller = files[teacher].stat().st_size / path.stat().st_size
        rows.append(
            f"| {name} | {100 * acc[name]:.2f}% | {path.stat().st_size:,} | {smaller:.1f} | "
            f"{ms[1]:.3f} | {fast[1]:.2f} | {ms[256]:.2f} | {fast[256]:.2f} |"
        )
    return rows


def verdicts(result, files: dict[str, Path], timing: dict) -> list[str]:
    """The issue's four targets for the last stage (the deployed int8 student), each met or not."""
    teacher, student = next(iter(files)), list(files)[-1]
    drop = 100 * (result.stages[0].metrics["accuracy"] - result.stages[-1].metrics["accuracy"])
    smaller = files[teacher].stat().st_size / files[student].stat().st_size
    checks = []
    for b, least in MIN_SPEEDUP.items():
        fast = timing[b][teacher].p50_ms / timing[b][student].p50_ms
        checks.append((f"{fast:.2f}x faster at batch {b}", f">= {least:g}x", fast >= least))
    checks.append((f"{smaller:.1f}x smaller", f">= {MIN_SMALLER:g}x", smaller >= MIN_SMALLER))
    checks.append((f"{drop:.2f} points lost", f"<= {MAX_DROP_POINTS:g}", drop <= MAX_DROP_POINTS))
    return [f"- {what} (target {target}): {'met' if ok else 'NOT met'}" for what, target, ok in checks]


def seeded_run(seed: int) -> tuple[dict, Path]:
    """The shipped recipe with the student's training seeded ``seed``, and its run folder (the shipped
    run's teacher stage copied in, when that run exists and this one has none)."""
    recipe = yaml.safe_load(RECIPE.read_text())
    for section in (recipe["distill"]["train"], recipe["prune"]["fine_tune"]):
        section["seed"] = seed
    run_dir = OUT / f"fast-seed{seed}"
    teacher = OUT / "fast" / "stages" / "00-teacher"
    if teacher.is_dir() and not (run_dir / "stages" / "00-teacher").exists():
        shutil.copytree(teacher, run_dir / "stages" / "00-teacher")
    return recipe, run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None, help="shuffling seed of the student's training")
    args = ap.parse_args()
    recipe, run_dir = (RECIPE, OUT / "fast") if args.seed is None else seeded_run(args.seed)
    result = dq.run(recipe, run_dir)
    files = stage_files(result)
    timing = time_files(files, BATCHES, threads=args.threads, rounds=args.rounds)
    cpu = cpu_info()
    text = "\n".join(
        [
            f"CPU: {cpu['model']} ({cpu['target']}); ORT {args.threads} threads, {args.rounds} interleaved "
            f"rounds, medians; recipe {RECIPE.relative_to(ROOT)}"
            + ("" if args.seed is None else f" with the student trained under seed {args.seed}")
            + f"; test split {result.dataset}.",
            "",
            *table(result, files, timing),
            "",
            *verdicts(result, files, timing),
        ]
    )
    print(text)
    (OUT / f"{run_dir.name}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
