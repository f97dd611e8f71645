"""stream_fit following a Zarr array appended to by another process, killed and
restarted: every appended row is used exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

import dclust
from dclust.exceptions import DclustValueError

_WRITER = """
import os, sys, time, numpy as np
from dclust.algorithms.stream import append_rows
path, n_chunks, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
for i in range(n_chunks):
    if i == n_chunks // 2:
        # The second half waits for the test's go-ahead (after it killed the follower), so
        # the kill lands mid-stream however slowly the follower started.
        while not os.path.exists(go):
            time.sleep(0.02)
    append_rows(path, rng.normal(size=(500, 4)) + 10 * (i % 3), chunk_rows=500)
    time.sleep(0.05)
"""

_FOLLOWER = """
import sys
import dclust
est = dclust.MiniBatchKMeans(3, batch_size=200, random_state=0, compute_labels=False)
dclust.stream_fit(est, sys.argv[1], poll=0.02, checkpoint=sys.argv[2], idle_timeout=float(sys.argv[3]))
"""


def _python(code, *args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env)


def test_killed_and_restarted_follower_uses_every_row_once(tmp_path):
    path, ck = tmp_path / "grow.zarr", tmp_path / "model.npz"
    n_chunks = 24
    go = tmp_path / "go"
    writer = _python(_WRITER, path, n_chunks, go)
    follower = _python(_FOLLOWER, path, ck, 30)
    try:
        deadline = time.monotonic() + 120
        while not ck.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ck.exists(), "the follower saved no model"
        time.sleep(0.3)
        follower.send_signal(signal.SIGKILL)  # mid-stream, possibly mid-update
        follower.wait()
        assert writer.poll() is None, "the writer finished before the kill"
        mid = dclust.load(ck).stream_position_
        go.touch()
        follower = _python(_FOLLOWER, path, ck, 3)
        assert writer.wait(timeout=60) == 0
        assert follower.wait(timeout=60) == 0
    finally:
        for p in (writer, follower):
            if p.poll() is None:
                p.kill()
    X = zarr.open_array(str(path), mode="r")[:]
    m = dclust.load(ck)
    assert X.shape[0] == n_chunks * 500
    assert 0 < mid < X.shape[0]
    assert m.stream_position_ == X.shape[0]
    assert m.n_rows_seen_ == X.shape[0]  # no row twice, none skipped...
    np.testing.assert_allclose(m.seen_sum_, X.sum(axis=0), rtol=1e-9)  # ...and the same rows


def test_stream_fit_in_process_and_cli(tmp_path):
    from dclust.cli.main import main

    path = tmp_path / "s.zarr"
    X = np.random.default_rng(1).normal(size=(1300, 3))
    for s in range(0, 1300, 400):
        dclust.append_rows(path, X[s:s + 400])
    seen = []
    est = dclust.stream_fit(dclust.MiniBatchKMeans(2, random_state=0, batch_size=256), path,
                            poll=0.01, idle_timeout=0.1,
                            on_update=lambda e, a, b: seen.append((a, b)))
    assert seen[0] == (0, 256) and seen[-1][1] == 1300
    assert est.n_rows_seen_ == 1300
    assert main(["stream", str(path), "--model", str(tmp_path / "m.npz"), "-k", "2",
                 "--max-rows", "1000", "--poll", "0.01", "--quiet"]) == 0
    assert dclust.load(tmp_path / "m.npz").stream_position_ == 1000


def test_stream_fit_messages(tmp_path):
    with pytest.raises(DclustValueError, match=r"poll=-1 must be a number of seconds >= 0"):
        dclust.stream_fit(dclust.MiniBatchKMeans(2), tmp_path / "x.zarr", poll=-1)
    dclust.append_rows(tmp_path / "x.zarr", np.random.rand(300, 2))
    dclust.KMeans(2, random_state=0).fit(np.random.rand(50, 2)).save(tmp_path / "k.npz")
    with pytest.raises(DclustValueError, match="holds a KMeans, not a MiniBatchKMeans"):
        dclust.stream_fit(dclust.MiniBatchKMeans(2), tmp_path / "x.zarr",
                          checkpoint=tmp_path / "k.npz", idle_timeout=0)


def test_stream_cli_options_are_minibatch_declarations(tmp_path, capsys):
    from dclust.cli.main import main

    assert main(["stream", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--n-clusters", "--batch-size", "--decay", "--decay-unit", "--init", "--seed"):
        assert flag in out
    dclust.append_rows(tmp_path / "x.zarr", np.random.rand(300, 2))
    assert main(["stream", str(tmp_path / "x.zarr"), "--model", str(tmp_path / "m.npz"),
                 "--batch-size", "0", "--idle-timeout", "0"]) == 2
    assert "batch_size=0" in capsys.readouterr().err
