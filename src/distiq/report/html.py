"""The run report as one self-contained HTML page.

Why one file with everything inline (CSS, charts as base64 ``data:`` URIs, no external URL): the
report is mailed, attached to tickets and opened from air-gapped machines; it must look the same
there as on the machine that wrote it, with nothing to fetch. A tiny inline script records on
``<body data-images-loaded=N>`` how many images decoded, so a headless browser test can check the
page the way a person sees it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import Any

import yaml

from .plots import SECTIONS, Plot
from .quanttables import (
    KERNEL_HEADER,
    LAYER_HEADER,
    RANGE_HEADER,
    cpu_sentence,
    kernel_rows,
    kernel_sentence,
    layer_rows,
    quant_stages,
    range_rows,
    runtime_lines,
    search_stage_sentence,
    unrecorded_int8_stages,
)
from .splitplots import ATTRIBUTION, SPLITS, Table, attribution_chapter, splits_chapter
from .summary import (
    DASH,
    EXTRA_METRICS,
    Run,
    accuracy_scale,
    evaluated,
    extra_columns,
    final,
    fmt_accuracy,
    fmt_bytes,
    fmt_delta,
    fmt_extra,
    fmt_f1,
    fmt_ms,
    fmt_ratio,
    fmt_row,
    metrics,
    num,
    stage_rows,
    teacher,
    trials,
)

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --good:#2e7d32; --bad:#c62828;
        --accent:#1565c0; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:var(--bg); }
header { background:#102a43; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:26px; }
header .meta { color:#bcccdc; font-size:13px; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:8px 40px;
      position:sticky; top:0; z-index:1; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; font-size:13px; }
main { max-width:1180px; margin:0 auto; padding:24px 40px 60px; }
section { background:#fff; border:1px solid var(--line); border-radius:8px; padding:18px 22px;
          margin:0 0 22px; }
h2 { margin:0 0 14px; font-size:18px; }
h3 { font-size:15px; margin:18px 0 8px; }
h4 { font-size:13px; margin:14px 0 6px; color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:14px; margin:0 0 22px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
.warn { color:#b3261e; background:#fdecea; border-left:4px solid #b3261e; padding:8px 12px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:24px; font-weight:600; margin-top:2px; }
.card .sub { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th:first-child, td:first-child, th.l, td.l { text-align:left; }
th { background:#f0f4f8; font-weight:600; }
tbody tr:hover { background:#f7fafc; }
td { font-variant-numeric:tabular-nums; }
.pos { color:var(--good); } .neg { color:var(--bad); }
.kind { display:inline-block; padding:1px 8px; border-radius:10px; background:#e3f2fd; color:#0d47a1;
        font-size:11px; }
.reused { color:var(--muted); font-style:italic; }
.figs { display:grid; grid-template-columns:repeat(2,minmax(0,1fr)); gap:0 24px; }
figure { margin:0 0 22px; } figure.wide { grid-column:1 / -1; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; border:1px solid var(--line);
             border-radius:6px; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
figcaption b { color:var(--ink); }
.scroll { overflow-x:auto; }
.banner { padding:10px 14px; border-radius:6px; margin:0 0 14px; }
.banner.bad { background:#ffebee; color:var(--bad); } .banner.good { background:#e8f5e9; color:var(--good); }
pre { background:#f0f4f8; padding:12px 14px; border-radius:6px; overflow-x:auto; font-size:12px; }
details summary { cursor:pointer; color:var(--accent); margin:8px 0; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 30px; }
"""

IMAGES_LOADED_SCRIPT = (
    "<script>window.addEventListener('load',function(){var n=0;"
    "for(var i=0;i<document.images.length;i++){var m=document.images[i];"
    "if(m.complete&&m.naturalWidth>0)n++;}document.body.dataset.imagesLoaded=n;});</script>"
)
"""Sets ``data-images-loaded`` on ``<body>`` once the page has loaded: the rendering test's probe."""


def _table(
    header: list[str], rows: Iterable[list[str]], left: int = 1, row_class: list[str] | None = None
) -> str:
    """An HTML table; cells are escaped here, the first ``left`` columns align left."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{escape(h)}</th>' for i, h in enumerate(header))
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        tds = "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    )


def _signed(text: str, value: float | None, good_if_positive: bool = True) -> str:
    if value is None or value == 0:
        return escape(text)
    good = (value > 0) == good_if_positive
    return f'<span class="{"pos" if good else "neg"}">{escape(text)}</span>'


def _duration(start: Any, end: Any) -> str | None:
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except ValueError:
        return None
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _header(run: Run) -> str:
    info = run.info
    parts = [f"dataset <b>{escape(str(info['dataset']))}</b>" if info.get("dataset") else None]
    if info.get("started"):
        parts.append(f"started {escape(str(info['started']))}")
    if info.get("finished"):
        took = _duration(info.get("started"), info["finished"])
        parts.append(f"finished {escape(str(info['finished']))}" + (f" ({took})" if took else ""))
    elif info.get("started"):
        parts.append("<b>not finished</b>")
    parts.append(f"{len(run.stages)} stages")
    parts.append(escape(cpu_sentence(run) or ""))
    meta = " · ".join(p for p in parts if p)
    return f"<header><h1>{escape(run.name)}</h1><div class='meta'>{meta}</div></header>"


def _card(label: str, value: str, sub: str = "") -> str:
    return (
        f"<div class='card'><div class='label'>{escape(label)}</div><div class='value'>{value}</div>"
        f"<div class='sub'>{sub}</div></div>"
    )


def _cards(run: Run) -> str:
    """The headline: teacher against the delivered model, and the search outcome."""
    scale = accuracy_scale(run)
    base, last = teacher(run), final(run)
    rows = {id(s): r for s, r in zip(run.stages, stage_rows(run), strict=True)}
    cards = []
    if base is not None:
        cards.append(
            _card(
                "Teacher accuracy", fmt_accuracy(num(metrics(base), "accuracy"), scale), escape(base["name"])
            )
        )
    if last is not None:
        r = rows[id(last)]
        sub = escape(last["name"])
        if r["delta_vs_teacher"] is not None:
            sub += " · " + _signed(fmt_delta(r["delta_vs_teacher"]), r["delta_vs_teacher"])
        cards.append(_card("Final accuracy", fmt_accuracy(r["accuracy"], scale), sub))
        if r["size_ratio"] is not None:
            cards.append(_card("Smaller on disk", fmt_ratio(r["size_ratio"]), "teacher size / final size"))
        if r["speedup"] is not None:
            cards.append(_card("Faster", fmt_ratio(r["speedup"]), "teacher latency / final latency (p50)"))
    if run.search is not None:
        ts = trials(run)
        chosen = next((t for t in ts if t.get("chosen")), None)
        sub = f"chosen #{escape(str(chosen.get('id', '?')))}" if chosen else "none chosen"
        cards.append(_card("Search trials", str(len(ts)), sub))
    return f"<div class='cards'>{''.join(cards)}</div>" if cards else ""


def _stage_tables(run: Run) -> str:
    scale = accuracy_scale(run)
    raw = stage_rows(run)
    shown = [fmt_row(r, scale) for r in raw]
    header = list(shown[0]) if shown else []
    rows = []
    for r, f in zip(raw, shown, strict=True):
        cells = [escape(v) for v in f.values()]
        cells[1] = f"<span class='kind'>{escape(f['Kind'])}</span>"
        cells[header.index("Δ vs teacher")] = _signed(f["Δ vs teacher"], r["delta_vs_teacher"])
        rows.append(cells)
    html = _table(header, rows, left=2, row_class=["reused" if r["skipped"] else "" for r in raw])
    extra = extra_columns(run)
    if extra:
        html += "<h3>More metrics</h3>" + _table(
            ["Stage"] + [EXTRA_METRICS[k] for k in extra],
            [
                [escape(s["name"])] + [escape(fmt_extra(k, metrics(s).get(k), scale)) for k in extra]
                for s in run.stages
            ],
        )
    per_class = [s for s in evaluated(run) if isinstance(metrics(s).get("f1_per_class"), list)]
    if per_class:
        names = metrics(per_class[-1]).get("class_names") or []
        n = max(len(metrics(s)["f1_per_class"]) for s in per_class)
        body = []
        for c in range(n):
            label = str(names[c]) if c < len(names) else str(c)
            vals = [metrics(s)["f1_per_class"] for s in per_class]
            body.append(
                [escape(label)]
                + [fmt_f1(v[c] if c < len(v) and isinstance(v[c], int | float) else None) for v in vals]
            )
        html += (
            "<details><summary>F1 per class</summary>"
            + _table(["Class"] + [s["name"] for s in per_class], body)
            + "</details>"
        )
    return html


def _figure(p: Plot) -> str:
    data = base64.b64encode(p.png).decode("ascii")
    return (
        f"<figure id='fig-{escape(p.key)}' class='{'wide' if p.wide else ''}'>"
        f"<img alt='{escape(p.title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{escape(p.title)}.</b> {escape(p.caption)}</figcaption></figure>"
    )


def _quant_details(run: Run) -> str:
    """Kernels, per-layer error and calibration ranges of each stage with a quantization record."""
    out = []
    for s, q in quant_stages(run):
        out.append(f"<h3>{escape(s['name'])}</h3>")
        for line in runtime_lines(q):
            style = " class='warn'" if line.startswith("WARNING") else ""
            out.append(f"<p{style}><b>{escape(line)}</b></p>" if style else f"<p>{escape(line)}</p>")
        sentence = kernel_sentence(q)
        if sentence:
            out.append(f"<p>{escape(sentence)}</p>")
            out.append(_table(KERNEL_HEADER, _escaped(kernel_rows(q)), left=3))
        layers = layer_rows(run, q)
        if layers:
            out.append("<h4>Per-layer quantization error</h4>" + _table(LAYER_HEADER, _escaped(layers)))
        ranges = range_rows(q)
        if ranges:
            out.append("<h4>Calibration ranges</h4>" + _table(RANGE_HEADER, _escaped(ranges), left=2))
    for s in unrecorded_int8_stages(run):
        out.append(f"<h3>{escape(s['name'])}</h3><p>{escape(search_stage_sentence(run))}</p>")
    return "".join(out)


def _chapter(blocks: list[str | Table]) -> str:
    """A chapter's paragraphs and tables (:mod:`distiq.report.splitplots`)."""
    return "".join(
        f"<p>{escape(b)}</p>"
        if isinstance(b, str)
        else f"<h4>{escape(b.heading)}</h4>" + _table(b.header, _escaped(b.rows))
        for b in blocks
    )


def _escaped(rows: list[list[str]]) -> list[list[str]]:
    return [[escape(c) for c in row] for row in rows]


def _search_details(run: Run) -> str:
    s = run.search or {}
    scale = accuracy_scale(run)
    budget = escape(json.dumps(s.get("budget")))
    out = [f"<p>Objective: <b>{escape(str(s.get('objective', DASH)))}</b> · budget <code>{budget}</code></p>"]
    missed = num(s, "missed_by")
    chosen = next((t for t in trials(run) if t.get("chosen")), None)
    if missed is not None and missed > 0:
        out.insert(
            0,
            "<div class='banner bad'>No candidate met the budget; the closest one (kept and reported) "
            f"misses it by {missed * scale:.2f} points.</div>",
        )
    elif chosen is not None and chosen.get("meets_budget"):
        out.insert(0, "<div class='banner good'>The chosen model meets the budget.</div>")
    body, cls = [], []
    for t in trials(run):
        params = t.get("params")
        body.append(
            [
                escape(str(t.get("id", DASH))),
                escape(json.dumps(params, sort_keys=True) if params is not None else DASH),
                fmt_accuracy(num(t, "val_accuracy"), scale),
                fmt_bytes(num(t, "size_bytes")),
                fmt_ms(num(t, "latency_ms")),
                "yes" if t.get("meets_budget") else "no",
                "★" if t.get("chosen") else "",
            ]
        )
        cls.append("" if not t.get("chosen") else "chosen")
    if body:
        header = ["Trial", "Parameters", "Val accuracy", "Size", "Latency", "Meets budget", "Chosen"]
        out.append(
            f"<details><summary>All {len(body)} trials</summary>"
            + _table(header, body, left=2, row_class=cls)
            + "</details>"
        )
    return "".join(out)


def _artifacts(run: Run) -> str:
    rows = []
    for s in run.stages:
        arts = s.get("artifacts") if isinstance(s.get("artifacts"), dict) else {}
        links = [
            f"<a href='../{escape(str(p))}'>{escape(str(k))}</a>"
            for k, p in arts.items()
            if isinstance(p, str)
        ]
        if links or s.get("dir"):
            rows.append(
                [
                    escape(s["name"]),
                    f"<code>{escape(str(s.get('dir', DASH)))}</code>",
                    " · ".join(links) or DASH,
                ]
            )
    return _table(["Stage", "Folder", "Files"], rows, left=3) if rows else ""


def _environment(run: Run) -> str:
    out = []
    versions = run.info.get("versions")
    if isinstance(versions, dict) and versions:
        out.append(
            _table(
                ["Package", "Version"],
                [[escape(str(k)), escape(str(v))] for k, v in versions.items()],
                left=2,
            )
        )
    recipe = run.info.get("recipe")
    if recipe:
        try:
            text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
        except yaml.YAMLError:
            text = json.dumps(recipe, indent=2, default=str)
        out.append(f"<h3>Recipe</h3><pre>{escape(text)}</pre>")
    return "".join(out)


def render_html(run: Run, plots: list[Plot]) -> str:
    """The whole page as a string."""
    by_section: dict[str, list[Plot]] = {}
    for p in plots:
        by_section.setdefault(p.section, []).append(p)
    sections = [("Stages", _stage_tables(run))]
    extras = {
        "Quantization": _quant_details(run),
        "Budget search": _search_details(run) if run.search else "",
        SPLITS: _chapter(splits_chapter(run)),
        ATTRIBUTION: _chapter(attribution_chapter(run)),
    }
    for name in SECTIONS:
        figs = "".join(_figure(p) for p in by_section.get(name, []))
        body = (f"<div class='figs'>{figs}</div>" if figs else "") + extras.get(name, "")
        sections.append((name, body))
    sections += [("Artifacts", _artifacts(run)), ("Environment", _environment(run))]
    sections = [(n, b) for n, b in sections if b]
    anchor = {n: "sec-" + n.lower().replace(" ", "-") for n, _ in sections}
    nav = "".join(f"<a href='#{anchor[n]}'>{escape(n)}</a>" for n, _ in sections)
    body = "".join(f"<section id='{anchor[n]}'><h2>{escape(n)}</h2>{b}</section>" for n, b in sections)
    version = escape(str((run.info.get("versions") or {}).get("distiq", "")))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(run.name)} — distiq report</title><style>{CSS}</style>{IMAGES_LOADED_SCRIPT}</head>"
        f"<body>{_header(run)}<nav>{nav}</nav><main>{_cards(run)}{body}</main>"
        f"<footer>Written by distiq {version} from {escape(str(run.dir.name))}/run.json · "
        "rebuild with <code>distiq report RUN_DIR</code></footer></body></html>\n"
    )
