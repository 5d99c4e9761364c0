"""Concept distillation on Fashion-MNIST: does a 10-class teacher help a 4-concept student?

The teacher is a CNN over Fashion-MNIST's 10 classes. The student predicts the 4 concepts of the
shipped mapping ``fashion-mnist-4`` (upper-body garment, lower/full-body garment, footwear, bag)
and is trained with the same architecture, epochs, optimiser and transfer subset in three ways:

- ``labels``: cross-entropy on the concept labels alone;
- ``concept-kd, soften labels``: :func:`distiq.distill.concept.distill_concepts` with
  ``temperature_on="labels"``: ``p_c = Σ_{k∈c} softmax(t/T)_k``;
- ``concept-kd, soften concepts``: the same with ``temperature_on="concepts"`` (the default):
  ``p = softmax(z/T)``, ``z_c = logsumexp_{k∈c} t_k``.

Transfer sets are small stratified subsets of the teacher's training split (1k and 2k images; a
limited transfer set is where a teacher can add something), drawn per seed with
:func:`distiq.evaluate.data_ratios`; 3 seeds. T, alpha and the softening form were chosen on the
5,000-image validation split (``--sweep`` reruns that selection); the test set is used once, for
the table: macro F1 and accuracy as mean ± std with a 95% Student-t interval, the paired difference
to ``labels``, and McNemar's test per seed.

    .venv/bin/python bench/concept_fashion_mnist.py            # writes bench/out/concept.md (~5 min)
    .venv/bin/python bench/concept_fashion_mnist.py --sweep    # the validation sweep (~6 min)
    .venv/bin/python bench/concept_fashion_mnist.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # OpenMP with 2 threads is ~10x slower when the other core is busy

import distiq as dq  # noqa: E402
from distiq.data import split, subsample  # noqa: E402
from distiq.data.concepts import load_mapping, to_concepts  # noqa: E402
from distiq.data.fashion_mnist import CLASSES  # noqa: E402
from distiq.distill.concept import distill_concepts  # noqa: E402
from distiq.engine.weights import load_model  # noqa: E402
from distiq.evaluate import data_ratios, mcnemar, model_logits, spread  # noqa: E402

OUT = Path(__file__).parent / "out"
TEACHER_FILE = OUT / "kd" / "teacher.safetensors"  # written by bench/kd_fashion_mnist.py
OWN_TEACHER_FILE = OUT / "concept" / "teacher.safetensors"
STUDENT = dict(name="vgg-small", width=0.25)
METRICS = ("f1_macro", "accuracy")
METHODS = {
    "labels": None,
    "concept-kd, soften labels (T=4)": dict(temperature=4.0, alpha=0.9, temperature_on="labels"),
    "concept-kd, soften concepts (T=4)": dict(temperature=4.0, alpha=0.9, temperature_on="concepts"),
}
SWEEP = {
    "labels": None,
    "soften labels T=1": dict(temperature=1.0, alpha=0.9, temperature_on="labels"),
    "soften labels T=4": dict(temperature=4.0, alpha=0.9, temperature_on="labels"),
    "soften concepts T=2": dict(temperature=2.0, alpha=0.9, temperature_on="concepts"),
    "soften concepts T=4": dict(temperature=4.0, alpha=0.9, temperature_on="concepts"),
}


def make_student(num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    opts = {k: v for k, v in STUDENT.items() if k != "name"}
    return dq.models.create(STUDENT["name"], num_classes=num_classes, image_size=28, **opts)


def get_teacher(train, val, epochs: int) -> tuple[torch.nn.Module, str]:
    for path in (TEACHER_FILE, OWN_TEACHER_FILE):
        if path.exists():
            return load_model(path), str(path.relative_to(OUT.parent))
    torch.manual_seed(0)
    teacher = dq.models.create("vgg-small", num_classes=10, width=0.5)
    dq.train(teacher, train, val, epochs=epochs, lr=2e-3, batch_size=128, progress=True)
    dq.save_weights(teacher, OWN_TEACHER_FILE)
    return teacher, f"trained here, {epochs} epochs"


def fmt(s, scale: float = 100.0) -> tuple[str, str]:
    """``mean ± std`` and ``[lo, hi]`` in points (n/a for a single value)."""
    if s.std is None:
        return f"{scale * s.mean:.2f}", "n/a"
    return f"{scale * s.mean:.2f} ± {scale * s.std:.2f}", f"[{scale * s.ci_low:.2f}, {scale * s.ci_high:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--sweep", action="store_true", help="choose T / softening on the validation split")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=25, help="student epochs (every method)")
    ap.add_argument("--teacher-epochs", type=int, default=4, help="only if no saved teacher exists")
    ap.add_argument("--sizes", default="1000,2000", help="transfer set sizes; the last is the headline")
    args = ap.parse_args()
    t_start = time.perf_counter()

    full, test10 = dq.data.load("fashion-mnist", "train"), dq.data.load("fashion-mnist", "test")
    train, val10 = split(full, 5000 / len(full), seed=0)  # the KD bench's teacher split
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = SWEEP if args.sweep else METHODS
    if args.quick:
        test10 = subsample(test10, 2000)
        args.seeds, args.epochs, sizes = 1, 2, [500]
    teacher, teacher_src = get_teacher(train, val10, args.teacher_epochs)
    mapping = load_mapping("fashion-mnist-4", teacher_labels=CLASSES)
    judge = to_concepts(val10 if args.sweep else test10, mapping)
    judged_on = "validation split" if args.sweep else "test set"
    t_fine = dq.evaluate(teacher, val10 if args.sweep else test10)["accuracy"]
    t_concept = mapping.index()[model_logits(teacher, judge).argmax(1)]  # teacher's class -> concept
    t_acc = float((t_concept == judge.y).double().mean())
    print(f"teacher ({teacher_src}): 10-class accuracy {t_fine:.4f}; as concepts {t_acc:.4f}")

    ratios = [n / len(train) for n in sizes]
    preds: dict[str, list[torch.Tensor]] = {m: [] for m in methods}  # size-major, then seed

    def fitter(opts):
        def fit(data, seed):
            student = make_student(mapping.num_concepts, seed)
            common = dict(epochs=args.epochs, lr=3e-3, batch_size=128, seed=seed, progress=False)
            if opts is None:
                dq.train(student, to_concepts(data, mapping), **common)
            else:  # offline: the teacher runs once per subset, not every epoch
                distill_concepts(teacher, student, data, mapping=mapping, offline=True, **opts, **common)
            return student

        return fit

    def scorer(method):
        def score(model, data):
            preds[method].append(model_logits(model, data).argmax(1))
            return dq.evaluate(model, data, METRICS)

        return score

    results = {}
    for method, opts in methods.items():
        t0 = time.perf_counter()
        results[method] = data_ratios(
            fitter(opts), train, judge, ratios=ratios, repeats=args.seeds, score=scorer(method)
        )
        summary = "; ".join(
            f"n={est.runs[0]['n_train']}: macro F1 {fmt(est.summary['f1_macro'])[0]}"
            for est in results[method].values()
        )
        print(f"{method} ({time.perf_counter() - t0:.0f} s): {summary}", flush=True)

    head = ratios[-1]
    n_params = dq.models.count_parameters(make_student(mapping.num_concepts, 0))
    title = "validation sweep" if args.sweep else "results on the test set"
    lines = [
        f"# Concept distillation on Fashion-MNIST (10 classes -> 4 concepts): {title}",
        "",
        f"Teacher: vgg-small width {teacher.config.get('width')} ({teacher_src}); "
        f"on the {judged_on}: 10-class accuracy "
        f"{100 * t_fine:.2f}%, its predictions mapped to concepts {100 * t_acc:.2f}%. "
        f"Student: vgg-small width {STUDENT['width']} with 4 outputs, {n_params:,} parameters. Every "
        f"student: {args.epochs} epochs, Adam lr 3e-3 cosine, batch 128, the same stratified transfer "
        f"subset per seed (drawn from the teacher's training split); concept KD with alpha = 0.9, "
        f"teacher logits computed once (offline). Judged on the {len(judge):,} images of the "
        f"{judged_on}, relabelled to concepts. {args.seeds} seed(s); ± is the sample std, the interval "
        "the 95% Student-t CI of the mean (t_{0.975, n-1} · s / √n).",
        "",
        f"## Transfer set of {sizes[-1]:,} images",
        "",
        "| student | macro F1 (%) | macro F1 95% CI | accuracy (%) | accuracy 95% CI | "
        "Δ macro F1 vs labels (paired) | Δ 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    base = [r["f1_macro"] for r in results["labels"][head].runs]
    for method in results:
        est = results[method][head]
        f1, f1_ci = fmt(est.summary["f1_macro"])
        acc, acc_ci = fmt(est.summary["accuracy"])
        delta, delta_ci = ("", "")
        if method != "labels":
            delta, delta_ci = fmt(spread([r["f1_macro"] - b for r, b in zip(est.runs, base, strict=True)]))
            delta = delta if delta.startswith("-") else "+" + delta
        lines.append(f"| {method} | {f1} | {f1_ci} | {acc} | {acc_ci} | {delta} | {delta_ci} |")
    if not args.sweep:
        lines += [
            "",
            "McNemar's paired test per seed (same images; A = labels, B = concept-kd): "
            "samples only A / only B gets right, p-value.",
            "",
            "| seed | " + " | ".join(m for m in results if m != "labels") + " |",
            "|---|" + "---|" * (len(results) - 1),
        ]
        first = (len(ratios) - 1) * args.seeds
        for seed in range(args.seeds):
            cells = []
            for method in results:
                if method == "labels":
                    continue
                r = mcnemar(preds["labels"][first + seed], preds[method][first + seed], judge.y)
                cells.append(f"{r.only_a_correct} / {r.only_b_correct}, p = {r.p_value:.2g}")
            lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    if len(ratios) > 1:
        lines += ["", "## By transfer set size (macro F1 %, mean ± std [95% CI])", ""]
        lines += ["| images | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
        for ratio, n in zip(ratios, sizes, strict=True):
            cells = [" ".join(fmt(results[m][ratio].summary["f1_macro"])) for m in results]
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall-clock time: {time.perf_counter() - t_start:.0f} s on 1 CPU thread."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if not args.quick:
        name = "concept-sweep" if args.sweep else "concept"
        (OUT / f"{name}.md").write_text(text)
        raw = {
            m: {str(n): e.to_dict() for n, e in zip(sizes, res.values(), strict=True)}
            for m, res in results.items()
        }
        (OUT / f"{name}.json").write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
