"""The ``dclust`` command line, run in-process on the session's Dask cluster."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

import dclust
from dclust.cli import fit as fit_cmd
from dclust.cli import info as info_cmd
from dclust.cli._common import storage_option
from dclust.cli.main import main
from dclust.testing import assert_labels_equivalent, make_blobs, make_blobs_array


@pytest.fixture
def cli(capsys):
    """Run ``dclust ARGS...`` in-process; return (exit status, stdout, stderr)."""

    def run(*argv):
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dclust: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def blobs_zarr(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "blobs.zarr")
    make_blobs(path, 6_000, 5, 3, chunk_size=1_500, seed=1)
    return path


# ---- the round trip --------------------------------------------------------------------
def test_round_trip_make_blobs_fit_predict_info(cli, tmp_path):
    data = tmp_path / "b.zarr"
    status, out, err = cli("make-blobs", data, "--n-samples", 8_000, "--n-features", 5,
                           "--centers", 3, "--chunk-size", 2_000, "--seed", 4, "--quiet")
    assert status == 0, err
    assert out.startswith(f"wrote {data}: 8,000 x 5 float32, 3 centers, chunks 2,000 x 5 (4 chunks)")
    assert "on disk" in out and out.count("\n") == 1
    z = zarr.open_array(str(data), mode="r")
    assert z.chunks == (2_000, 5)

    model, labels = tmp_path / "km.npz", tmp_path / "labels.zarr"
    status, out, err = cli("fit", "kmeans", data, "-k", 3, "--model", model, "--labels", labels,
                           "--seed", 0, "--chunk-size", 2_000, "--quiet")
    assert status == 0, err
    first = out.splitlines()[0]
    for piece in ("KMeans k=3 on 8,000 x 5 float32", "iterations", "converged", "inertia",
                  "seed 0", "passes"):
        assert piece in first
    assert f"model: {model}" in out and f"labels: {labels}" in out
    fitted = zarr.open_array(str(labels), mode="r")
    assert fitted.dtype == np.int32 and fitted.chunks == (2_000,)

    predicted = tmp_path / "predicted.zarr"
    status, out, err = cli("predict", model, data, "--labels", predicted, "--quiet")
    assert status == 0, err
    assert f"-> {predicted}" in out
    np.testing.assert_array_equal(zarr.open_array(str(predicted), mode="r")[...], fitted[...])

    # The blobs are well apart: k-means finds the generating partition.
    _, _, truth = make_blobs_array(8_000, 5, 3, chunk_size=2_000, seed=4, return_labels=True)
    assert_labels_equivalent(fitted[...], truth, min_agreement=0.99)

    status, out, err = cli("info", model)
    assert status == 0, err
    assert "estimator: KMeans" in out and "n_clusters=3" in out
    status, out, err = cli("info", model, "--json")
    info = json.loads(out)
    assert info["kind"] == "model" and info["n_clusters"] == 3 and info["n_features"] == 5
    assert info["params"]["n_clusters"] == 3 and info["params"]["random_state"] == 0
    assert info["arrays"]["cluster_centers_"]["shape"] == [3, 5]

    status, out, err = cli("info", data, "--json")
    info = json.loads(out)
    assert info["kind"] == "zarr-array"
    assert info["shape"] == [8_000, 5] and info["chunks"] == [2_000, 5] and info["dtype"] == "float32"
    assert info["n_chunks"] == info["n_chunks_stored"] == 4
    assert 0 < info["bytes_stored"] and info["bytes_uncompressed"] == 8_000 * 5 * 4
    assert info["attributes"]["dclust"]["generator"]["seed"] == 4
    status, out, err = cli("info", data)
    assert "chunks      2,000 x 5" in out and "dclust.generator.seed" in out


def test_fit_without_labels_and_model_loads(cli, blobs_zarr, tmp_path):
    model = tmp_path / "km.npz"
    status, out, err = cli("fit", "kmeans", blobs_zarr, "-k", 2, "--model", model,
                           "--init", "k-means++", "--n-init", 2, "--cache", "none", "-q")
    assert status == 0, err
    assert "labels:" not in out
    km = dclust.load(model)
    assert km.n_clusters == 2 and km.init == "k-means++" and km.n_init == 2
    # Without --seed a fresh one is drawn, shown and kept, so the run can be repeated.
    assert isinstance(km.random_state, int) and f"seed {km.random_state}," in out
    assert km.cluster_centers_.shape == (2, 5)


def test_convergence_warning_is_one_tidy_line(cli, blobs_zarr, tmp_path):
    status, out, err = cli("fit", "kmeans", blobs_zarr, "-k", 5, "--model", tmp_path / "m.npz",
                           "--init", "random", "--max-iter", 1, "--tol", 0, "--seed", 0, "-q")
    assert status == 0, err
    assert "NOT converged" in out
    assert "dclust: warning: KMeans stopped at max_iter=1" in err
    assert "warnings.warn" not in err


def test_memory_url_and_storage_options(cli):
    url = "memory://dclust-cli-test/blobs.zarr"
    status, out, err = cli("make-blobs", url, "--n-samples", 500, "--n-features", 3,
                           "--centers", 2, "--storage-option", "skip_instance_cache=false", "-q")
    assert status == 0, err
    status, out, err = cli("info", url, "--json")
    assert json.loads(out)["shape"] == [500, 3]


def test_scheduler_option_connects_to_a_running_scheduler(cli, dask_client, tmp_path):
    status, out, err = cli("make-blobs", tmp_path / "b.zarr", "--n-samples", 300,
                           "--n-features", 2, "--centers", 2,
                           "--scheduler", dask_client.scheduler.address)
    assert status == 0, err
    assert "connected to" in err
    # The session's own client is untouched and still the one dclust uses.
    assert dclust.get_client() is dask_client


# ---- user errors: one line, exit status 2 -----------------------------------------------
def test_missing_input(cli, tmp_path):
    status, _, err = cli("fit", "kmeans", tmp_path / "nope.zarr", "-k", 2,
                         "--model", tmp_path / "m.npz")
    assert status == 2
    line = _one_error_line(err)
    assert "nope.zarr" in line and "does not exist" in line
    assert not (tmp_path / "m.npz").exists()


def test_more_clusters_than_samples(cli, tmp_path):
    data = str(tmp_path / "small.zarr")
    make_blobs(data, 50, 2, 2, seed=0)
    status, _, err = cli("fit", "kmeans", data, "-k", 100, "--model", tmp_path / "m.npz")
    assert status == 2
    assert "n_samples=50 must be >= n_clusters=100" in _one_error_line(err)


def test_bad_init_is_a_usage_error(cli, blobs_zarr, tmp_path):
    status, _, err = cli("fit", "kmeans", blobs_zarr, "-k", 2, "--model", tmp_path / "m.npz",
                         "--init", "kmeans++")
    assert status == 2
    assert "argument --init: invalid choice: 'kmeans++'" in err


def test_bad_numbers_are_user_errors(cli, blobs_zarr, tmp_path):
    status, _, err = cli("fit", "kmeans", blobs_zarr, "-k", 2, "--model", tmp_path / "m.npz",
                         "--max-iter", 0)
    assert status == 2
    assert "max_iter=0 is not valid; expected an integer >= 1" in _one_error_line(err)
    status, _, err = cli("make-blobs", tmp_path / "x.zarr", "--n-samples", 0, "--n-features", 2,
                         "--centers", 2)
    assert status == 2
    assert "n_samples=0 must be >= 1" in _one_error_line(err)


@pytest.mark.parametrize("command", ["fit", "predict", "sinkhorn-assign"])
@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_bad_chunk_size_is_a_usage_error(cli, blobs_zarr, tmp_path, command, value):
    args = {
        "fit": ("fit", "kmeans", blobs_zarr, "-k", 2, "--model", tmp_path / "m.npz"),
        "predict": ("predict", tmp_path / "m.npz", blobs_zarr, "--labels", tmp_path / "l.zarr"),
        "sinkhorn-assign": ("sinkhorn-assign", blobs_zarr, "--labels", tmp_path / "l.zarr"),
    }[command]
    status, _, err = cli(*args, "--chunk-size", value)
    assert status == 2
    assert f"argument --chunk-size: '{value}' must be a positive number of rows (50000)" in err
    assert not (tmp_path / "l.zarr").exists()


@pytest.mark.parametrize("content", [b"just some text\n", None])
def test_predict_with_a_file_that_is_not_a_model(cli, blobs_zarr, tmp_path, content):
    bogus = tmp_path / "bogus.npz"
    if content is None:
        np.savez(bogus, x=np.zeros(3))  # an NPZ archive, but not dclust's
    else:
        bogus.write_bytes(content)
    status, _, err = cli("predict", bogus, blobs_zarr, "--labels", tmp_path / "l.zarr")
    assert status == 2
    assert "is not a dclust model file" in _one_error_line(err)
    assert not (tmp_path / "l.zarr").exists()


def test_info_on_other_things(cli, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    status, _, err = cli("info", text)
    assert status == 2
    assert "is neither a dclust model file nor a Zarr array" in _one_error_line(err)

    status, _, err = cli("info", tmp_path)  # a folder that is not Zarr
    assert status == 2
    assert "neither a dclust model file nor a Zarr array" in _one_error_line(err)

    status, _, err = cli("info", tmp_path / "missing")
    assert status == 2
    assert "no such file or folder" in _one_error_line(err)

    group = tmp_path / "g.zarr"
    zarr.create_group(str(group)).create_array("x", shape=(4, 2), dtype="f4")
    status, _, err = cli("info", group)
    assert status == 2
    assert "is a Zarr group, not an array" in _one_error_line(err) and "x" in err


def test_outputs_are_not_replaced_without_overwrite(cli, blobs_zarr, tmp_path):
    model = tmp_path / "m.npz"
    model.write_bytes(b"keep me")
    status, _, err = cli("fit", "kmeans", blobs_zarr, "-k", 2, "--model", model)
    assert status == 2
    assert "already exists; pass --overwrite" in _one_error_line(err)
    assert model.read_bytes() == b"keep me"
    status, _, err = cli("fit", "kmeans", blobs_zarr, "-k", 2, "--model", model, "--overwrite",
                         "--seed", 0, "-q")
    assert status == 0, err
    assert dclust.load(model).n_clusters == 2

    status, _, err = cli("fit", "kmeans", blobs_zarr, "-k", 2,
                         "--model", tmp_path / "no" / "such" / "m.npz")
    assert status == 2
    assert "does not exist" in _one_error_line(err)


def test_usage_errors(cli):
    status, _, err = cli("make-blobs", "x.zarr", "--n-samples", 10)
    assert status == 2 and "required" in err
    status, _, err = cli("info", "x", "--storage-option", "novalue")
    assert status == 2 and "is not of the form key=value" in err
    status, _, err = cli("fit")
    assert status == 2 and "ALGORITHM" in err
    status, _, err = cli()
    assert status == 2


# ---- behaviour of the entry point ----------------------------------------------------------
def test_unexpected_errors_keep_their_traceback(cli, blobs_zarr, tmp_path, monkeypatch):
    from dclust.cli import fit as fit_module

    def boom(module, args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fit_module, "build", boom)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["fit", "kmeans", blobs_zarr, "-k", "2", "--model", str(tmp_path / "m.npz")])


def test_ctrl_c_exits_130(cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(info_cmd, "describe", interrupted)
    status, _, err = cli("info", "anything")
    assert status == 130
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "text, expected",
    [
        ("anon=true", ("anon", True)),
        ("anon=True", ("anon", True)),
        ("block_size=1048576", ("block_size", 1048576)),
        ("ratio=0.5", ("ratio", 0.5)),
        ("token=null", ("token", None)),
        ("endpoint_url=http://127.0.0.1:5555", ("endpoint_url", "http://127.0.0.1:5555")),
        ("client_kwargs={\"region_name\": \"eu\"}", ("client_kwargs", {"region_name": "eu"})),
        ("key=a=b", ("key", "a=b")),
        ("empty=", ("empty", "")),
    ],
)
def test_storage_option_values(text, expected):
    assert storage_option(text) == expected


def test_version_and_help(cli):
    status, out, _ = cli("--version")
    assert status == 0 and out.strip() == f"dclust {dclust.__version__}"
    for argv, text in [
        (["--help"], "make-blobs"),
        (["make-blobs", "--help"], "--cluster-std"),
        (["fit", "--help"], "kmeans"),
        (["fit", "kmeans", "--help"], "--init"),
        (["predict", "--help"], "--labels"),
        (["info", "--help"], "--json"),
    ]:
        status, out, _ = cli(*argv)
        assert status == 0 and text in out and "usage: dclust" in out


def test_fit_algorithms_are_plugins():
    found = {m.NAME: m for m in fit_cmd.algorithms()}
    assert "kmeans" in found
    for module in found.values():
        assert module.__name__.startswith("dclust.cli.fit_")
        assert callable(module.estimator) and module.GROUP and module.HELP
        # Its options are the estimator's declared parameters.
        assert module.estimator()._params


def test_python_dash_m(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["dclust", "--version"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("dclust", run_name="__main__")
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dclust {dclust.__version__}"


def test_console_script_help():
    exe = shutil.which("dclust")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "dclust", "--help"]
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "usage: dclust" in done.stdout and "fit" in done.stdout


def test_info_names_a_checkpoint(tmp_path, capsys):
    import numpy as np

    import dclust
    from dclust.cli.main import main

    X = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    path = tmp_path / "fit.ckpt.npz"
    dclust.KMeans(2, checkpoint=str(path), random_state=0, max_iter=2, progress=False).fit(X)
    assert main(["info", str(path)]) == 0
    assert "dclust fit checkpoint" in capsys.readouterr().out
    assert main(["info", str(path), "--json"]) == 0
    assert '"kind": "checkpoint"' in capsys.readouterr().out
