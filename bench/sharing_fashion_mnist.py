"""Deep Compression on Fashion-MNIST: pruning + weight sharing + entropy coding, LeNet-300-100 and LeNet-5.

For each network: train it dense, prune it gradually (global magnitude, cubic schedule, distilled from
the dense net), share its weights (a k-means codebook per layer, linear initialisation, centroids
fine-tuned with the assignments fixed, distilled again), store it with ``dq.sparse.save`` (shared
format: positions, code indices and codebooks, each stream the smaller of Huffman and LZMA), reload the
file into a fresh model and measure that. The ratio is float32 bytes of every parameter (biases
included) over the whole file (header, metadata and checksums included).

Epochs are fewer than the paper's (it retrains for far longer) so the run fits ~15 minutes on two busy
cores; the dense baseline is trained the same way for both rows of a model. Parameters were chosen on
the validation split (5,000 training images held out); test accuracy is only reported.

    .venv/bin/python bench/sharing_fashion_mnist.py           # full run (writes bench/out/sharing.md)
    .venv/bin/python bench/sharing_fashion_mnist.py --quick   # smoke run on a subsample
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

import distiq as dq
from distiq.data import split, subsample
from distiq.prune import prune, share_weights, sparse
from distiq.prune.sharing import sharing_table
from distiq.prune.sparse_format import effective_state

OUT = Path(__file__).parent / "out"
KD = {"loss": "kd", "temperature": 4.0, "alpha": 0.7}
# per network: sparsity of the gradual pruning, index bits (fc, conv), epochs of each stage, lrs
SETUPS = {
    "lenet300-100": dict(
        sparsity=0.95, bits=4, conv_bits=None, keep=(), biases=False, dense=15, prune=20, share=6, lr=1e-3
    ),
    # conv1 has 150 weights: global pruning would take two thirds of them (costly), keeping them is
    # cheap; biases are a sixth of this small net's file, so they are shared too
    "lenet5": dict(
        sparsity=0.94,
        bits=3,
        conv_bits=4,
        keep=("features.conv1",),
        biases=True,
        dense=15,
        prune=30,
        share=6,
        lr=2e-3,
    ),
}
SHARE_LR = 3e-4


def acc(model, data) -> float:
    return dq.evaluate(model, data, metrics=("accuracy",))["accuracy"]


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def file_bytes(model, values: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return sparse.save(model, Path(tmp) / "m.dqsp", values=values).file_bytes


def bit_identical(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a
    )


def run_one(name: str, setup: dict, train, val, test, run_dir: Path) -> tuple[list, str]:
    t0 = time.perf_counter()
    cache = run_dir / f"{name}-dense.safetensors"
    if cache.exists():
        dense = dq.load_model(cache)
    else:
        torch.manual_seed(0)
        dense = dq.models.create(name)
        dq.train(dense, train, val, epochs=setup["dense"], lr=setup["lr"], progress=False)
        dq.save_weights(dense, cache)
    base, n_params = acc(dense, test), dq.models.count_parameters(dense)
    print(f"{name}: dense {base:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    pruned = prune(
        dense,
        setup["sparsity"],
        train_data=train,
        val_data=val,
        pruning_schedule="cubic",
        exclude=setup["keep"],
        teacher="original",
        distill_options=dict(KD, alpha=setup.get("kd_alpha", KD["alpha"])),
        epochs=setup["prune"],
        lr=setup.get("prune_lr", setup["lr"]),
        progress=False,
    )
    a_pruned, int8_bytes = acc(pruned, test), file_bytes(pruned, "int8")
    print(
        f"{name}: pruned {a_pruned:.4f}, int8 file {int8_bytes:,} B ({time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    shared = share_weights(
        pruned,
        setup["bits"],
        conv_bits=setup["conv_bits"],
        biases=setup["biases"],
        init="linear",
        train_data=train,
        val_data=val,
        teacher=dense,
        distill_options=KD,
        epochs=setup["share"],
        lr=SHARE_LR,
        progress=False,
    )
    path = run_dir / f"{name}.dqsp"
    report = sparse.save(shared, path)
    restored = sparse.load_model(path)
    exact = bit_identical(effective_state(shared), restored.state_dict())
    a_final, a_val = acc(restored, test), acc(restored, val)
    ratio = 4 * n_params / report.file_bytes
    secs = time.perf_counter() - t0
    print(
        f"{name}: shared {a_final:.4f} (val {a_val:.4f}), {report.file_bytes:,} B, {ratio:.1f}x ({secs:.0f}s)"
    )
    bits = f"fc {setup['bits']}" + (f", conv {setup['conv_bits']}" if setup["conv_bits"] else "")
    row = [
        name,
        f"{100 * base:.2f}",
        f"{100 * a_pruned:.2f} ({int8_bytes:,} B int8)",
        f"{100 * a_final:.2f}",
        f"{100 * (a_final - base):+.2f}",
        f"{4 * n_params:,}",
        f"{report.file_bytes:,}",
        f"**{ratio:.1f}x**",
        f"{100 * setup['sparsity']:.0f}%, {bits} bits",
        "yes" if exact else "NO",
        f"{secs:.0f}",
    ]
    layers = sharing_table(shared)
    kept = f", {', '.join(setup['keep'])} left unpruned" if setup["keep"] else ""
    biases = ", biases shared too" if setup["biases"] else ""
    detail = [
        f"### {name}",
        "",
        f"Dense {setup['dense']} epochs (Adam {setup['lr']}, cosine); cubic pruning to "
        f"{100 * setup['sparsity']:.0f}% over {setup['prune']} epochs with KD from the dense net (alpha "
        f"{KD['alpha']}, T {KD['temperature']}){kept}; sharing ({bits} bits, linear init{biases}), "
        f"centroids and biases fine-tuned {setup['share']} epochs (Adam {SHARE_LR}, same KD). "
        f"Reloaded model bit-identical: {exact}.",
        "",
        table(
            ["tensor", "shape", "stored", "centroids", "positions", "values", "file B"],
            [
                [
                    r.name,
                    "x".join(map(str, r.shape)),
                    f"{r.stored:,}",
                    layers.get(r.name.removesuffix(".weight"), {}).get("centroids", "-"),
                    r.index,
                    r.values,
                    f"{r.file_bytes:,}",
                ]
                for r in report.records
            ],
        ),
        "",
    ]
    return row, "\n".join(detail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--only", choices=list(SETUPS), default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full, test = dq.data.load("fashion-mnist", "train"), dq.data.load("fashion-mnist", "test")
    train, val = split(full, 5000 / len(full), seed=0)
    setups = {k: dict(v) for k, v in SETUPS.items() if args.only in (None, k)}
    run_dir = OUT / ("sharing-quick" if args.quick else "sharing")
    if args.quick:
        train, val, test = subsample(train, 3000), subsample(val, 500), subsample(test, 1000)
        for s in setups.values():
            s.update(dense=2, prune=2, share=1)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, details = [], []
    for name, setup in setups.items():
        row, detail = run_one(name, setup, train, val, test, run_dir)
        rows.append(row)
        details.append(detail)
    header = ["model", "dense acc", "pruned acc", "final acc", "Δ points", "float32 B", "compressed B"]
    header += ["ratio", "sparsity, bits", "exact reload", "s"]
    text = "\n".join(
        [
            "# Weight sharing on Fashion-MNIST",
            "",
            f"`python bench/sharing_fashion_mnist.py{' --quick' if args.quick else ''}`, torch threads "
            f"{args.threads}, {platform.processor() or platform.machine()}; "
            f"wall {time.perf_counter() - t0:.0f} s.",
            "",
            table(header, rows),
            "",
            *details,
        ]
    )
    print("\n" + text)
    (OUT / f"{run_dir.name}.md").write_text(text)


if __name__ == "__main__":
    main()
