"""Checkpoints: saved atomically after every iteration, resumed to the same result, refused
when they belong to other data or parameters. The crash test kills a real client process."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr

import dclust
from dclust.io.checkpoint import Checkpoint, CheckpointError, data_fingerprint, describe_chunks
from dclust.exceptions import DclustValueError, ModelFormatError
from dclust.io.model import read_model
from dclust.runtime.compute import compute_count
from dclust.testing import interrupt_after

MI = 10  # iterations per run: uniform data keeps moving that long with tol=0
PARAMS = dict(n_clusters=12, tol=0.0, max_iter=MI, random_state=1, progress=False)


def km(**kw):
    return dclust.KMeans(**{**PARAMS, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Uniform data (k-means keeps moving for many iterations), stored as Zarr."""
    X = np.random.default_rng(0).uniform(size=(6000, 4)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("ck") / "x.zarr")
    z = zarr.create_array(store=path, shape=X.shape, chunks=(1500, 4), dtype=X.dtype)
    z[...] = X
    return path, X


def open_x(path):
    return dclust.open_array(path, chunks=1500)


def fit_quiet(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return est.fit(X, **kw)


def saved_state(path):
    meta, arrays = read_model(path)
    return meta, meta["attributes"]["checkpoint"]["state"], arrays


@pytest.fixture(scope="module")
def reference(data):
    path, _ = data
    return {n: fit_quiet(km(n_init=n), open_x(path)) for n in (1, 2)}


# ---- resume gives the uninterrupted result -------------------------------------------

def test_checkpointing_does_not_change_the_result(data, reference, tmp_path):
    ck = tmp_path / "ck.npz"
    m = fit_quiet(km(checkpoint=str(ck)), open_x(data[0]))
    np.testing.assert_array_equal(m.cluster_centers_, reference[1].cluster_centers_)
    meta, state, arrays = saved_state(ck)
    assert meta["kind"] == "checkpoint" and meta["estimator"] == "KMeans"
    assert state["run"] == 1 and state["work"] is None  # finished
    # Kept in float64 (the fit's own precision); the fitted attribute is in X's dtype.
    assert arrays["best.centers"].dtype == np.float64
    np.testing.assert_array_equal(arrays["best.centers"].astype(np.float32), reference[1].cluster_centers_)


@pytest.mark.parametrize("n_init, stop_at", [(1, 6), (2, 4), (2, MI + 6)],
                         ids=["run0-iter5", "run0-iter3", "run1-iter3"])
def test_resume_is_bit_identical(data, reference, tmp_path, n_init, stop_at, monkeypatch):
    monkeypatch.setenv("DCLUST_ROUND", "1")  # one computation per pass, counted below
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
        fit_quiet(km(n_init=n_init, checkpoint=ck), open_x(data[0]))
    _, state, _ = saved_state(ck)
    # Reports: "init" then one per iteration, MI iterations per run.
    done_iters = (stop_at - 2) % (MI + 1)
    assert state["run"] == (0 if stop_at <= MI + 1 else 1)
    assert state["work"]["n_iter"] == done_iters
    before = compute_count()
    m = fit_quiet(km(n_init=n_init, checkpoint=ck, resume=True), open_x(data[0]))
    ref = reference[n_init]
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)
    assert m.inertia_ == ref.inertia_ and m.n_iter_ == ref.n_iter_
    # Only what was left was computed: persisting X, the remaining iterations and the final
    # inertia (and all of the second run when the first was interrupted).
    left = 1 + (MI - done_iters + 1) + (MI + 2 if n_init == 2 and state["run"] == 0 else 0)
    assert compute_count() - before == left


def test_resume_with_random_state_none_takes_the_checkpoint_seed(data, reference, tmp_path):
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(5), pytest.raises(KeyboardInterrupt):
        fit_quiet(km(checkpoint=ck), open_x(data[0]))
    m = fit_quiet(km(random_state=None, checkpoint=ck, resume=True), open_x(data[0]))
    np.testing.assert_array_equal(m.cluster_centers_, reference[1].cluster_centers_)


def test_resume_a_finished_fit_costs_one_checking_pass(data, reference, tmp_path):
    ck = str(tmp_path / "ck.npz")
    fit_quiet(km(checkpoint=ck), open_x(data[0]))
    before = compute_count()
    m = fit_quiet(km(checkpoint=ck, resume=True), open_x(data[0]))
    assert compute_count() - before == 2  # persisting X and the pass that checks it
    np.testing.assert_array_equal(m.cluster_centers_, reference[1].cluster_centers_)
    assert m.inertia_ == reference[1].inertia_


def test_resume_without_a_checkpoint_file_starts_a_new_fit(data, reference, tmp_path):
    ck = tmp_path / "none-yet.npz"
    m = fit_quiet(km(checkpoint=str(ck), resume=True), open_x(data[0]))
    np.testing.assert_array_equal(m.cluster_centers_, reference[1].cluster_centers_)
    assert ck.exists()


def test_resume_from_init_array_and_numpy_input(data, tmp_path):
    _, X = data
    init = X[:12].astype(np.float64)
    ref = fit_quiet(km(init=init), X)
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(4), pytest.raises(KeyboardInterrupt):
        fit_quiet(km(init=init, checkpoint=ck), X)
    m = fit_quiet(km(init=init, checkpoint=ck, resume=True), X)
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)


# ---- refused checkpoints ---------------------------------------------------------------

@pytest.fixture
def interrupted(data, tmp_path):
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(5), pytest.raises(KeyboardInterrupt):
        fit_quiet(km(checkpoint=ck), open_x(data[0]))
    return ck


FIX = re.escape("Resume with the data and parameters it was written for, or start afresh with "
                "resume=False (CLI: without --resume, with --overwrite).")


@pytest.mark.parametrize("change, shown", [
    (dict(n_clusters=11), "n_clusters=12 in the checkpoint, 11 now"),
    (dict(tol=1e-4), "tol=0.0 in the checkpoint, 0.0001 now"),
    (dict(random_state=2), "random_state=1 in the checkpoint, 2 now"),
    (dict(init="k-means++"), "init='k-means||' in the checkpoint, 'k-means++' now"),
    (dict(max_iter=30, split_every=4),
     "max_iter=10 in the checkpoint, 30 now; split_every=None in the checkpoint, 4 now"),
])
def test_other_parameters_are_refused(data, interrupted, change, shown):
    before = compute_count()
    with pytest.raises(CheckpointError, match=re.escape(
            f"The checkpoint {interrupted!r} was written with different parameters: {shown}. ") + FIX):
        fit_quiet(km(checkpoint=interrupted, resume=True, **change), open_x(data[0]))
    assert compute_count() == before  # refused before any pass


def test_other_chunking_is_refused(data, interrupted):
    with pytest.raises(CheckpointError, match=re.escape(
            f"The checkpoint {interrupted!r} was written for different data: row_chunks='4 chunks "
            "of 1500 rows' in the checkpoint, '2 chunks of 3000 rows' now. ") + FIX):
        fit_quiet(km(checkpoint=interrupted, resume=True), dclust.open_array(data[0], chunks=3000))


def test_other_shape_dtype_and_weights_are_refused(data, interrupted):
    _, X = data
    Xd = da.from_array(X[:4500].astype(np.float64), chunks=1500)
    with pytest.raises(CheckpointError, match=re.escape(
            "different data: dtype='float32' in the checkpoint, 'float64' now; row_chunks='4 chunks "
            "of 1500 rows' in the checkpoint, '3 chunks of 1500 rows' now; shape=[6000, 4] in the "
            "checkpoint, [4500, 4] now.")):
        fit_quiet(km(checkpoint=interrupted, resume=True), Xd)
    with pytest.raises(CheckpointError, match=re.escape(
            "different data: weighted=False in the checkpoint, True now.")):
        fit_quiet(km(checkpoint=interrupted, resume=True), open_x(data[0]),
                  sample_weight=da.ones(6000, chunks=1500))


def test_same_shape_other_values_are_refused_at_the_first_pass(data, interrupted, tmp_path):
    _, X = data
    other = str(tmp_path / "other.zarr")
    z = zarr.create_array(store=other, shape=X.shape, chunks=(1500, 4), dtype=X.dtype)
    z[...] = X + np.float32(0.25)
    before = compute_count()
    with pytest.raises(CheckpointError, match=re.escape(
            f"The checkpoint {interrupted!r} was written for different data: the data's statistics ")
            + r"\(absmax, (m2, )?mean\)" + re.escape(" differ from those the interrupted fit computed, "
            "although shape, dtype and chunking agree (was the data rewritten?).")):
        fit_quiet(km(checkpoint=interrupted, resume=True), open_x(other))
    assert compute_count() - before == 2  # persisting X, then the first pass finds it


def test_a_model_file_is_not_a_checkpoint_and_a_checkpoint_is_not_a_model(data, interrupted, tmp_path):
    model = str(tmp_path / "model.npz")
    fit_quiet(km(max_iter=2), open_x(data[0])).save(model)
    with pytest.raises(ModelFormatError, match=re.escape(
            f"{model!r} is a dclust model, not a checkpoint; pass the checkpoint file")):
        fit_quiet(km(checkpoint=model, resume=True), open_x(data[0]))
    with pytest.raises(ModelFormatError, match=re.escape(
            f"{interrupted!r} is a dclust 'checkpoint' file, not a fitted model")):
        dclust.load(interrupted)


def test_checkpoint_of_another_algorithm_is_refused(data, interrupted):
    ck = Checkpoint(interrupted, "KMedoids", {}, data_fingerprint(open_x(data[0])))
    with pytest.raises(CheckpointError, match=re.escape(
            f"{interrupted!r} is a checkpoint of 'KMeans', not of 'KMedoids'")):
        ck.load()


def test_newer_checkpoint_version_is_refused(tmp_path):
    X = da.zeros((10, 2), chunks=5)
    ck = Checkpoint(tmp_path / "ck.npz", "KMeans", {"a": 1}, data_fingerprint(X))
    ck.save({"n": 1}, {"c": np.zeros(2)})
    meta, arrays = read_model(ck.path)
    meta["attributes"]["checkpoint"]["version"] = 99
    from dclust.io.model import save_model

    save_model(ck.path, "KMeans", meta["params"], meta["attributes"], arrays, kind="checkpoint")
    with pytest.raises(ModelFormatError, match=r"checkpoint of version 99, which this dclust cannot resume"):
        ck.load()


def test_parameter_errors(tmp_path):
    with pytest.raises(DclustValueError, match=re.escape(
            "resume=True needs checkpoint=PATH, the checkpoint file of the fit to continue.")):
        km(resume=True).fit(np.zeros((20, 2)))
    with pytest.raises(DclustValueError, match=re.escape("resume='yes' is not valid; expected True or False (continue")):
        km(checkpoint=str(tmp_path / "c.npz"), resume="yes").fit(np.zeros((20, 2)))
    with pytest.raises(DclustValueError, match=re.escape("checkpoint=3 is not valid; expected a path or URL or None (save the state")):
        km(checkpoint=3).fit(np.zeros((20, 2)))


def test_describe_chunks():
    assert describe_chunks((5,)) == "1 chunk of 5 rows"
    assert describe_chunks((5, 5, 2)) == "3 chunks of 5 rows, the last of 2"
    assert describe_chunks((5, 0, 5)).startswith("3 irregular chunks (sha1 ")


# ---- atomic writes -----------------------------------------------------------------

def test_failed_checkpoint_write_keeps_the_previous_one(data, tmp_path, monkeypatch):
    import dclust.io.model as model_io

    ck = str(tmp_path / "ck.npz")
    orig = model_io.np.savez
    calls = {"n": 0}

    def savez(buf, **arrays):
        calls["n"] += 1
        if calls["n"] == 4:  # the state after iteration 3 (the first save is after init)
            orig(buf, **arrays)
            raise OSError("disk full (simulated)")
        return orig(buf, **arrays)

    monkeypatch.setattr(model_io.np, "savez", savez)
    with pytest.raises(OSError, match="disk full"):
        fit_quiet(km(checkpoint=ck), open_x(data[0]))
    _, state, _ = saved_state(ck)
    assert state["work"]["n_iter"] == 2
    assert [p for p in os.listdir(tmp_path) if p != "ck.npz"] == []  # no temporary left


def test_crash_during_rename_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    import dclust.io.paths as paths

    ck = str(tmp_path / "ck.npz")
    orig = paths.os.replace
    calls = {"n": 0}

    def replace(a, b):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("power cut (simulated)")
        return orig(a, b)

    monkeypatch.setattr(paths.os, "replace", replace)
    with pytest.raises(Exception, match="power cut"):
        fit_quiet(km(checkpoint=ck), open_x(data[0]))
    _, state, _ = saved_state(ck)
    assert state["work"]["n_iter"] == 1
    assert [p for p in os.listdir(tmp_path) if p != "ck.npz"] == []


# ---- a killed client process -------------------------------------------------------

SCRIPT = """
import sys, time, warnings
import numpy as np
from distributed import Client, LocalCluster
import dclust
from dclust.runtime.progress import Progress

warnings.simplefilter("ignore")
orig = Progress.update
def slow(self, phase, iteration, **kw):   # give the test time to kill us mid-fit
    orig(self, phase, iteration, **kw)
    time.sleep(0.25)
Progress.update = slow
if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    client = Client(cluster)
    X = dclust.open_array({path!r}, chunks=1500)
    dclust.KMeans(n_clusters=12, tol=0.0, max_iter={mi}, random_state=1, progress=False,
                  checkpoint={ck!r}).fit(X)
    print("finished")
"""


def _wait_for_iteration(ck, proc, n, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if os.path.exists(ck):
            with contextlib.suppress(Exception):
                work = saved_state(ck)[1]["work"]
                if work is not None and work["n_iter"] >= n:
                    return work["n_iter"]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of iteration {n} within {timeout} s")


def test_client_process_killed_then_resumed(data, reference, tmp_path):
    ck = str(tmp_path / "ck.npz")
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(SCRIPT.format(path=data[0], ck=ck, mi=MI)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        seen = _wait_for_iteration(ck, proc, 3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    _, state, _ = saved_state(ck)
    killed_at = state["work"]["n_iter"]
    assert seen <= killed_at < MI  # killed mid-fit, the checkpoint is complete and readable
    m = fit_quiet(km(checkpoint=ck, resume=True), open_x(data[0]))
    np.testing.assert_array_equal(m.cluster_centers_, reference[1].cluster_centers_)
    assert m.inertia_ == reference[1].inertia_ and m.n_iter_ == reference[1].n_iter_
    print(f"client killed after iteration {killed_at}; resumed to the identical result")


def _cli(args, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    return subprocess.Popen([sys.executable, "-m", "dclust", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_cli_killed_then_resumed(data, reference, tmp_path):
    """The CLI with its embedded cluster, killed with SIGKILL mid-fit, then `--resume`."""
    ck, model = str(tmp_path / "ck.npz"), str(tmp_path / "km.npz")
    args = ["fit", "kmeans", data[0], "-k", "12", "--tol", "0", "--max-iter", "200", "--seed", "1",
            "--chunk-size", "1500", "--model", model, "--checkpoint", ck, "-q"]
    ref = fit_quiet(km(max_iter=200), open_x(data[0]))
    proc = _cli(args, tmp_path)
    try:
        _wait_for_iteration(ck, proc, 5, timeout=240)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The embedded cluster's worker processes die with their parent's pipes; give them a moment.
    killed_at = saved_state(ck)[1]["work"]["n_iter"]
    assert not os.path.exists(model)
    again = _cli(args, tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 2 and "pass --resume to continue" in err, err[-2000:]
    resumed = _cli([*args, "--resume"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    m = dclust.load(model)
    np.testing.assert_array_equal(m.cluster_centers_, ref.cluster_centers_)
    print(f"CLI killed after iteration {killed_at}; --resume gave the identical model ({out.strip()})")


def test_cli_resume_needs_checkpoint(tmp_path, data, capsys):
    from dclust.cli.main import main

    code = main(["fit", "kmeans", data[0], "-k", "3", "--model", str(tmp_path / "m.npz"), "--resume"])
    assert code == 2
    assert "dclust: error: --resume needs --checkpoint PATH" in capsys.readouterr().err


def test_cli_checkpoint_resume_and_refusal(tmp_path, data, reference, capsys):
    """In-process CLI: an existing checkpoint needs --resume (or --overwrite)."""
    from dclust.cli.main import main

    ck, model = str(tmp_path / "ck.npz"), str(tmp_path / "km.npz")
    args = ["fit", "kmeans", data[0], "-k", "12", "--tol", "0", "--max-iter", str(MI), "--seed", "1",
            "--chunk-size", "1500", "--cache", "none", "--model", model, "--checkpoint", ck, "-q"]
    with interrupt_after(4):
        assert main(args) == 130  # Ctrl-C
    assert saved_state(ck)[1]["work"]["n_iter"] == 2
    assert main(args) == 2
    assert (f"dclust: error: The checkpoint {ck!r} already exists; pass --resume to continue the fit "
            "it holds, or --overwrite to start afresh and replace it.") in capsys.readouterr().err
    # Without --seed, --resume continues with the checkpoint's seed.
    resume = [a for a in args if a not in ("--seed", "1")] + ["--resume"]
    assert main(resume) == 0
    assert "seed 1" in capsys.readouterr().out
    np.testing.assert_array_equal(dclust.load(model).cluster_centers_, reference[1].cluster_centers_)
