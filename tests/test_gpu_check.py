"""The GPU check command dry-runs end to end on a machine without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), str(out),
         "--device", "cpu", "--quick", "--skip-tests", "--iters", "2"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [w["k"] for w in report["workloads"]] == [256, 1024]
    for w in report["workloads"]:
        assert w["device_fit_s"] > 0 and w["cpu_fit_s"] > 0 and w["kernel_s"] > 0
        # Same init and iterations on both paths: the same fit.
        assert w["inertia_rel_diff"] < 1e-5
    assert "| n | d | k |" in (out / "gpu_check.md").read_text()
    assert "speed-up" in proc.stdout
