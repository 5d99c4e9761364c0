"""The Split evaluation and Attribution chapters of a real digits run, as headless Chromium shows them."""

from __future__ import annotations

import re

import pytest
from test_report_chromium import CHROMIUM, _chromium

import distiq as dq
from distiq.report import build_report

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make browser)")

EPOCHS = {"epochs": 1, "lr": 0.01, "batch_size": 64}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("split-report")
    recipe = {
        "name": "split-report",
        "data": {"name": "digits"},
        "teacher": {"model": "lenet5", "train": EPOCHS},
        "distill": {"student": "mlp", "student_options": {"hidden": [16]}, "train": EPOCHS},
        "quantize": {"method": "minmax", "calib_samples": 64, "sensitivity": False, "calib_repeats": 0},
        "evaluate": {
            "latency": False,
            "robustness": False,
            "bootstrap": 0,
            "splits": {"subsample": {"repeats": 3, "fraction": 0.4}, "kfold": {"k": 3}, "ratios": [0.5, 1.0]},
            "attribution": {"samples": 10, "method": "saliency"},
        },
    }
    dq.run(recipe, run_dir)
    return build_report(run_dir)


def test_chapters_render_with_their_images(report, tmp_path):
    assert {"splits", "attribution"} <= set(report)
    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", report["html"].resolve().as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    images = report["html"].read_text().count("<img")
    assert f'data-images-loaded="{images}"' in dom, "not every <img> decoded in the browser"
    for chapter in ("sec-split-evaluation", "sec-attribution"):
        assert f'id="{chapter}"' in dom
    for figure in ("fig-splits", "fig-attribution"):
        assert re.search(rf'<figure id="{figure}"[^>]*>\s*<img[^>]+src="data:image/png;base64,', dom)
    assert "3 stratified subsamples of 40% of the test split and over 3 stratified folds" in dom
    assert "Per share of the training data" in dom and "50%" in dom
    assert "saliency, Captum" in dom and "of 10 test images" in dom
    assert "the float model of distill (an int8 file has no gradients)" in dom


def test_markdown_has_the_same_chapters(report):
    md = report["markdown"].read_text()
    assert "## Split evaluation" in md and "![Accuracy with 95% intervals](splits.png)" in md
    assert "## Attribution" in md and "Agreement with the teacher (Spearman ρ):" in md
    assert (report["markdown"].parent / "attribution.png").is_file()
