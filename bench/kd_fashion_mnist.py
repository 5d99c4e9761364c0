"""Knowledge distillation on Fashion-MNIST: does the teacher help a small student, and at what cost?

A CNN teacher (vgg-small, trained on 55,000 images) is trained once; then a smaller CNN student
(LeNet-5) is trained on a transfer set of 5,000 labelled images — the situation where distillation
matters: the teacher saw more than the student can — with the same epochs, optimiser and data in
six ways — from scratch, KD, DKD (both on cached teacher logits: distiq's default when no feature
term needs the teacher), FitNets hints (+KD, +DKD; the teacher runs on every batch) and KD with
``offline=True`` spelled out — for 3 seeds. Prints mean ± std test accuracy, each method's
gain over scratch with a paired 95% t-interval over the seeds (the same seed gives both arms the same
initial weights and batch order), and the median seconds per training epoch relative to the student
trained alone. KD's temperature and weight and DKD's temperature and beta are first chosen on the
validation split (``KD_GRID``, ``DKD_GRID``, one selection seed that is not a compared one), and the
best method is picked by mean validation accuracy: nothing is tuned on test.

    .venv/bin/python bench/kd_fashion_mnist.py            # full run (writes bench/out/kd.md)
    .venv/bin/python bench/kd_fashion_mnist.py --quick    # smoke run on a subsample
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from scipy import stats

import distiq as dq
from distiq.data import split, subsample
from distiq.engine.weights import load_model

OUT = Path(__file__).parent / "out"
TEACHER = dict(name="vgg-small", width=1.0)
STUDENT = dict(name="lenet5")
HINT = {"kind": "hint", "student": "features.relu2", "teacher": "features.relu4", "weight": 0.5}
#: The settings each logit loss may take, chosen by validation accuracy on SELECTION_SEED (never test):
#: KD's temperature and weight; DKD's temperature and non-target weight beta (its paper: 4 and 8 on
#: CIFAR-100, 1 and 0.5 on ImageNet).
KD_GRID = tuple(dict(temperature=t, alpha=a) for t in (2.0, 4.0, 8.0) for a in (0.5, 0.9, 1.0))
DKD_GRID = tuple(
    dict(temperature=t, alpha=0.5, loss_options={"alpha": 1.0, "beta": b})
    for t in (1.0, 4.0)
    for b in (1.0, 4.0, 8.0)
)
SELECTION_SEED = 100  # the seed the settings are chosen on: not one of the compared seeds


def methods(kd: dict, dkd: dict) -> dict[str, dict | None]:
    """The compared arms, the logit losses at their chosen settings; the hint arms add FitNets' term."""
    return {
        "scratch": None,
        "kd": dict(loss="kd", **kd),
        "dkd": dict(loss="dkd", **dkd),
        "hint+kd": dict(loss="kd", **kd, features=[HINT]),
        "hint+dkd": dict(loss="dkd", **dkd, features=[HINT]),
        "offline-kd": dict(loss="kd", **kd, offline=True),
    }


def make(spec: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opts = {k: v for k, v in spec.items() if k != "name"}
    return dq.models.create(spec["name"], num_classes=10, in_channels=1, image_size=28, **opts)


def get_teacher(train, val, epochs: int, folder: Path) -> torch.nn.Module:
    """The teacher, trained once and kept in ``folder``."""
    path = folder / "teacher.safetensors"
    teacher = make(TEACHER, seed=0)
    if path.exists():
        found = load_model(path)
        if found.config != teacher.config:  # an older bench wrote another teacher to this file
            raise SystemExit(f"{path}: holds {found.config}, expected {teacher.config}; move it away")
        return found
    dq.train(
        teacher,
        train,
        val,
        epochs=epochs,
        lr=2e-3,
        batch_size=128,
        progress=True,
        checkpoint_dir=str(path.parent / "teacher-ckpt"),
    )
    dq.save_weights(teacher, path)
    return teacher


def run_arm(opts: dict | None, teacher, transfer, seed: int, epochs: int):
    """One student trained on ``transfer``: alone (``opts`` None) or distilled with ``opts``."""
    student = make(STUDENT, seed=seed)
    common = dict(epochs=epochs, lr=3e-3, batch_size=128, seed=seed, progress=False)
    if opts is None:
        return student, dq.train(student, transfer, **common)
    cache = OUT / "kd" / "cache" if opts.get("offline") else None
    return student, dq.distill(teacher, student, transfer, cache_dir=cache, **opts, **common)


def choose(teacher, transfer, val, loss: str, grid: tuple[dict, ...], epochs: int) -> tuple[dict, float]:
    """The setting of ``grid`` whose student (SELECTION_SEED) has the best validation accuracy, and
    that accuracy."""
    scores = []
    for setting in grid:
        student, _ = run_arm(dict(loss=loss, **setting), teacher, transfer, SELECTION_SEED, epochs)
        scores.append(dq.evaluate(student, val)["accuracy"])
        print(f"selection: {loss} {setting}: val acc {scores[-1]:.4f}", flush=True)
    return grid[scores.index(max(scores))], max(scores)


def paired_gain(runs: list[tuple], base: list[tuple]) -> tuple[float, float, float]:
    """Mean test-accuracy gain over scratch (points) and its paired 95% t-interval over the seeds."""
    diffs = [100 * (a[0] - b[0]) for a, b in zip(runs, base, strict=True)]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def kd_table(results: dict[str, list[tuple[float, float, float]]]) -> tuple[list[str], str]:
    """The table rows, and a line naming the method with the best mean validation accuracy."""
    base = results["scratch"]
    base_sec = statistics.median(s for _, s, _ in base)
    rows = [
        "| method | test accuracy (mean ± std) | val accuracy (mean) | Δ vs scratch (points) "
        "| paired 95% CI | s/epoch (median) | × scratch |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        accs = [a for a, _, _ in runs]
        secs = statistics.median(s for _, s, _ in runs)
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        gain, low, high = paired_gain(runs, base)
        rows.append(
            f"| {method} | {100 * statistics.mean(accs):.2f} ± {100 * std:.2f} | "
            f"{100 * statistics.mean(v for _, _, v in runs):.2f} | {gain:+.2f} | [{low:+.2f}, {high:+.2f}] | "
            f"{secs:.2f} | {secs / base_sec:.2f} |"
        )
    chosen = max(
        (m for m in results if m != "scratch"), key=lambda m: statistics.mean(v for *_, v in results[m])
    )
    gain, low, high = paired_gain(results[chosen], base)
    best = (
        f"Best by validation accuracy: {chosen}, {gain:+.2f} points on test over scratch "
        f"(paired 95% CI [{low:+.2f}, {high:+.2f}])."
    )
    return rows, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40, help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=8)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 keeps timings stable on a shared 2-core machine)",
    )
    ap.add_argument(
        "--transfer",
        type=int,
        default=5000,
        help="transfer-set size: the student sees this many labelled samples",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    full, test = dq.data.load("fashion-mnist", "train"), dq.data.load("fashion-mnist", "test")
    train, val = split(full, 5000 / len(full), seed=0)
    if args.quick:
        train, test = subsample(train, 3000), subsample(test, 1000)
        args.seeds, args.epochs, args.teacher_epochs, args.transfer = 1, 2, 2, 1000
    transfer = subsample(train, args.transfer) if args.transfer < len(train) else train
    folder = OUT / ("kd-quick" if args.quick else "kd")  # the pruning and concept benchmarks read "kd"
    teacher = get_teacher(train, val, args.teacher_epochs, folder)
    teacher_acc = dq.evaluate(teacher, test)["accuracy"]
    print(
        f"teacher {TEACHER}: test accuracy {teacher_acc:.4f}, "
        f"{dq.models.count_parameters(teacher):,} parameters"
    )

    chosen = {
        "kd": choose(teacher, transfer, val, "kd", KD_GRID, args.epochs),
        "dkd": choose(teacher, transfer, val, "dkd", DKD_GRID, args.epochs),
    }
    arms = methods(chosen["kd"][0], chosen["dkd"][0])
    results: dict[str, list[tuple[float, float, float]]] = {m: [] for m in arms}
    for seed in range(args.seeds):
        for method, opts in arms.items():  # interleaved, so machine noise hits all methods alike
            t0 = time.perf_counter()
            student, res = run_arm(opts, teacher, transfer, seed, args.epochs)
            acc, val_acc = dq.evaluate(student, test)["accuracy"], dq.evaluate(student, val)["accuracy"]
            results[method].append((acc, res.seconds_per_epoch, val_acc))
            print(
                f"seed {seed} {method:10s} acc {acc:.4f} val {val_acc:.4f}  "
                f"{res.seconds_per_epoch:.2f} s/epoch "
                f"({time.perf_counter() - t0:.0f} s total)",
                flush=True,
            )
            if seed == 0 and method == "kd":
                dq.save_weights(student, folder / "student-kd-seed0.safetensors")

    rows, best = kd_table(results)
    picked = "; ".join(f"{loss} {setting} (val {100 * acc:.2f}%)" for loss, (setting, acc) in chosen.items())
    header = (
        f"Teacher {TEACHER['name']} (width {TEACHER['width']}): {100 * teacher_acc:.2f}% test accuracy, "
        f"{dq.models.count_parameters(teacher):,} parameters. Student {STUDENT}: "
        f"{dq.models.count_parameters(make(STUDENT, 0)):,} parameters; {len(transfer):,} transfer "
        f"samples, {args.epochs} epochs, Adam lr 3e-3 cosine, batch 128, {args.seeds} seeds. Chosen on "
        f"validation (seed {SELECTION_SEED}): {picked}."
    )
    table = header + "\n\n" + "\n".join(rows) + "\n\n" + best + "\n"
    print("\n" + table)
    if not args.quick:
        (OUT / "kd.md").write_text(table)


if __name__ == "__main__":
    main()
