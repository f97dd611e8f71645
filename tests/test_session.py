"""The fit session: every estimator checkpoints, resumes to the bit-identical result
(also after SIGKILL), and refuses a checkpoint of other data or parameters."""

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

import numpy as np
import pytest
import zarr

import dclust
from dclust.algorithms.session import Algorithm, FitSession, _join, _split
from dclust.io.checkpoint import CheckpointError
from dclust.io.model import read_model
from dclust.runtime.compute import compute_count
from dclust.testing import interrupt_after

CHUNK = 1000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Four loose blobs as Zarr (every algorithm iterates a while on them)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(scale=3.0, size=(4, 3))
    X = (centres[rng.integers(0, 4, 4000)] + rng.normal(size=(4000, 3))).astype(np.float32)
    path = str(tmp_path_factory.mktemp("session") / "x.zarr")
    z = zarr.create_array(store=path, shape=X.shape, chunks=(CHUNK, 3), dtype=X.dtype)
    z[...] = X
    costs = rng.random((4000, 5))
    cpath = str(tmp_path_factory.mktemp("session") / "c.zarr")
    zc = zarr.create_array(store=cpath, shape=costs.shape, chunks=(CHUNK, 5), dtype=costs.dtype)
    zc[...] = costs
    return path, cpath


def open_x(path):
    return dclust.open_array(path, chunks=CHUNK)


# Each case: a factory taking checkpoint keywords, and what to compare.
def _kmeans(**kw):
    return dclust.KMeans(6, tol=0.0, max_iter=8, n_init=2, random_state=3, progress=False, **kw)


def _kmedoids(**kw):
    return dclust.KMedoids(5, n_sampling_iter=3, random_state=3, progress=False, **kw)


def _balanced(**kw):
    return dclust.BalancedKMeans(4, max_iter=4, sinkhorn_max_iter=20, size_tolerance=0,
                                 random_state=3, progress=False, **kw)


ESTIMATORS = {"KMeans": _kmeans, "KMedoids": _kmedoids, "BalancedKMeans": _balanced}


def fit(make, path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(**kw).fit(open_x(path))


def assign(cpath, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dclust.sinkhorn_assign(open_x(cpath), reg=0.02, tol=1e-9, max_iter=40, **kw)


def same_fit(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_ and a.n_iter_ == b.n_iter_ and a.n_passes_ == b.n_passes_
    np.testing.assert_array_equal(np.asarray(a.labels_), np.asarray(b.labels_))


def same_assign(a, b):
    np.testing.assert_array_equal(a.potentials, b.potentials)
    assert a.n_iter == b.n_iter and a.n_passes == b.n_passes and a.scale == b.scale
    np.testing.assert_array_equal(a.labels.compute(), b.labels.compute())


@pytest.fixture(scope="module")
def references(data):
    path, cpath = data
    out = {name: fit(make, path) for name, make in ESTIMATORS.items()}
    out["sinkhorn_assign"] = assign(cpath)
    return out


# ---- interrupted and resumed in this process -------------------------------------------

@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("stop_at", [2, 5])
def test_every_estimator_resumes_bit_identical(data, references, tmp_path, name, stop_at):
    make = ESTIMATORS[name]
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
        fit(make, data[0], checkpoint=ck)
    meta, _ = read_model(ck)
    assert meta["kind"] == "checkpoint" and meta["estimator"] == name
    before = compute_count()
    resumed = fit(make, data[0], checkpoint=ck, resume=True)
    same_fit(resumed, references[name])
    # Only what was left was computed: fewer graphs than the whole fit made passes.
    assert compute_count() - before < references[name].n_passes_ + 1


@pytest.mark.parametrize("stop_at", [3, 12])
def test_sinkhorn_assign_resumes_bit_identical(data, references, tmp_path, stop_at,
                                               monkeypatch):
    monkeypatch.setenv("DCLUST_ROUND", "1")  # one computation per pass, to count them
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(stop_at), pytest.raises(KeyboardInterrupt):
        assign(data[1], checkpoint=ck, progress=True)
    _, state, _ = _saved(ck)
    # Progress reports: "init" (the costs' statistics pass), then one per Sinkhorn pass.
    done = stop_at - 2
    assert state["work"]["sk"]["n_passes"] == done
    before = compute_count()
    res = assign(data[1], checkpoint=ck, resume=True)
    same_assign(res, references["sinkhorn_assign"])
    # Only the Sinkhorn passes left: the statistics ride in the first of them.
    assert compute_count() - before == (res.n_passes - 1) - done


def _saved(path):
    meta, arrays = read_model(path)
    return meta, meta["attributes"]["checkpoint"]["state"], arrays


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_checkpointing_does_not_change_the_result(data, references, tmp_path, name):
    ck = str(tmp_path / "ck.npz")
    same_fit(fit(ESTIMATORS[name], data[0], checkpoint=ck), references[name])
    _, state, _ = _saved(ck)
    assert state["work"] is None and state["best"] is not None  # finished


@pytest.mark.parametrize("name, change, shown", [
    ("KMedoids", {"metric": "manhattan"}, "metric='euclidean' in the checkpoint, 'manhattan' now"),
    ("BalancedKMeans", {"reg": 0.1}, "reg=0.05 in the checkpoint, 0.1 now"),
    ("KMeans", {"max_iter": 9}, "max_iter=8 in the checkpoint, 9 now"),
])
def test_a_checkpoint_of_other_parameters_is_refused(data, tmp_path, name, change, shown):
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(3), pytest.raises(KeyboardInterrupt):
        fit(ESTIMATORS[name], data[0], checkpoint=ck)
    est = ESTIMATORS[name](checkpoint=ck, resume=True).set_params(**change)
    with pytest.raises(CheckpointError, match=re.escape(shown)):
        est.fit(open_x(data[0]))


def test_a_checkpoint_of_another_estimator_or_other_costs_is_refused(data, tmp_path):
    ck = str(tmp_path / "ck.npz")
    with interrupt_after(3), pytest.raises(KeyboardInterrupt):
        fit(_kmedoids, data[0], checkpoint=ck)
    with pytest.raises(CheckpointError, match="is a checkpoint of 'KMedoids', not of 'BalancedKMeans'"):
        _balanced(checkpoint=ck, resume=True).fit(open_x(data[0]))
    ck2 = str(tmp_path / "ck2.npz")
    with interrupt_after(3), pytest.raises(KeyboardInterrupt):
        assign(data[1], checkpoint=ck2, progress=True)
    other = dclust.open_array(data[1], chunks=CHUNK) * 2.0
    with pytest.raises(CheckpointError, match=r"different data: the data's statistics \(spread2"):
        dclust.sinkhorn_assign(other, reg=0.02, tol=1e-9, max_iter=40, checkpoint=ck2, resume=True)
    with pytest.raises(CheckpointError, match="reg=0.02 in the checkpoint, 0.05 now"):
        dclust.sinkhorn_assign(open_x(data[1]), reg=0.05, tol=1e-9, max_iter=40, checkpoint=ck2,
                               resume=True)


# ---- killed with SIGKILL, then resumed --------------------------------------------------

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
    time.sleep(0.3)
Progress.update = slow
if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    client = Client(cluster)
    X = dclust.open_array({path!r}, chunks={chunk})
    {call}
    print("finished")
"""

CALLS = {
    "KMedoids": "dclust.KMedoids(5, n_sampling_iter=3, random_state=3, progress=True, "
                "checkpoint={ck!r}).fit(X)",
    "BalancedKMeans": "dclust.BalancedKMeans(4, max_iter=4, sinkhorn_max_iter=20, size_tolerance=0, "
                      "random_state=3, progress=True, checkpoint={ck!r}).fit(X)",
    "sinkhorn_assign": "dclust.sinkhorn_assign(X, reg=0.02, tol=1e-9, max_iter=40, progress=True, "
                       "checkpoint={ck!r})",
}


@pytest.mark.parametrize("name", list(CALLS))
def test_killed_with_sigkill_then_resumed(data, references, tmp_path, name):
    ck = str(tmp_path / "ck.npz")
    path = data[1] if name == "sinkhorn_assign" else data[0]
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(SCRIPT.format(path=path, chunk=CHUNK,
                                                    call=CALLS[name].format(ck=ck))))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            with contextlib.suppress(Exception):
                if _saved(ck)[1]["work"] is not None and _saved(ck)[1]["passes"] >= 3:
                    break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _saved(ck)[1]["work"] is not None  # killed mid-fit; the checkpoint is readable
    if name == "sinkhorn_assign":
        same_assign(assign(data[1], checkpoint=ck, resume=True), references[name])
    else:
        same_fit(fit(ESTIMATORS[name], data[0], checkpoint=ck, resume=True), references[name])


# ---- the session's own contracts -----------------------------------------------------

def test_state_round_trips_through_a_checkpoint_layout():
    state = {"a": np.arange(3.0), "n": 4, "x": None, "f": float("inf"),
             "sub": {"g": np.ones((2, 2)), "h": [1.5, 2.5], "deeper": {"z": np.zeros(1, np.int64)}}}
    scalars, arrays = _split(state, "work")
    assert sorted(arrays) == ["work.a", "work.sub.deeper.z", "work.sub.g"]
    back = _join(scalars, arrays, "work")
    np.testing.assert_array_equal(back["sub"]["deeper"]["z"], state["sub"]["deeper"]["z"])
    assert back["n"] == 4 and back["x"] is None and back["sub"]["h"] == [1.5, 2.5]


class _Count(Algorithm):
    """Three passes of nothing: the session must fold its data checks into the first."""

    name = "Count"

    def init_state(self, session):
        return {"n_iter": 0}

    def one_iteration(self, session, state):
        session.run_pass({}, name="count")
        return {"n_iter": state["n_iter"] + 1}

    def converged(self, state):
        return state["n_iter"] >= 3


def test_data_checks_ride_in_the_first_pass_and_refuse_nan():
    X = np.random.default_rng(0).random((500, 3))
    session = FitSession(X, algorithm="Count").open(random_state=0)
    before = compute_count()
    session.run(lambda run: _Count())
    assert compute_count() - before == 3 and session.n_passes == 3
    assert session.data_stats["count"] == 500
    X[321, 1] = np.nan
    session = FitSession(X, algorithm="Count").open(random_state=0)
    with pytest.raises(dclust.DataError, match=r"X contains 1 non-finite values, NaN or inf "
                                               r"\(first in chunk 0, row 321\)"):
        session.run(lambda run: _Count())


def test_huge_float32_switches_the_passes_to_float64():
    X = np.full((100, 2), 1e30, dtype=np.float32)
    X[::2] *= -1
    session = FitSession(X, algorithm="Count").open(random_state=0)
    session.run(lambda run: _Count())
    assert session.work_dtype == np.float64 and session.dtype == np.float32


# ---- one declaration of parameters ----------------------------------------------------

@pytest.mark.parametrize("cmd, cls", [("kmeans", "KMeans"), ("kmedoids", "KMedoids"),
                                      ("balanced-kmeans", "BalancedKMeans")])
def test_cli_options_are_the_declared_parameters(cmd, cls, capsys):
    from dclust.cli.main import main

    est = getattr(dclust, cls)
    assert main(["fit", cmd, "--help"]) == 0
    help_text = capsys.readouterr().out
    declared = {p.name for p in est._params}
    assert declared == set(est._get_param_names()), "every __init__ parameter is declared"
    for p in est._params:
        if p.option() is not None:
            assert p.option() in help_text, f"{p.option()} missing from `dclust fit {cmd} --help`"
    assert "--device" in help_text and "--checkpoint" in help_text and "--resume" in help_text


@pytest.mark.parametrize("cls, param, value, expected", [
    ("KMeans", "max_iter", 0,
     "max_iter=0 is not valid; expected an integer >= 1 (maximum Lloyd iterations per run)."),
    ("KMeans", "n_init", "many", "n_init='many' is not valid; expected 'auto' or an integer >= 1"),
    ("KMedoids", "method", "pam", "method='pam' is not valid; expected one of 'clara', 'fasterpam'"),
    ("BalancedKMeans", "rho0", 1.5, "rho0=1.5 is not valid; expected a number > 0 and <= 1 "
     "(first transported mass of the schedule)."),
    ("BalancedKMeans", "anneal", "yes", "anneal='yes' is not valid; expected True or False"),
    ("KMeans", "split_every", 1, "split_every=1 is not valid; expected an integer >= 2 or None"),
])
def test_declared_parameters_give_uniform_messages(cls, param, value, expected):
    est = getattr(dclust, cls)(3, **{param: value})
    with pytest.raises(dclust.DclustError, match=re.escape(expected)):
        est.fit(np.zeros((20, 2)))


def test_cli_flag_type_errors_are_usage_errors(capsys, data):
    from dclust.cli.main import main

    assert main(["fit", "kmeans", data[0], "-k", "x", "--model", "m.npz"]) == 2
    assert "'x' is not an integer" in capsys.readouterr().err


def test_booleans_are_options_only_as_booleans():
    from dclust.params import Param

    p = Param("semi_supervised", "doc", "choice", options=("auto", True, False))
    assert p.check(True) is True and p.check(False) is False and p.check("auto") == "auto"
    for value in (1, 0, 1.0, "True"):
        with pytest.raises(dclust.DclustError, match=re.escape(
                f"semi_supervised={value!r} is not valid; expected one of 'auto', True, False")):
            p.check(value)


def test_balanced_kmeans_shares_kmeans_init_check_and_takes_a_callable():
    X = np.random.default_rng(0).normal(size=(300, 2))
    with pytest.raises(dclust.DclustError, match=re.escape(
            "Unknown init 'kmeans++'; expected one of 'k-means||', 'k-means++', 'random', a "
            "callable or an array")):
        dclust.BalancedKMeans(3, init="kmeans++").fit(X)
    seen = {}

    def first_rows(sample, k, random_state):
        seen["rows"] = sample.shape[0]
        return sample[:k]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bk = dclust.BalancedKMeans(3, init=first_rows, random_state=0, progress=False).fit(X)
    assert seen["rows"] == 300 and np.bincount(np.asarray(bk.labels_)).min() >= 90
