"""The Quantization chapter on run records shaped as the pipeline writes them.

Float stages carry an empty ``quant`` record; the chapter must show the int8 stage's kernels,
per-layer errors and calibration ranges, and never a "0 nodes" line for a float stage.
"""

from __future__ import annotations

import re
from html import unescape

from distiq.report import build_report

FLOAT_NODE = ["features.0 (Conv -> Conv)", "float", "weight is not quantized"]
KERNELS = [
    FLOAT_NODE,
    ["features.3 (Conv -> QLinearConv)", "integer", "—"],
    ["classifier.1 (Gemm -> QGemm)", "integer", "—"],
]
# by hand from make_pipeline_run: SQNR .1f dB, MSE .3g, sensitivity drop x100 in points (.2f)
LAYERS = [
    ["features.0", "—", "—", "0", "0", "1.25", "yes"],
    ["features.3", "41.2", "29.8", "2.5e-06", "0.00045", "0.30", "no"],
    ["classifier.1", "36.5", "33.0", "1.25e-05", "0.00015", "—", "no"],
]
RANGES = [["features.3.input_quant", "kl", "0", "3.25"], ["classifier.1.input_quant", "kl", "-1.5", "2.125"]]


def _section(html: str, name: str) -> str:
    return html.split(f"id='sec-{name}'", 1)[1].split("</section>", 1)[0]


def _tables(fragment: str) -> list[list[list[str]]]:
    """Body cells of every table in ``fragment``, tags stripped."""
    out = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", fragment, flags=re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
        cells = [
            [unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)] for r in rows
        ]
        out.append(cells)
    return out


def test_html_chapter_shows_the_int8_stage_and_no_float_stage(pipeline_run):
    html = build_report(pipeline_run)["html"].read_text()
    chapter = _section(html, "quantization")
    assert re.findall(r"<h3>(.*?)</h3>", chapter) == ["quantize", "search"]
    assert "0 nodes" not in chapter and "0 of" not in chapter
    assert chapter.count("run in integer arithmetic") == 1
    assert "2 of 3 compute nodes run in integer arithmetic; 1 stays in float." in chapter
    quantize = chapter.split("<h3>quantize</h3>", 1)[1].split("<h3>", 1)[0]
    assert _tables(quantize) == [KERNELS, LAYERS, RANGES]


def test_html_names_the_search_stages_chosen_trial(pipeline_run):
    chapter = _section(build_report(pipeline_run)["html"].read_text(), "quantization")
    search = unescape(chapter.split("<h3>search</h3>", 1)[1])
    assert "chosen by the budget search, trial #1 (prune 0.0, method kl, bits 8" in search
    assert "float_layers features.0)" in search
    assert "<table" not in search  # nothing recorded, nothing tabled


def test_markdown_chapter_has_the_same_rows(pipeline_run):
    md = build_report(pipeline_run)["markdown"].read_text()
    chapter = md.split("## Quantization\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"^### (.*)$", chapter, flags=re.M) == ["quantize", "search"]
    assert "0 nodes" not in chapter
    for row in KERNELS + LAYERS + RANGES:
        assert "| " + " | ".join(row) + " |" in chapter
    assert md.index("## Quantization") < md.index("## Evaluation") < md.index("## Budget search")


def test_a_run_without_quantization_has_no_chapter(pipeline_run):
    import json

    run = json.loads((pipeline_run / "run.json").read_text())
    run["stages"] = run["stages"][:3]  # teacher, distill, prune: each with quant == {}
    del run["search"]
    assert all(s["quant"] == {} for s in run["stages"])
    (pipeline_run / "run.json").write_text(json.dumps(run))
    paths = build_report(pipeline_run)
    assert "sec-quantization" not in paths["html"].read_text()
    assert "## Quantization" not in paths["markdown"].read_text()


def test_chapter_says_what_onnx_runtime_delivered_and_where(pipeline_run):
    html = unescape(build_report(pipeline_run)["html"].read_text())
    assert "measured on AMD EPYC (int8 path x86-avx2)" in html.split("</header>", 1)[0]
    quantize = _section(html, "quantization").split("<h3>quantize</h3>", 1)[1].split("<h3>", 1)[0]
    assert (
        "On AMD EPYC (x86-avx2), ONNX Runtime runs this int8 file at 90.20% accuracy (the simulation "
        "predicted 91.00%, float 90.50%); top-1 agreement with the simulated model 99.75% on 400 test "
        "samples; file made for x86-vnni." in quantize
    )
    assert "<p class='warn'><b>WARNING: INT8 FILE MADE FOR x86-vnni" in quantize
    assert "runs a float kernel" not in quantize.split("<table", 1)[0]  # in the kernel table, not shouted
    md = (pipeline_run / "report" / "report.md").read_text()
    assert "**WARNING: INT8 FILE MADE FOR x86-vnni RUNS ON AMD EPYC (x86-avx2)**" in md
    assert "int8 path x86-avx2" in md.split("## Stages", 1)[0]
