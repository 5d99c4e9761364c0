"""Pruning on Fashion-MNIST: how sparse, how small, how fast, and what it costs in accuracy.

1. LeNet-300-100 (266,610 parameters): global magnitude pruning at several sparsities, test accuracy
   right after pruning and after fine-tuning; then the headline recipe (gradual cubic schedule to
   ``--sparsity``, fine-tuned) stored as int8 in the sparse format, against its float32 bytes.
2. The CNN teacher (vgg-small from ``bench/out/kd/teacher.safetensors`` if the KD benchmark wrote it,
   else one trained here): unstructured sparsity curve (short fine-tune on a subsample), then channel
   pruning at several ratios: ONNX Runtime latency (2 threads, batch 256, median of interleaved runs)
   and accuracy before/after fine-tuning (distilled from the unpruned model), plus int8 quantization.
3. Writes ``bench/out/prune.md`` and PNG figures in ``bench/out/prune/``.

    .venv/bin/python bench/prune_fashion_mnist.py            # full run (about 8 minutes on 2 cores)
    .venv/bin/python bench/prune_fashion_mnist.py --quick    # smoke run on a subsample
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import distiq as dq  # noqa: E402
from distiq.data import split, subsample  # noqa: E402
from distiq.evaluate.latency import export_for_timing  # noqa: E402
from distiq.prune import prune, sparse, sparsity_table  # noqa: E402
from distiq.runtime import time_files  # noqa: E402

OUT = Path(__file__).parent / "out"
RUN = OUT / "prune"
KD_TEACHER = OUT / "kd" / "teacher.safetensors"
KD = {"loss": "kd", "temperature": 4.0, "alpha": 0.7}  # LeNet-300-100 recovery
KD_CNN = {"loss": "kd", "temperature": 2.0, "alpha": 0.5}  # channel-pruned CNN recovery


def acc(model, data) -> float:
    return dq.evaluate(model, data, metrics=("accuracy",))["accuracy"]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def trained(path: Path, name: str, options: dict, train, val, epochs: int, lr: float):
    if path.exists():
        return dq.load_model(path)
    torch.manual_seed(0)
    model = dq.models.create(name, **options)
    dq.train(model, train, val, epochs=epochs, lr=lr, progress=False)
    dq.save_weights(model, path)
    return model


def sparse_bytes(model, values: str) -> int:
    """Bytes of ``model`` in the sparse format."""
    with tempfile.TemporaryDirectory() as tmp:
        return sparse.save(model, Path(tmp) / "m.dqsp", values=values).file_bytes


def lenet_section(args, train, val, test, md: list[str], figs: dict) -> dict:
    t0 = time.perf_counter()
    dense = trained(RUN / "lenet300-100.safetensors", "lenet300-100", {}, train, val, args.lenet_epochs, 1e-3)
    base = acc(dense, test)
    n_params = dq.models.count_parameters(dense)
    rows, curve = [], []
    for amount in args.amounts:
        oneshot = prune(dense, amount)
        tuned = prune(
            dense,
            amount,
            train_data=train,
            val_data=val,
            pruning_schedule="cubic",
            epochs=args.curve_epochs,
            lr=1e-3,
            progress=False,
        )
        f32, i8 = sparse_bytes(tuned, "float32"), sparse_bytes(tuned, "int8")
        a0, a1 = acc(oneshot, test), acc(tuned, test)
        curve.append((amount, a0, a1, f32, i8))
        rows.append(
            [
                f"{100 * amount:.0f}%",
                pct(a0),
                pct(a1),
                f"{100 * (a1 - base):+.2f}",
                f"{f32:,}",
                f"{i8:,}",
                f"{4 * n_params / i8:.1f}x",
            ]
        )
        print(f"lenet {amount:.2f}: one-shot {a0:.4f}, tuned {a1:.4f}, int8 {i8:,} B", flush=True)
    # headline: gradual pruning + distillation from the unpruned net, stored as int8
    best = prune(
        dense,
        args.sparsity,
        train_data=train,
        val_data=val,
        pruning_schedule="cubic",
        teacher="original",
        distill_options=KD,
        epochs=args.headline_epochs,
        lr=1e-3,
        progress=False,
    )
    path = RUN / "lenet300-100.dqsp"
    report = sparse.save(best, path, values="int8")
    restored = sparse.load_model(path)
    a_float, a_int8 = acc(best, test), acc(restored, test)
    st = RUN / "lenet300-100-pruned.safetensors"
    dq.save_weights(best, st)
    layers = sparsity_table(best)
    md += [
        "## LeNet-300-100",
        "",
        f"Dense: {pct(base)}% test accuracy, {n_params:,} parameters = {4 * n_params:,} float32 bytes. "
        f"Global magnitude pruning; 'tuned' = cubic schedule (Zhu & Gupta) over {args.curve_epochs} "
        "fine-tuning epochs (ramp 60%), Adam 1e-3 cosine. Bytes: the sparse format (lzma).",
        "",
        table(["sparsity", "one-shot acc", "tuned acc", "Δ vs dense", "float32 B", "int8 B", "int8 ×"], rows),
        "",
        f"**Headline** ({args.headline_epochs} epochs, cubic to {100 * args.sparsity:.0f}%, distilled from "
        f"the dense net, alpha {KD['alpha']}, T {KD['temperature']}): float {pct(a_float)}%, int8 sparse "
        f"file {pct(a_int8)}% (Δ {100 * (a_int8 - base):+.2f} points); {report.file_bytes:,} bytes vs "
        f"{4 * n_params:,} float32 = **{4 * n_params / report.file_bytes:.1f}× smaller** "
        f"(safetensors of the pruned model: {st.stat().st_size:,} B).",
        "",
        table(
            ["layer", "weights", "non-zero", "sparsity"],
            [
                [k, f"{r['params']:,}", f"{r['nonzero']:,}", f"{100 * r['sparsity']:.2f}%"]
                for k, r in layers.items()
            ],
        ),
        "",
        table(
            ["tensor", "shape", "stored", "index", "values", "file B"],
            [
                [r.name, "x".join(map(str, r.shape)), f"{r.stored:,}", r.index, r.values, f"{r.file_bytes:,}"]
                for r in report.records
            ],
        ),
        "",
    ]
    figs["lenet"] = (base, curve)
    print(
        f"lenet headline: {a_int8:.4f} (dense {base:.4f}), {report.file_bytes:,} B, "
        f"{4 * n_params / report.file_bytes:.1f}x; {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    return {
        "base": base,
        "int8": a_int8,
        "ratio": 4 * n_params / report.file_bytes,
        "sparsity": args.sparsity,
    }


def interleaved_latency(models: dict, batch: int, threads: int, runs: int) -> dict[str, float]:
    """Median ms per batch for each model (module or ONNX file), timed together by distiq's one timer."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            name: model
            if isinstance(model, Path)
            else export_for_timing(model, (1, 28, 28), Path(tmp) / f"{i}.onnx")
            for i, (name, model) in enumerate(models.items())
        }
        timed = time_files(paths, (batch,), threads=threads, rounds=runs)[batch]
    return {name: r.p50_ms for name, r in timed.items()}


def cnn_section(args, train, val, test, md: list[str], figs: dict) -> dict:
    t0 = time.perf_counter()
    if KD_TEACHER.exists():
        teacher, source = dq.load_model(KD_TEACHER), str(KD_TEACHER.relative_to(OUT.parent))
    else:
        source = "trained here (vgg-small, width 0.5)"
        teacher = trained(
            RUN / "vgg-small.safetensors",
            "vgg-small",
            {"width": 0.5},
            train,
            val,
            args.cnn_teacher_epochs,
            2e-3,
        )
    base = acc(teacher, test)
    small = subsample(train, args.cnn_subsample)
    curve, rows = [], []
    for amount in args.cnn_amounts:
        oneshot = prune(teacher, amount)
        tuned = prune(teacher, amount, train_data=small, epochs=1, lr=5e-4, progress=False)
        a0, a1 = acc(oneshot, test), acc(tuned, test)
        curve.append((amount, a0, a1))
        rows.append([f"{100 * amount:.0f}%", pct(a0), pct(a1), f"{100 * (a1 - base):+.2f}"])
        print(f"cnn unstructured {amount:.2f}: {a0:.4f} -> {a1:.4f}", flush=True)
    md += [
        "## CNN teacher",
        "",
        f"Teacher: {source}, {pct(base)}% test accuracy, {dq.models.count_parameters(teacher):,} parameters.",
        "",
        f"Unstructured global magnitude pruning; 'tuned' = 1 epoch on {len(small):,} training images.",
        "",
        table(["sparsity", "one-shot acc", "tuned acc", "Δ vs dense"], rows),
        "",
    ]
    imp_rows = []
    for importance, scope in (("l1", "layer"), ("l2", "layer"), ("bn", "layer"), ("l1", "global")):
        p = prune(teacher, 0.5, structured=True, importance=importance, scope=scope)
        imp_rows.append([importance, scope, f"{dq.models.count_parameters(p):,}", pct(acc(p, test))])
    pruned, srows = {"dense": teacher}, []
    light = subsample(train, args.cnn_ft_samples) if args.cnn_ft_samples < len(train) else train
    for ratio in args.ratios:
        p0 = prune(teacher, ratio, structured=True, scope="layer", importance="l1")
        # the headline ratio (half the channels) gets the full recipe; the others a light one
        ft, epochs, lr = (train, args.cnn_epochs, args.cnn_lr) if ratio == 0.5 else (light, 1, 1e-3)
        t = time.perf_counter()
        p1 = prune(
            teacher,
            ratio,
            structured=True,
            scope="layer",
            importance="l1",
            train_data=ft,
            val_data=val,
            teacher="original",
            distill_options=KD_CNN,
            epochs=epochs,
            lr=lr,
            progress=False,
        )
        secs = time.perf_counter() - t
        pruned[f"{ratio:.2f}"] = p1
        srows.append(
            [ratio, dq.models.count_parameters(p1), acc(p0, test), acc(p1, test), epochs, len(ft), secs]
        )
        print(f"cnn channels {ratio:.2f}: {srows[-1][2]:.4f} -> {srows[-1][3]:.4f} ({secs:.0f}s)", flush=True)
    quant_note = "not tried"
    try:  # the quantization module is developed beside this one; report, do not fail, if it is not ready
        q = dq_quantize(pruned["0.50"], small)
        path = RUN / "vgg-small-half-int8.onnx"
        from distiq.quant import export_onnx

        export_onnx(q, path, small.x[:1])
        pruned["0.50 int8"] = path
        quant_note = f"int8 static QDQ (minmax): {pct(acc_onnx(path, test))}% test accuracy"
    except Exception as e:  # noqa: BLE001
        quant_note = f"quantization failed: {type(e).__name__}: {e}"
    lat = interleaved_latency(pruned, batch=256, threads=2, runs=args.latency_runs)
    dense_ms = lat["dense"]
    rows = [
        [
            "dense",
            f"{dq.models.count_parameters(teacher):,}",
            pct(base),
            pct(base),
            "-",
            f"{dense_ms:.1f}",
            "1.00",
        ]
    ]
    for ratio, n, a0, a1, epochs, images, _secs in srows:
        ms = lat[f"{ratio:.2f}"]
        ft_note = f"{epochs} × {images:,}"
        rows.append(
            [f"{ratio:.2f}", f"{n:,}", pct(a0), pct(a1), ft_note, f"{ms:.1f}", f"{ms / dense_ms:.2f}"]
        )
    if "0.50 int8" in lat:
        rows.append(
            [
                "0.50 + int8",
                "",
                "",
                quant_note.split(": ")[-1],
                "",
                f"{lat['0.50 int8']:.1f}",
                f"{lat['0.50 int8'] / dense_ms:.2f}",
            ]
        )
    md += [
        "Channel pruning (Torch-Pruning dependency graph, L1 importance, every layer loses `ratio` of its "
        "output channels, the classifier's outputs kept), fine-tuned with KD from the unpruned teacher "
        f"(alpha {KD_CNN['alpha']}, T {KD_CNN['temperature']}), Adam cosine: ratio 0.5 for "
        f"{args.cnn_epochs} epochs of all {len(train):,} images at lr {args.cnn_lr}, "
        f"the others 1 epoch of {len(light):,} at 1e-3. "
        "ONNX Runtime float latency, 2 threads, batch 256, "
        f"median of {args.latency_runs} interleaved runs.",
        "",
        table(
            [
                "ratio",
                "params",
                "acc before FT",
                "acc after FT",
                "FT epochs × images",
                "ms / batch 256",
                "× dense",
            ],
            rows,
        ),
        "",
        f"Half the channels, quantized: {quant_note}.",
        "",
        "Importance at ratio 0.5, before fine-tuning:",
        "",
        table(["importance", "scope", "params", "test acc"], imp_rows),
        "",
    ]
    figs["cnn"] = (base, curve, srows, lat)
    half = next(r for r in srows if r[0] == 0.5)
    print(f"cnn section {time.perf_counter() - t0:.0f}s", flush=True)
    return {"base": base, "half_acc": half[3], "half_latency": lat["0.50"] / dense_ms}


def dq_quantize(model, calib):
    from distiq.quant import quantize

    return quantize(
        copy.deepcopy(model).eval(), calib.subset(torch.arange(512)), mode="static", method="minmax"
    )


def acc_onnx(path: Path, test) -> float:
    return dq.evaluate(str(path), test, metrics=("accuracy",))["accuracy"]


def figures(figs: dict) -> list[str]:
    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    if "lenet" in figs:
        base, curve = figs["lenet"]
        s = [100 * c[0] for c in curve]
        ax.plot(s, [100 * c[1] for c in curve], "o--", label="LeNet-300-100 one-shot")
        ax.plot(s, [100 * c[2] for c in curve], "o-", label="LeNet-300-100 fine-tuned")
        ax.axhline(100 * base, color="C0", lw=0.5)
    if "cnn" in figs:
        base, curve, _, _ = figs["cnn"]
        s = [100 * c[0] for c in curve]
        ax.plot(s, [100 * c[1] for c in curve], "s--", label="vgg-small one-shot")
        ax.plot(s, [100 * c[2] for c in curve], "s-", label="vgg-small fine-tuned (1 short epoch)")
        ax.axhline(100 * base, color="C2", lw=0.5)
    ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title="Magnitude pruning on Fashion-MNIST")
    ax.set_ylim(bottom=60)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RUN / "sparsity_accuracy.png", dpi=120)
    names.append(f"{RUN.name}/sparsity_accuracy.png")
    if "lenet" in figs:
        _, curve = figs["lenet"]
        fig, ax = plt.subplots(figsize=(6, 4))
        s = [100 * c[0] for c in curve]
        ax.semilogy(s, [266_610 * 4] * len(s), "k:", label="dense float32")
        ax.semilogy(s, [c[3] for c in curve], "o-", label="sparse, float32 values")
        ax.semilogy(s, [c[4] for c in curve], "o-", label="sparse, int8 values")
        ax.set(xlabel="sparsity (%)", ylabel="bytes", title="LeNet-300-100 storage")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RUN / "bytes.png", dpi=120)
        names.append(f"{RUN.name}/bytes.png")
    if "cnn" in figs:
        base, _, srows, lat = figs["cnn"]
        fig, ax = plt.subplots(figsize=(6, 4))
        r = [0.0] + [row[0] for row in srows]
        ax.plot(r, [1.0] + [lat[f"{x:.2f}"] / lat["dense"] for x in r[1:]], "o-", label="latency × dense")
        ax2 = ax.twinx()
        ax2.plot(r, [100 * base] + [100 * row[3] for row in srows], "s-", color="C1", label="accuracy")
        ax.set(xlabel="channel ratio removed", ylabel="ORT latency × dense (batch 256, 2 threads)")
        ax2.set_ylabel("test accuracy (%)")
        handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(RUN / "channels_latency.png", dpi=120)
        names.append(f"{RUN.name}/channels_latency.png")
    plt.close("all")
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (ORT timing uses 2)")
    ap.add_argument("--sparsity", type=float, default=0.94, help="headline LeNet-300-100 sparsity")
    ap.add_argument("--lenet-epochs", type=int, default=20)
    ap.add_argument("--curve-epochs", type=int, default=6)
    ap.add_argument("--headline-epochs", type=int, default=25)
    ap.add_argument("--cnn-epochs", type=int, default=4, help="fine-tuning epochs at channel ratio 0.5")
    ap.add_argument("--cnn-lr", type=float, default=2e-3, help="fine-tuning lr at channel ratio 0.5")
    ap.add_argument("--cnn-ft-samples", type=int, default=20_000, help="images for the other ratios")
    ap.add_argument("--cnn-teacher-epochs", type=int, default=4)
    ap.add_argument("--cnn-subsample", type=int, default=5_000, help="images for the unstructured curve")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--skip", choices=["lenet", "cnn"], default=None)
    args = ap.parse_args()
    args.amounts, args.cnn_amounts, args.ratios = (
        [0.5, 0.8, 0.9, 0.95, 0.98],
        [0.5, 0.8, 0.9, 0.95],
        [0.25, 0.5, 0.75],
    )
    torch.set_num_threads(args.threads)
    full, test = dq.data.load("fashion-mnist", "train"), dq.data.load("fashion-mnist", "test")
    train, val = split(full, 5000 / len(full), seed=0)
    global RUN
    if args.quick:
        RUN = OUT / "prune-quick"
        train, val, test = subsample(train, 3000), subsample(val, 500), subsample(test, 1000)
        args.lenet_epochs, args.curve_epochs, args.headline_epochs, args.cnn_epochs = 2, 1, 2, 1
        args.cnn_teacher_epochs, args.cnn_subsample, args.latency_runs = 1, 1000, 5
        args.cnn_ft_samples = 2000
    RUN.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    md = [
        "# Pruning on Fashion-MNIST",
        "",
        f"`python bench/prune_fashion_mnist.py` (torch threads: {args.threads}; "
        "dense models are cached in bench/out/prune/).",
        "",
    ]
    figs: dict = {}
    results = {}
    if args.skip != "lenet":
        results["lenet"] = lenet_section(args, train, val, test, md, figs)
    if args.skip != "cnn":
        results["cnn"] = cnn_section(args, train, val, test, md, figs)
    md += [f"![{n}]({n})" for n in figures(figs)]
    md += ["", f"Wall time: {time.perf_counter() - t0:.0f} s.", ""]
    text = "\n".join(md)
    print("\n" + text)
    (OUT / f"{RUN.name}.md").write_text(text)
    print(results)


if __name__ == "__main__":
    main()
