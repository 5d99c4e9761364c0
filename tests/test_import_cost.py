"""``import distiq`` stays light: every command and every worker process pays for it.

The heavy libraries below are imported where they are used (an export, a report, a split, a blur),
not with the package: together they were about 4 s of a 9.5 s ``import distiq`` on a 2-core EPYC.
The code behind each lazy import runs in the tests of its module (export, stats, splits, report).
"""

from __future__ import annotations

import subprocess
import sys

HEAVY_ON_USE = ("captum", "matplotlib", "onnxscript", "scipy", "sklearn")


def test_import_distiq_leaves_the_heavy_libraries_for_later():
    code = f"import sys, distiq; print(sorted(m for m in {HEAVY_ON_USE!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
