"""The report as a person sees it: rendered by headless Chromium (Debian's ``chromium`` package).

Skipped, with the command that enables it, where Chromium is not installed; ``make test`` installs it
when it runs as root (the ``browser`` target).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and os.access(p, os.X_OK)
    ),
    None,
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (run 'apt-get install chromium', or 'make browser' as root)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-crash-reporter",
]


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp)}  # keep Chromium's caches out of the user's home
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_report_renders_with_its_images(built_report, tmp_path):
    html_path = built_report["html"]
    url = html_path.resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    image = Image.open(io.BytesIO(shot.read_bytes()))
    assert image.format == "PNG" and image.size == (1280, 2000)
    gray = image.convert("L")
    lo, hi = gray.getextrema()
    assert hi - lo > 100 and len(gray.getcolors(256)) > 20  # text, tables, charts: not a blank page
    header = gray.crop((0, 0, 1280, 60)).getextrema()
    assert header[0] < 80  # the dark header band was painted

    done = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    images = html_path.read_text().count("<img")
    assert images == 9
    assert f'data-images-loaded="{images}"' in dom, "not every <img> decoded in the browser"
    assert "fashion-kd-int8" in dom and "90.62%" in dom
