"""Which student shape can be 10x faster than the vgg-small teacher in ONNX Runtime (issue 13, item 4)?

Latency and file size do not depend on the weights' values, so this times untrained students of
several shapes against the teacher, each as float and as int8 (static, minmax, 256 calibration
images), all files in one interleaved measurement (2 threads, medians), before any is trained. It
tells which shapes are worth distilling: at 28x28 a narrower VGG's int8 convs are overhead-bound,
while a pool before the first conv (the student sees 14x14) or a stride-2 first conv (``s2``: a
learned downsampling, ``stem_stride=2``) cuts the work where it is. ``s2 16-24-M-48-M`` is the shape
the fast recipe's channel pruning leaves (a quarter of every conv's channels of 24-32-64, in blocks
of 8); ``s2 11-21-M-42-M`` is what a third of 16-32-64's without blocks leaves, whose odd channel
counts slow the int8 convs.

    .venv/bin/python bench/fast_student_shapes.py            # table to stdout and bench/out/fast-shapes.md
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

import distiq as dq
from distiq.data import subsample
from distiq.quant.target import cpu_info
from distiq.runtime import time_files

OUT = Path(__file__).parent / "out" / "fast-shapes"
SHAPES: dict[str, dict] = {
    "teacher vgg-small": dict(width=1.0),
    "width 0.5": dict(width=0.5),
    "width 0.25": dict(width=0.25),
    "M-32-32-M-64-M": dict(cfg=["M", 32, 32, "M", 64, "M"]),
    "M-16-32-M-64-M": dict(cfg=["M", 16, 32, "M", 64, "M"]),
    "16-M-32-M-64-M": dict(cfg=[16, "M", 32, "M", 64, "M"]),
    "s2 16-32-M-64-M": dict(cfg=[16, 32, "M", 64, "M"], stem_stride=2),
    "s2 11-21-M-42-M": dict(cfg=[11, 21, "M", 42, "M"], stem_stride=2),
    "s2 8-24-M-48-M": dict(cfg=[8, 24, "M", 48, "M"], stem_stride=2),
    "s2 16-24-M-48-M": dict(cfg=[16, 24, "M", 48, "M"], stem_stride=2),
}


def files(calib) -> tuple[dict[str, Path], dict[str, int]]:
    """Float and int8 ONNX files of every shape, and each shape's parameter count."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths, params = {}, {}
    for i, (name, options) in enumerate(SHAPES.items()):
        torch.manual_seed(0)
        model = dq.models.create("vgg-small", num_classes=10, in_channels=1, image_size=28, **options).eval()
        params[name] = dq.models.count_parameters(model)
        paths[f"{name} float"] = dq.export_onnx(model, OUT / f"{i}-float.onnx", calib.x[:1])
        if i:  # the teacher is the float reference
            qmodel = dq.quantize(model, calib, method="minmax")
            paths[f"{name} int8"] = dq.export_onnx(qmodel, OUT / f"{i}-int8.onnx", calib.x[:1])
    return paths, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # the deploy notes of untrained models are not the point here
    calib = subsample(dq.data.load("fashion-mnist", "train"), 256, seed=0)
    paths, params = files(calib)
    timing = time_files(paths, (1, 256), threads=args.threads, rounds=args.rounds)
    ref = "teacher vgg-small float"
    rows = [
        "| student | parameters | file bytes | x smaller | x faster b1 | x faster b256 |",
        "|---|---|---|---|---|---|",
    ]
    for label, path in paths.items():
        shape = label.rsplit(" ", 1)[0]
        size = path.stat().st_size
        speed = [timing[b][ref].p50_ms / timing[b][label].p50_ms for b in (1, 256)]
        rows.append(
            f"| {label} | {params[shape]:,} | {size:,} | {paths[ref].stat().st_size / size:.1f} | "
            f"{speed[0]:.2f} | {speed[1]:.2f} |"
        )
    cpu = cpu_info()
    table = (
        f"CPU: {cpu['model']} ({cpu['target']}); ORT {args.threads} threads, "
        f"{args.rounds} interleaved rounds.\n\n" + "\n".join(rows)
    )
    print(table)
    (OUT.parent / "fast-shapes.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
