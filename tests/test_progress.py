"""The progress line, and the embedded cluster started on first use."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dclust.runtime.progress import Progress


def test_progress_silent_for_short_fits():
    s = io.StringIO()
    p = Progress("KMeans", stream=s, delay=60)
    p.update("iter", 1, inertia=3.0)
    p.close("done")
    assert s.getvalue() == ""


def test_progress_lines_when_not_a_terminal():
    s = io.StringIO()
    p = Progress("KMeans(k=3)", stream=s, delay=0, every=0)
    p.update("iter", 1, inertia=12.5, shift=0.25)
    p.update("iter", 2, inertia=11.0, shift=0.01)
    p.close("KMeans(k=3): 2 iterations")
    lines = s.getvalue().splitlines()
    assert lines[0].startswith("KMeans(k=3) iter 1 | inertia 12.5 | shift 0.25 |")
    assert "s/pass" in lines[0]
    assert lines[-1] == "KMeans(k=3): 2 iterations"


def test_progress_disabled():
    s = io.StringIO()
    p = Progress("x", enabled=False, stream=s, delay=0)
    p.update("iter", 1)
    p.close("done")
    assert s.getvalue() == ""


@pytest.mark.distributed
def test_embedded_cluster_starts_once_and_is_reused(tmp_path):
    code = textwrap.dedent(
        """
        import numpy as np, dclust
        X = np.random.default_rng(0).normal(size=(2000, 3)).astype("float32")
        a = dclust.KMeans(3, random_state=0, progress=False).fit(X)
        c1 = dclust.get_client()
        b = dclust.KMeans(3, random_state=0, progress=False).fit(X)
        assert dclust.get_client() is c1
        assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
        print("workers", len(c1.scheduler_info()["workers"]))
        dclust.shutdown()
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("started a local Dask cluster") == 1
    assert "dashboard: http" in out.stderr
    assert out.stdout.strip().startswith("workers")
