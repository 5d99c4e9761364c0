"""Int8 post-training quantization on Fashion-MNIST: distiq's calibrators against ONNX Runtime's own.

On the CNN teacher of the KD benchmark (``bench/out/kd/teacher.safetensors``, trained here if missing)
and the same 512 calibration images (a stratified sample of the training split), every distiq
calibrator and ONNX Runtime's ``quantize_static`` (MinMax, Entropy, Percentile; QDQ, per-channel int8
weights, uint8 activations — ORT's recommended x86 setting) produce an int8 ONNX file of the same float
export. For each: test accuracy (ORT, 10,000 images), top-1 agreement of distiq's simulated model with
its ORT file, ORT latency at batch 1 and 256 with 2 threads (median of interleaved rounds, so a shared
machine's load hits every file alike), file size, and the seconds quantization took.

Then: QAT on the KD student (4-bit weights) against 4-bit PTQ, and dynamic int8 on an MLP against float.

    .venv/bin/python bench/quant_fashion_mnist.py            # full run (writes bench/out/quant.md)
    .venv/bin/python bench/quant_fashion_mnist.py --quick    # smoke run on subsamples
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import distiq as dq
from distiq.data import split, subsample
from distiq.engine.weights import load_model
from distiq.quant import compare_latency, export_onnx, kernels, quantize

OUT = Path(__file__).parent / "out"
WORK = OUT / "quant"
METHODS = ("minmax", "ema", "percentile", "kl", "mse")


def ort_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + 1000].numpy()})[0] for i in range(0, len(x), 1000)]
    return np.concatenate(outs)


def sim_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)]).numpy()


def teacher_model(train, val, epochs: int) -> torch.nn.Module:
    path = OUT / "kd" / "teacher.safetensors"
    if path.exists():
        return load_model(path).eval()
    torch.manual_seed(0)
    teacher = dq.models.create("vgg-small", width=0.5)
    dq.train(teacher, train, val, epochs=epochs, lr=2e-3, batch_size=128, progress=True)
    dq.save_weights(teacher, path)
    return teacher.eval()


def student_model(train, epochs: int) -> torch.nn.Module:
    path = OUT / "kd" / "student-kd-seed0.safetensors"
    if path.exists():
        return load_model(path).eval()
    torch.manual_seed(0)
    student = dq.models.create("lenet5")
    dq.train(student, train, epochs=epochs, lr=3e-3, batch_size=128, progress=False)
    return student.eval()


def ort_static(float_path: Path, out: Path, calib: torch.Tensor, method: str) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([calib[i : i + 64].numpy() for i in range(0, len(calib), 64)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    quantize_static(
        str(float_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, method),
    )
    return out


def ptq_table(teacher, calib, test, float_path: Path, repeats: int) -> tuple[list[dict], dict]:
    y = test.y.numpy()
    float_acc = float((ort_logits(float_path, test.x).argmax(1) == y).mean())
    rows = [{"name": "float", "path": float_path, "accuracy": float_acc, "seconds": 0.0, "agree": None}]
    for method in METHODS:
        t0 = time.perf_counter()
        q = quantize(teacher, calib, method=method)
        seconds = time.perf_counter() - t0  # fold, trace, calibrate (the export is timed apart)
        path = export_onnx(q, WORK / f"distiq-{method}.onnx", calib.x[:2])
        sim, got = sim_logits(q, test.x), ort_logits(path, test.x)
        integer = all(k.kernel == "integer" for k in kernels(path))
        rows.append(
            {
                "name": f"distiq {method}",
                "path": path,
                "accuracy": float((got.argmax(1) == y).mean()),
                "seconds": seconds,
                "agree": float((sim.argmax(1) == got.argmax(1)).mean()),
                "integer": integer,
            }
        )
        print(f"distiq {method:10s} acc {rows[-1]['accuracy']:.4f} agree {rows[-1]['agree']:.4f}", flush=True)
    for method in ("MinMax", "Entropy", "Percentile"):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = ort_static(float_path, WORK / f"ort-{method.lower()}.onnx", calib.x, method)
        seconds = time.perf_counter() - t0
        acc = float((ort_logits(path, test.x).argmax(1) == y).mean())
        row = {"name": f"ORT {method}", "path": path, "accuracy": acc, "seconds": seconds, "agree": None}
        rows.append(row)
        print(f"ORT {method:10s} acc {acc:.4f}", flush=True)
    latency = compare_latency({r["name"]: r["path"] for r in rows}, (1, 256), threads=2, repeats=repeats)
    for r in rows:
        r["bytes"] = r["path"].stat().st_size
        r["b1"], r["b256"] = latency[1][r["name"]], latency[256][r["name"]]
    return rows, {"float_acc": float_acc}


def qat_student(student, calib, train, test, qat_samples: int, epochs: int) -> dict:
    """4-bit (the check) and 2-bit (where PTQ visibly breaks) weights: PTQ vs QAT on the student."""
    acc = lambda m: dq.evaluate(m, test, ("accuracy",))["accuracy"]  # noqa: E731
    fit = subsample(train, qat_samples, seed=1)
    out = {"float": acc(student)}
    for bits in (4, 2):
        t0 = time.perf_counter()
        qat = quantize(student, calib, mode="qat", bits=bits, train_data=fit, epochs=epochs, lr=1e-4)
        out[f"qat_seconds_w{bits}"] = time.perf_counter() - t0
        out[f"qat_w{bits}a8"] = acc(qat)
        out[f"ptq_w{bits}"] = acc(quantize(student, mode="weight-only", bits=bits, example_input=calib.x[:2]))
        out[f"ptq_w{bits}a8"] = acc(quantize(student, calib, bits=bits))
    return out


def dynamic_mlp(train, test, repeats: int) -> dict:
    torch.manual_seed(0)
    mlp = dq.models.create("mlp", hidden=(1024, 1024))
    dq.train(mlp, subsample(train, 20000, seed=2), epochs=2, lr=1e-3, batch_size=128, progress=False)
    mlp.eval()
    q = quantize(mlp, mode="dynamic", example_input=test.x[:2])
    f_path = export_onnx(mlp, WORK / "mlp-float.onnx", test.x[:2])
    d_path = export_onnx(q, WORK / "mlp-dynamic.onnx", test.x[:2])
    times = compare_latency({"float": f_path, "dynamic": d_path}, (64,), threads=2, repeats=repeats)[64]
    y = test.y.numpy()
    return {
        "float_acc": float((ort_logits(f_path, test.x).argmax(1) == y).mean()),
        "dynamic_acc": float((ort_logits(d_path, test.x).argmax(1) == y).mean()),
        "float_ms": times["float"],
        "dynamic_ms": times["dynamic"],
        "speedup": times["float"] / times["dynamic"],
        "kernels": sorted({k.runtime_op for k in kernels(d_path)}),
    }


def report(rows: list[dict], info: dict, qat: dict, dyn: dict, teacher_desc: str) -> str:
    base = rows[0]
    lines = [
        f"Teacher {teacher_desc}; 512 calibration images (stratified, train split); test = 10,000 images; "
        "ORT CPU, 2 threads (no spinning), median of interleaved rounds.",
        "",
        "| model | test acc (ORT) | Δ vs float (pts) | sim↔ORT top-1 | size KB | × float | "
        "b1 ms | b256 ms | × float (b256) | quantize s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        agree = "" if r["agree"] is None else f"{100 * r['agree']:.2f}%"
        lines.append(
            f"| {r['name']} | {100 * r['accuracy']:.2f} | {100 * (r['accuracy'] - base['accuracy']):+.2f} | "
            f"{agree} | {r['bytes'] / 1024:.1f} | {r['bytes'] / base['bytes']:.3f} | {r['b1']:.3f} | "
            f"{r['b256']:.2f} | {r['b256'] / base['b256']:.3f} | {r['seconds']:.1f} |"
        )
    ours = [r for r in rows if r["name"].startswith("distiq")]
    theirs = [r for r in rows if r["name"].startswith("ORT")]
    best, best_ort = max(ours, key=lambda r: r["accuracy"]), max(theirs, key=lambda r: r["accuracy"])
    # distiq's and ORT's files share one graph structure: compare their medians, not two noisy samples
    ours_b256, ort_b256 = np.median([r["b256"] for r in ours]), np.median([r["b256"] for r in theirs])
    checks = [
        ("int8 file <= 0.3x float", max(r["bytes"] for r in ours) / base["bytes"] <= 0.3,
         f"max {max(r['bytes'] for r in ours) / base['bytes']:.3f}x"),
        ("best calibrator within 0.2 pts of float", base["accuracy"] - best["accuracy"] <= 0.002,
         f"{best['name']}: {100 * (best['accuracy'] - base['accuracy']):+.2f} pts"),
        ("best calibrator >= ORT's best", best["accuracy"] >= best_ort["accuracy"],
         f"{100 * best['accuracy']:.2f} vs {best_ort['name']} {100 * best_ort['accuracy']:.2f}"),
        ("b256 latency <= 0.5x float", best["b256"] <= 0.5 * base["b256"],
         f"{best['b256'] / base['b256']:.3f}x"),
        ("b256 latency <= 1.05x ORT's own", ours_b256 <= 1.05 * ort_b256,
         f"median {ours_b256:.1f} ms vs ORT's {ort_b256:.1f} ms ({ours_b256 / ort_b256:.3f}x)"),
        ("sim↔ORT top-1 agreement >= 99%", min(r["agree"] for r in ours) >= 0.99,
         f"min {100 * min(r['agree'] for r in ours):.2f}%"),
        ("all conv/gemm on integer kernels", all(r["integer"] for r in ours), ""),
    ]  # fmt: skip
    lost = qat["float"] - qat["ptq_w4"]
    recovered = (qat["qat_w4a8"] - qat["ptq_w4"]) / lost if lost > 0 else None
    checks.append(
        (
            "QAT recovers >= half of 4-bit PTQ's loss",
            None if recovered is None else recovered >= 0.5,
            f"{100 * recovered:.0f}%" if recovered is not None else "PTQ w4 loses nothing to recover",
        )
    )
    checks.append(("dynamic MLP >= 1.5x at batch 64", dyn["speedup"] >= 1.5, f"{dyn['speedup']:.2f}x"))
    lines += ["", "| Done-means check | met | value |", "|---|---|---|"]
    met = {True: "yes", False: "NO", None: "n/a"}
    lines += [f"| {name} | {met[ok]} | {value} |" for name, ok, value in checks]
    lines += [
        "",
        "QAT on the KD student (LSQ scales, KD from the float student, 8-bit activations):",
        "",
        "| weights | float | PTQ weight-only | PTQ w+a8 | QAT w+a8 | QAT s |",
        "|---|---|---|---|---|---|",
    ]
    for bits in (4, 2):
        lines.append(
            f"| {bits}-bit | {100 * qat['float']:.2f} | {100 * qat[f'ptq_w{bits}']:.2f} | "
            f"{100 * qat[f'ptq_w{bits}a8']:.2f} | {100 * qat[f'qat_w{bits}a8']:.2f} | "
            f"{qat[f'qat_seconds_w{bits}']:.0f} |"
        )
    lines += [
        "",
        f"Dynamic int8 MLP (784-1024-1024-10) at batch 64: float {dyn['float_ms']:.3f} ms, dynamic "
        f"{dyn['dynamic_ms']:.3f} ms ({dyn['speedup']:.2f}x; kernels {', '.join(dyn['kernels'])}); "
        f"accuracy {100 * dyn['float_acc']:.2f} -> {100 * dyn['dynamic_acc']:.2f}.",
    ]
    del info
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--repeats", type=int, default=60, help="interleaved latency rounds")
    ap.add_argument("--qat-samples", type=int, default=20000)
    ap.add_argument("--qat-epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)  # torch work is small; ORT timings use their own 2 threads
    warnings.filterwarnings("ignore", module="distiq.quant")
    WORK.mkdir(parents=True, exist_ok=True)
    full, test = dq.data.load("fashion-mnist", "train"), dq.data.load("fashion-mnist", "test")
    train, val = split(full, 5000 / len(full), seed=0)
    if args.quick:
        test, args.repeats, args.qat_samples, args.qat_epochs = subsample(test, 1000), 5, 2000, 1
    calib = subsample(train, 512, seed=0)
    teacher = teacher_model(train, val, epochs=3)
    config = teacher.config
    desc = f"{config['name']} (width {config.get('width')}, {dq.models.count_parameters(teacher):,} params)"
    float_path = export_onnx(teacher, WORK / "float.onnx", calib.x[:2])
    rows, info = ptq_table(teacher, calib, test, float_path, args.repeats)
    qat = qat_student(student_model(train, 3), calib, train, test, args.qat_samples, args.qat_epochs)
    print("QAT", qat, flush=True)
    dyn = dynamic_mlp(train, test, max(args.repeats, 20))
    print("dynamic", dyn, flush=True)
    text = report(rows, info, qat, dyn, desc)
    print("\n" + text)
    if not args.quick:
        (OUT / "quant.md").write_text(text)


if __name__ == "__main__":
    main()
