"""Object storage end to end: a moto S3 server started by the test on 127.0.0.1 (port 0),
a dataset written there with ``dclust make-blobs s3://...``, fitted from there, labels and
model written back there, read back and checked; credentials from storage options or
the environment, and never found in the model, the outputs, the CLI's output or an error
message."""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys

import numpy as np
import pytest

import dclust
from dclust.exceptions import StorageError
from dclust.io.paths import redact, secret_values

pytestmark = pytest.mark.distributed

BUCKET = "dclust-test"
KEY_ID = "AKIADCLUSTTEST0000"
SECRET = "dclust-secret-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import s3fs

    fs = s3fs.S3FileSystem(key=KEY_ID, secret=SECRET, client_kwargs={"endpoint_url": endpoint,
                                                                      "region_name": "us-east-1"})
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
    yield {"endpoint": endpoint, "fs": fs,
           "options": {"key": KEY_ID, "secret": SECRET,
                       "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}}
    server.stop()


@pytest.fixture
def no_aws_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    # moto accepts any credentials; the test's own are the ones that must not leak.


def _all_bytes(fs, prefix):
    """Every object under ``prefix``, concatenated (to search for leaked secrets)."""
    fs.invalidate_cache()
    return b"".join(fs.cat_file(p) for p in fs.find(prefix))


def _cli_options(s3):
    return ["--storage-option", f"key={KEY_ID}", "--storage-option", f"secret={SECRET}",
            "--storage-option", f'client_kwargs={{"endpoint_url": "{s3["endpoint"]}", '
                                '"region_name": "us-east-1"}']


def test_cli_make_blobs_fit_predict_on_s3(s3, no_aws_env, capsys):
    from dclust.cli.main import main

    root = f"s3://{BUCKET}/cli"
    so = _cli_options(s3)
    assert main(["make-blobs", f"{root}/blobs.zarr", "--n-samples", "30000", "--n-features", "5",
                 "--centers", "4", "--chunk-size", "7500", "--seed", "2", *so]) == 0
    assert main(["fit", "kmeans", f"{root}/blobs.zarr", "-k", "4", "--seed", "0",
                 "--model", f"{root}/km.npz", "--labels", f"{root}/labels.zarr", *so]) == 0
    assert main(["predict", f"{root}/km.npz", f"{root}/blobs.zarr", "--labels",
                 f"{root}/labels2.zarr", *so]) == 0
    assert main(["info", f"{root}/km.npz", *so]) == 0
    out = capsys.readouterr()
    assert f"model: {root}/km.npz" in out.out and f"labels: {root}/labels.zarr" in out.out

    # Read everything back from the bucket and check it.
    import zarr
    from zarr.storage import FsspecStore

    opts = s3["options"]
    store = lambda p: FsspecStore.from_url(f"{root}/{p}", storage_options=opts, read_only=True)  # noqa: E731
    zX = zarr.open_array(store=store("blobs.zarr"), mode="r")
    X = zX[...]
    assert X.shape == (30000, 5) and zX.chunks == (7500, 5)
    labels = zarr.open_array(store=store("labels.zarr"), mode="r")[...]
    labels2 = zarr.open_array(store=store("labels2.zarr"), mode="r")[...]
    km = dclust.load(f"{root}/km.npz", storage_options=opts)
    np.testing.assert_array_equal(labels, km.predict(X))
    np.testing.assert_array_equal(labels2, labels)
    true_centers = np.asarray(zX.attrs["dclust"]["centers"])
    # Every true centre has a fitted centre near it (well-separated blobs, std 1).
    d = np.linalg.norm(true_centers[:, None] - km.cluster_centers_[None], axis=-1)
    assert d.min(axis=1).max() < 0.1
    # The credentials are in no output and were never printed.
    stored = _all_bytes(s3["fs"], f"{BUCKET}/cli")
    assert SECRET.encode() not in stored and KEY_ID.encode() not in stored
    assert SECRET not in out.out + out.err and KEY_ID not in out.out + out.err


@pytest.mark.filterwarnings("ignore::dclust.ConvergenceWarning")
def test_python_api_on_s3_with_storage_options(s3, no_aws_env, dask_client):
    from dclust.testing.datasets import make_blobs

    root = f"s3://{BUCKET}/py"
    opts = s3["options"]
    make_blobs(f"{root}/x.zarr", 20000, 3, 3, chunk_size=5000, seed=4, storage_options=opts)
    X = dclust.open_array(f"{root}/x.zarr", storage_options=opts)
    km = dclust.KMeans(3, random_state=1, progress=False).fit(X)
    km.save(f"{root}/km.npz", storage_options=opts)
    dclust.write_labels(km.labels_, f"{root}/labels.zarr", storage_options=opts)
    back = dclust.load(f"{root}/km.npz", storage_options=opts)
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)
    import zarr
    from zarr.storage import FsspecStore

    z = zarr.open_array(store=FsspecStore.from_url(f"{root}/labels.zarr", storage_options=opts,
                                                   read_only=True), mode="r")
    labels = z[...]
    np.testing.assert_array_equal(labels, km.labels_.compute())
    assert z.attrs["dclust"] == {"kind": "labels"}
    # Replacing outputs in object storage (no rename there): old versions and temporary
    # copies are gone afterwards.
    km2 = dclust.KMeans(3, random_state=2, max_iter=1, progress=False).fit(X)
    km2.save(f"{root}/km.npz", storage_options=opts)
    dclust.write_labels(km2.labels_, f"{root}/labels.zarr", storage_options=opts)
    np.testing.assert_array_equal(
        dclust.load(f"{root}/km.npz", storage_options=opts).cluster_centers_, km2.cluster_centers_)
    z = zarr.open_array(store=FsspecStore.from_url(f"{root}/labels.zarr", storage_options=opts,
                                                   read_only=True), mode="r")
    np.testing.assert_array_equal(z[...], km2.labels_.compute())
    s3["fs"].invalidate_cache()
    names = sorted(p.split("/")[2] for p in s3["fs"].find(f"{BUCKET}/py"))
    assert set(names) == {"x.zarr", "km.npz", "labels.zarr"}, names
    stored = _all_bytes(s3["fs"], f"{BUCKET}/py")
    assert SECRET.encode() not in stored


def test_credentials_from_the_environment(s3, monkeypatch, dask_client):
    """No storage options at all: s3fs takes key, secret and endpoint from AWS_* variables."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    from dclust.testing.datasets import make_blobs

    url = f"s3://{BUCKET}/env/x.zarr"
    make_blobs(url, 8000, 2, 2, chunk_size=4000, seed=0)
    X = dclust.open_array(url)
    km = dclust.KMeans(2, random_state=0, progress=False).fit(X)
    km.save(f"s3://{BUCKET}/env/km.npz")
    assert dclust.load(f"s3://{BUCKET}/env/km.npz").cluster_centers_.shape == (2, 2)
    assert SECRET in secret_values()  # ... and would be masked in any message


def test_errors_do_not_show_credentials(s3, no_aws_env, capsys, tmp_path):
    from dclust.cli.main import main

    opts = s3["options"]
    with pytest.raises(StorageError, match=re.escape(
            f"No Zarr array at 's3://{BUCKET}/nothing.zarr': the path does not exist.")) as e1:
        dclust.open_array(f"s3://{BUCKET}/nothing.zarr", storage_options=opts)
    with pytest.raises(StorageError, match="No model file at") as e2:
        dclust.load(f"s3://{BUCKET}/nothing.npz", storage_options=opts)
    so = _cli_options(s3)
    assert main(["fit", "kmeans", f"s3://{BUCKET}/nothing.zarr", "-k", "2", "--model",
                 f"s3://{BUCKET}/m.npz", *so]) == 2
    assert main(["predict", f"s3://{BUCKET}/nothing.npz", f"s3://{BUCKET}/nothing.zarr",
                 "--labels", f"s3://{BUCKET}/l.zarr", *so]) == 2
    err = capsys.readouterr().err
    assert err.count("dclust: error:") == 2
    for text in (str(e1.value), str(e2.value), err):
        assert SECRET not in text and KEY_ID not in text


def test_cli_masks_a_secret_repeated_in_an_error(monkeypatch):
    """Whatever a storage library puts in its message, the CLI shows the secret masked."""
    import argparse

    from dclust.cli._common import dask_client

    args = argparse.Namespace(scheduler=None, scheduler_file=None, tls_ca_file=None,
                              tls_cert=None, tls_key=None, quiet=True,
                              storage_option=[("key", KEY_ID), ("secret", SECRET)])
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(StorageError, match=re.escape(
            "request signed with key *** and secret *** was refused")) as info:
        with dask_client(args):
            raise PermissionError(f"request signed with key {KEY_ID} and secret {SECRET} was refused")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_redact_and_secret_values():
    opts = {"key": "AKIA1234", "secret": "s3cr3t-value", "anon": False, "token": "abc",
            "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000",
                              "aws_session_token": "session-token-1"}}
    env = {"AWS_SECRET_ACCESS_KEY": "env-secret-9", "AWS_DEFAULT_REGION": "us-east-1",
           "GOOGLE_APPLICATION_CREDENTIALS_FILE": "/path/creds.json", "HOME": "/root"}
    found = secret_values(opts, environ=env)
    # "abc" is too short to mask safely; the endpoint and region are not secrets.
    assert found == {"AKIA1234", "s3cr3t-value", "session-token-1", "env-secret-9"}
    text = "key AKIA1234 secret s3cr3t-value at http://127.0.0.1:9000"
    assert redact(text, opts) == "key *** secret *** at http://127.0.0.1:9000"


@pytest.mark.slow
def test_cli_process_with_environment_credentials(s3, tmp_path):
    """The CLI in its own process (embedded cluster of worker processes): the workers read
    S3 with the credentials of the environment they inherit."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "DASK_SCHEDULER_ADDRESS"}
    env.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_ENDPOINT_URL=s3["endpoint"], AWS_DEFAULT_REGION="us-east-1")
    root = f"s3://{BUCKET}/proc"

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "dclust", *args], capture_output=True,
                             text=True, timeout=600, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert SECRET not in out.stdout + out.stderr
        return out

    run("make-blobs", f"{root}/x.zarr", "--n-samples", "20000", "--n-features", "4",
        "--centers", "3", "--chunk-size", "5000")
    run("fit", "kmeans", f"{root}/x.zarr", "-k", "3", "--seed", "0", "--model", f"{root}/km.npz",
        "--labels", f"{root}/labels.zarr")
    km = dclust.load(f"{root}/km.npz", storage_options=s3["options"])
    assert km.cluster_centers_.shape == (3, 4)
    assert SECRET.encode() not in _all_bytes(s3["fs"], f"{BUCKET}/proc")
