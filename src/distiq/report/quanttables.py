"""Per-stage quantization tables: the kernels ONNX Runtime runs, per-layer error, calibration ranges.

Why a module of its own: the HTML page and the Markdown file show the same rows, so they are built
(and formatted) here once, as plain strings each renderer escapes its own way.

Which stages have a chapter: every stage record carries a ``quant`` field, and float stages
(teacher, distill, prune) leave it empty. Only a record that holds something (kernels, layers or
histograms) is a quantization record; an empty one is no stage's "0 nodes run in integer arithmetic".
A budget-search stage ships an int8 file but records no ``quant`` of its own; it is named, with
the trial it chose, so the chapter does not silently skip the model the run delivers.
"""

from __future__ import annotations

from typing import Any

from distiq.quant.deploy import COMPARED_WITH

from .summary import DASH, Run, accuracy_scale, num, trials

RECORD_KEYS = ("integer_nodes", "float_nodes", "layers", "histograms")
"""The parts of a stage's ``quant`` record the chapter shows; a record with none of them is empty."""

KERNEL_HEADER = ["Node", "Kernel", "Why float"]
LAYER_HEADER = [
    "Layer",
    "Weight SQNR (dB)",
    "Activation SQNR (dB)",
    "Weight MSE",
    "Activation MSE",
    "Sensitivity (pt)",
    "Kept float",
]
RANGE_HEADER = ["Layer", "Calibrator", "Low", "High"]


def quant_record(stage: dict[str, Any]) -> dict[str, Any] | None:
    """A stage's quantization record, or None when it has none (absent, malformed or empty)."""
    q = stage.get("quant")
    if not isinstance(q, dict) or not any(q.get(k) for k in RECORD_KEYS):
        return None
    return q


def quant_stages(run: Run) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(stage, record)`` of every stage with a quantization record, in run order."""
    return [(s, q) for s in run.stages if (q := quant_record(s)) is not None]


def unrecorded_int8_stages(run: Run) -> list[dict[str, Any]]:
    """Budget-search stages: their int8 file was chosen among trials and has no ``quant`` record."""
    return [s for s in run.stages if s["kind"] == "search" and quant_record(s) is None]


def _float_nodes(q: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for f in q.get("float_nodes") or []:
        if isinstance(f, dict):
            out.append((str(f.get("node", DASH)), str(f.get("reason") or DASH)))
        elif f is not None:
            out.append((str(f), DASH))
    return out


def kernel_counts(q: dict[str, Any]) -> tuple[int, int]:
    """Compute nodes running integer kernels and nodes staying in float."""
    return len([n for n in q.get("integer_nodes") or [] if n is not None]), len(_float_nodes(q))


def kernel_sentence(q: dict[str, Any]) -> str | None:
    """``"3 of 4 compute nodes run in integer arithmetic; 1 stays in float."`` (None without kernels)."""
    ints, floats = kernel_counts(q)
    if ints + floats == 0:
        return None
    stays = "stays" if floats == 1 else "stay"
    return f"{ints} of {ints + floats} compute nodes run in integer arithmetic; {floats} {stays} in float."


def cpu_sentence(run: Run) -> str | None:
    """Where the run's latencies and int8 accuracies were measured (they hold for that CPU only)."""
    cpu = run.info.get("cpu")
    if not isinstance(cpu, dict) or not cpu.get("target"):
        return None
    sentence = (
        f"Latency and int8 accuracy measured on {cpu.get('model') or 'an unnamed CPU'} "
        f"(int8 path {cpu['target']}) with ONNX Runtime; other CPUs run other integer kernels."
    )
    timing = run.info.get("latency")
    if isinstance(timing, dict) and timing.get("rounds"):
        sentence += (
            f" All stages were timed together at the end of the run ({timing['rounds']} interleaved rounds, "
            f"{timing.get('threads', '?')} threads), so their speed ratios come from one measurement."
        )
    return sentence


def runtime_lines(q: dict[str, Any]) -> list[str]:
    """What ONNX Runtime delivered for the int8 file against its simulation, and any loud warning."""
    d = q.get("deploy")
    if not isinstance(d, dict) or d.get("agreement") is None:
        return []
    acc, cpu = d.get("accuracy") or {}, d.get("cpu") or {}
    where = f"{cpu.get('model', '?')} ({cpu.get('target', '?')})"
    line = f"On {where}, ONNX Runtime runs this int8 file"
    if acc.get("onnx") is not None:
        line += f" at {_fmt(100 * acc['onnx'], '.2f')}% accuracy"
        if acc.get("simulated") is not None:
            line += f" (the simulation predicted {_fmt(100 * acc['simulated'], '.2f')}%"
            line += f", float {_fmt(100 * acc['float'], '.2f')}%)" if acc.get("float") is not None else ")"
    line += (
        f"; top-1 agreement with {COMPARED_WITH[d.get('compared_with') or 'simulated']} "
        f"{_fmt(100 * d['agreement'], '.2f')}% on {d.get('samples', '?')} test samples; "
        f"file made for {d.get('file_target') or 'an unknown target'}."
    )
    loud = [w for w in d.get("warnings") or [] if "float kernel" not in w]
    return [line] + [f"WARNING: {w}" for w in loud]


def kernel_rows(q: dict[str, Any]) -> list[list[str]]:
    """One row per compute node of the int8 file: float nodes first (what a user acts on), with why."""
    rows = [[node, "float", why] for node, why in _float_nodes(q)]
    rows += [[str(n), "integer", DASH] for n in q.get("integer_nodes") or [] if n is not None]
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return DASH if value is None else format(value, spec)


def layer_rows(run: Run, q: dict[str, Any]) -> list[list[str]]:
    """Per-layer quantization error; the sensitivity drop in accuracy points (as in its chart)."""
    scale = accuracy_scale(run)
    rows = []
    for r in q.get("layers") or []:
        if not isinstance(r, dict):
            continue
        drop = num(r, "sensitivity_drop")
        rows.append(
            [
                str(r.get("layer", DASH)),
                _fmt(num(r, "weight_sqnr_db"), ".1f"),
                _fmt(num(r, "act_sqnr_db"), ".1f"),
                _fmt(num(r, "weight_mse"), ".3g"),
                _fmt(num(r, "act_mse"), ".3g"),
                _fmt(None if drop is None else drop * scale, ".2f"),
                "yes" if r.get("kept_float") else "no",
            ]
        )
    return rows


def range_rows(q: dict[str, Any]) -> list[list[str]]:
    """The clipping range calibration chose for each activation quantizer."""
    return [
        [
            str(h.get("layer", DASH)),
            str(h.get("method") or DASH),
            _fmt(num(h, "lo"), ".4g"),
            _fmt(num(h, "hi"), ".4g"),
        ]
        for h in q.get("histograms") or []
        if isinstance(h, dict) and (num(h, "lo") is not None or num(h, "hi") is not None)
    ]


def search_stage_sentence(run: Run) -> str:
    """What the chapter says of a budget-search stage (under its name), naming the trial it chose."""
    chosen = next((t for t in trials(run) if t.get("chosen")), None)
    params = chosen.get("params") if chosen else None
    what = f"trial #{chosen.get('id', '?')}" if chosen else "its chosen trial"
    if isinstance(params, dict) and params:
        what += " (" + ", ".join(f"{k} {_param(v)}" for k, v in params.items()) + ")"
    return (
        f"Int8 model chosen by the budget search, {what}. The search records no kernels, per-layer "
        "errors or calibration ranges for it."
    )


def _param(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)
