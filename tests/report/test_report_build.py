"""build_report on a synthetic run: the files, the numbers in the tables, the embedded charts."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from distiq.cli.main import main
from distiq.errors import DataError
from distiq.report import budget_threshold, build_report, load_run, pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _strip(cell: str) -> str:
    return re.sub(r"<[^>]+>", "", cell).replace("&amp;", "&").strip()


def _stage_table(html: str) -> list[list[str]]:
    """Cells of the first table in the Stages section, tags stripped."""
    section = html.split("id='sec-stages'", 1)[1].split("</table>", 1)[0]
    body = section.split("<tbody>", 1)[1]
    return [
        [_strip(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body)
    ]


def _expected_rows(run: dict) -> list[list[str]]:
    """The stage table worked out by hand from run.json: accuracy in %, F1, size, latency, params, delta."""
    t = run["stages"][0]["metrics"]
    teacher = ["91.34%", "0.912", "4.81 MB", "3.41 ms", "1,203,456", "—"]
    assert t["accuracy"] == 0.9134 and t["size_bytes"] == 4_812_345 and t["latency_ms_p50"] == 3.412
    distill = ["90.71%", "0.905", "402.1 kB", "0.81 ms", "100,321", "-0.63 pt"]
    prune = ["90.43%", "0.902", "250.0 kB", "—", "60,042", "-0.91 pt"]
    int8 = ["90.62%", "0.904", "95.9 kB", "0.35 ms", "60,042", "-0.72 pt"]
    return [teacher, distill, prune, int8]


def test_files_are_written(built_report, synthetic_run):
    root, _ = synthetic_run
    for key in ("html", "markdown", "json"):
        assert built_report[key].is_file() and built_report[key].parent == root / "report"
    pngs = sorted(p.name for p in (root / "report").glob("*.png"))
    expected = {"pareto-size", "pareto-latency", "training", "confusion", "robustness", "search"}
    expected |= {f"{kind}-04-int8" for kind in ("sensitivity", "sqnr", "histograms")}
    assert pngs == sorted(f"{k}.png" for k in expected)
    assert not list((root / "report").glob(".*.tmp"))  # atomic writes leave no temporaries


def test_html_stage_table_holds_the_runs_numbers(built_report, synthetic_run):
    _, run = synthetic_run
    rows = _stage_table(built_report["html"].read_text())
    assert [r[0] for r in rows] == ["teacher (reused)", "distill", "prune", "int8"]
    assert [r[1] for r in rows] == ["teacher", "distill", "prune", "quantize"]
    # columns: Stage, Kind, Accuracy, F1 macro, Size, Latency p50, Params, delta, smaller, faster, time
    assert [r[2:8] for r in rows] == _expected_rows(run)
    assert rows[3][8] == f"{4_812_345 / 95_871:.1f}×" and rows[3][9] == f"{3.412 / 0.3456:.1f}×"
    assert rows[0][10] == "120.5 s"


def test_every_image_is_an_embedded_png(built_report):
    html = built_report["html"].read_text()
    srcs = re.findall(r"<img[^>]*\ssrc=['\"]([^'\"]*)['\"]", html)
    assert len(srcs) == html.count("<img") == 9
    for src in srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        data = base64.b64decode(src[len(prefix) :], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        width, height = Image.open(io.BytesIO(data)).size
        assert width > 200 and height > 150


def test_html_is_self_contained(built_report):
    html = built_report["html"].read_text()
    assert not re.search(r"https?://", html)
    assert "<link" not in html and not re.search(r"<script[^>]*\ssrc=", html)
    assert "<style>" in html
    assert "dataset:" in html and "resnet20" in html  # the recipe, as YAML
    assert "2.13.0" in html and "onnxruntime" in html  # versions


def test_json_summary(built_report):
    summary = json.loads(built_report["json"].read_text())
    assert (
        summary["name"] == "fashion-kd-int8"
        and summary["teacher"] == "teacher"
        and summary["final"] == "int8"
    )
    assert summary["final_vs_teacher"]["delta_vs_teacher"] == pytest.approx((0.9062 - 0.9134) * 100)
    assert summary["final_vs_teacher"]["size_ratio"] == pytest.approx(4_812_345 / 95_871)
    assert summary["search"]["trials"] == 5 and summary["search"]["met_budget"] == 2
    assert summary["search"]["chosen"]["id"] == 1
    assert len(summary["figures"]) == 9


def test_markdown_tables_and_images(built_report, synthetic_run):
    md = built_report["markdown"].read_text()
    root, run = synthetic_run
    for row in _expected_rows(run):
        assert " | ".join(row[:4]) in md
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (root / "report" / name).read_bytes().startswith(PNG_SIGNATURE)
    assert "| 1 | " in md and "★" in md  # the chosen trial in the trials table


def test_history_jsonl_fallback_skips_a_torn_line(synthetic_run):
    run = load_run(synthetic_run[0])
    prune = next(s for s in run.stages if s["name"] == "prune")
    assert [h["epoch"] for h in prune["history"]] == [1, 2, 3]


def test_partial_run_renders_what_is_there(tmp_path):
    stage = {"name": "teacher", "kind": "teacher", "dir": "stages/00-teacher", "key": "k0"}  # no metrics yet
    (tmp_path / "run.json").write_text(json.dumps({"name": "half <done>", "stages": [stage]}))
    paths = build_report(tmp_path)
    html = paths["html"].read_text()
    assert "half &lt;done&gt;" in html and "<done>" not in html  # names are escaped
    assert "<img" not in html and set(paths) == {"html", "markdown", "json"}


def test_a_record_distiq_did_not_write_is_one_line_naming_the_field(tmp_path):
    stage = {"name": "teacher", "kind": "t"}  # no dir, no key
    (tmp_path / "run.json").write_text(json.dumps({"name": "x", "stages": [stage]}))
    with pytest.raises(DataError, match=r"run\.json: stages\.0\.dir: Field required; stages\.0\.key") as e:
        build_report(tmp_path)
    assert "\n" not in str(e.value)


def test_stale_charts_are_removed(fresh_run):
    tmp_path = fresh_run
    build_report(tmp_path)
    assert (tmp_path / "report" / "search.png").exists()
    run = json.loads((tmp_path / "run.json").read_text())
    del run["search"]
    (tmp_path / "run.json").write_text(json.dumps(run))
    build_report(tmp_path)
    assert not (tmp_path / "report" / "search.png").exists()
    assert "Budget search" not in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_missing_or_corrupt_run_json_names_the_file(tmp_path, content):
    if content is not None:
        (tmp_path / "run.json").write_text(content)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "run.json"))):
        build_report(tmp_path)


def test_pareto_front_hand_worked():
    # (size, accuracy): b is beaten by a (smaller and more accurate); d ties c in size, less accurate
    points = [(1.0, 0.90), (2.0, 0.89), (3.0, 0.93), (3.0, 0.92), (10.0, 0.95), (12.0, 0.94)]
    assert pareto_front(points) == [0, 2, 4]
    assert pareto_front([]) == []


def test_budget_threshold_hand_worked():
    assert budget_threshold(
        {"budget": {"max_accuracy_drop": 1.0}, "reference_accuracy": 0.91}
    ) == pytest.approx(0.90)
    relative = {"budget": {"max_accuracy_drop": 10.0, "relative": True, "reference_accuracy": 0.9}}
    assert budget_threshold(relative) == pytest.approx(0.81)
    assert budget_threshold({"budget": {"min_accuracy": 0.88}}) == 0.88
    assert budget_threshold({"budget": {"max_accuracy_drop": 1.0}}) is None  # no reference: no line
    assert budget_threshold(None) is None


def test_cli_rebuilds_and_prints_the_path(tmp_path, capsys):
    (tmp_path / "run.json").write_text(
        json.dumps({"name": "cli", "stages": [{"name": "t", "kind": "teacher", "dir": "s/t", "key": "k"}]})
    )
    assert main(["report", str(tmp_path)]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == str(tmp_path / "report" / "report.html")
    assert (tmp_path / "report" / "report.html").is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    _, err = capsys.readouterr()
    assert str(tmp_path / "nowhere" / "run.json") in err
