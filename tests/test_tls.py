"""TLS required between client, scheduler and workers: a self-signed CA and certificates
made by ``deploy/tls/make_certs.py`` (with ``cryptography``), a real ``dask scheduler``
and three ``dask worker`` processes on 127.0.0.1 that accept only TLS; dclust connects
with the certificate files (CLI and Python), with a ``distributed.Security`` object or
from the Dask configuration, and gets the same centres as the local cluster. A client
without a certificate, or with one from another CA, is refused with a clear error."""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pytest

import dclust
import dclust.runtime.client as rc
from dclust.exceptions import ClusterConnectionError, DclustValueError
from dclust.testing.processes import process_cluster

pytestmark = pytest.mark.distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, D, K, CHUNK, SEED = 40_000, 6, 4, 10_000, 11


def _make_certs_module():
    spec = importlib.util.spec_from_file_location(
        "dclust_make_certs", os.path.join(ROOT, "deploy", "tls", "make_certs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    mod = _make_certs_module()
    d = tmp_path_factory.mktemp("tls")
    cluster_files = mod.make_certs(str(d / "cluster"))
    client_files = mod.make_certs(str(d / "cluster"), name="client",
                                  ca=(cluster_files["ca_file"], cluster_files["ca_key"]))
    stranger = mod.make_certs(str(d / "other-ca"))  # a CA the cluster does not trust
    return {"cluster": cluster_files, "client": client_files, "stranger": stranger}


@pytest.fixture(scope="module")
def cluster(certs, tmp_path_factory):
    # No nannies: half the processes to start on a small CI machine (test_multinode.py
    # runs workers with nannies, as users usually do).
    pc = process_cluster(3, nthreads=1, memory_limit="512MiB", tls=certs["cluster"],
                         worker_args=["--no-nanny"], directory=str(tmp_path_factory.mktemp("procs")))
    yield pc
    pc.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory, dask_client):
    from dclust.testing.datasets import make_blobs

    path = str(tmp_path_factory.mktemp("data") / "blobs.zarr")
    make_blobs(path, N, D, K, chunk_size=CHUNK, seed=5)
    X = dclust.open_array(path, chunks=CHUNK)
    centers = dclust.KMeans(K, random_state=SEED, progress=False).fit(X).cluster_centers_
    return path, centers


@pytest.fixture
def restore_client(dask_client):
    yield
    if rc._connected is not None:
        rc._connected.close()
    rc._connected = None
    assert dclust.get_client() is dask_client


def test_cluster_listens_on_tls_only(cluster):
    assert cluster.address.startswith("tls://127.0.0.1:")
    with open(cluster.scheduler_file) as f:
        assert cluster.address in f.read()


def test_python_api_with_tls_files_matches_local(cluster, certs, data, restore_client):
    path, local = data
    c = certs["client"]
    client = dclust.connect(cluster.address, tls_ca_file=c["ca_file"], tls_cert=c["cert"],
                            tls_key=c["key"], quiet=True)
    assert client.security.require_encryption
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 3
    km = dclust.KMeans(K, random_state=SEED, progress=False).fit(dclust.open_array(path, chunks=CHUNK))
    np.testing.assert_array_equal(km.cluster_centers_, local)


def test_cli_with_tls_options_matches_local(cluster, certs, data, tmp_path, capsys, restore_client):
    from dclust.cli.main import main

    path, local = data
    c = certs["client"]
    status = main(["fit", "kmeans", path, "-k", str(K), "--seed", str(SEED), "--chunk-size",
                   str(CHUNK), "--model", str(tmp_path / "km.npz"), "--scheduler-file",
                   cluster.scheduler_file, "--tls-ca-file", c["ca_file"], "--tls-cert", c["cert"],
                   "--tls-key", c["key"]])
    out = capsys.readouterr()
    assert status == 0, out.err[-3000:]
    assert f"dclust: connected to {cluster.address}" in out.err
    np.testing.assert_array_equal(dclust.load(tmp_path / "km.npz").cluster_centers_, local)


def test_security_from_dask_config(cluster, certs, restore_client):
    """No TLS arguments: the certificates come from the Dask configuration (as set by
    deploy/tls/dask-tls.yaml or DASK_DISTRIBUTED__COMM__TLS__* variables)."""
    import dask

    from dclust.runtime.compute import compute_graph

    c = certs["client"]
    with dask.config.set({"distributed.comm.tls.ca-file": c["ca_file"],
                          "distributed.comm.tls.client.cert": c["cert"],
                          "distributed.comm.tls.client.key": c["key"],
                          "distributed.comm.require-encryption": True}):
        client = dclust.connect(cluster.address, quiet=True)
        assert client.security.tls_client_cert == c["cert"]
        assert compute_graph({"dclust-tls-sum": (sum, [1, 2, 3])}, "dclust-tls-sum") == 6


def test_security_object(cluster, certs, restore_client):
    from distributed import Security

    c = certs["client"]
    sec = Security(tls_ca_file=c["ca_file"], tls_client_cert=c["cert"], tls_client_key=c["key"],
                   require_encryption=True)
    client = dclust.connect(cluster.address, security=sec, quiet=True)
    assert client.submit(lambda x: x + 1, 1).result() == 2


def test_client_without_certificates_is_refused(cluster, restore_client):
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"The scheduler at {cluster.address!r} requires TLS, but no client certificate was "
            "given. Pass tls_ca_file=, tls_cert= and tls_key= (CLI: --tls-ca-file, --tls-cert, "
            "--tls-key)")):
        dclust.connect(cluster.address, quiet=True)


def test_plain_tcp_to_a_tls_scheduler_is_refused(cluster, restore_client):
    tcp = cluster.address.replace("tls://", "tcp://")
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Dask scheduler at {tcp!r}") + r".*If the scheduler requires TLS, connect to its "
            r"tls:// address with certificates\."):
        dclust.connect(tcp, quiet=True, timeout=3)


def test_certificate_from_another_ca_is_refused(cluster, certs, restore_client):
    s = certs["stranger"]
    with pytest.raises(ClusterConnectionError, match=re.escape(
            f"Cannot reach the Dask scheduler at {cluster.address!r} within 3 s") + r".*Check "
            r"that the client certificate is signed by a CA the scheduler trusts"):
        dclust.connect(cluster.address, tls_ca_file=s["ca_file"], tls_cert=s["cert"],
                       tls_key=s["key"], quiet=True, timeout=3)


def test_cli_without_certificates_is_refused(cluster, data, tmp_path, capsys):
    from dclust.cli.main import main

    status = main(["fit", "kmeans", data[0], "-k", "3", "--model", str(tmp_path / "m.npz"),
                   "--scheduler", cluster.address])
    assert status == 2
    err = capsys.readouterr().err
    assert f"dclust: error: The scheduler at {cluster.address!r} requires TLS, but no client " \
           "certificate was given." in err
    assert not (tmp_path / "m.npz").exists()


def test_tls_files_are_checked(certs, tmp_path, restore_client):
    c = certs["client"]
    with pytest.raises(DclustValueError, match=re.escape(
            f"tls_cert={str(tmp_path / 'nope.pem')!r} is not a file.")):
        dclust.connect("tls://127.0.0.1:1", tls_ca_file=c["ca_file"],
                       tls_cert=str(tmp_path / "nope.pem"))
    with pytest.raises(DclustValueError, match=re.escape(
            "TLS needs both tls_ca_file and tls_cert (CLI: --tls-ca-file and --tls-cert); "
            "tls_cert is missing.")):
        dclust.connect("tls://127.0.0.1:1", tls_ca_file=c["ca_file"])
    from distributed import Security

    with pytest.raises(DclustValueError, match=re.escape(
            "Pass either security=distributed.Security(...) or the tls_ca_file/tls_cert/tls_key "
            "files, not both.")):
        dclust.connect("tls://127.0.0.1:1", security=Security(), tls_ca_file=c["ca_file"],
                       tls_cert=c["cert"])


def test_cli_tls_options_need_a_scheduler(data, tmp_path, capsys, certs, monkeypatch):
    from dclust.cli.main import main

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    c = certs["client"]
    status = main(["fit", "kmeans", data[0], "-k", "3", "--model", str(tmp_path / "m.npz"),
                   "--tls-ca-file", c["ca_file"], "--tls-cert", c["cert"]])
    assert status == 2
    assert ("dclust: error: --tls-ca-file, --tls-cert given without a scheduler: TLS applies to a "
            "tls:// scheduler named by --scheduler") in capsys.readouterr().err
