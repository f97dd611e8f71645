"""Which Dask cluster dclust runs on, and bringing one up when there is none.

Order of preference:

1. the client made by :func:`connect`, or any active ``distributed.Client`` (used as is);
2. the scheduler named by the ``DASK_SCHEDULER_ADDRESS`` environment variable (or the
   ``scheduler-address`` of the Dask configuration), with TLS settings from the Dask
   configuration when it is a ``tls://`` address;
3. an embedded ``distributed.LocalCluster`` sized to this machine, started on first use
   (dask-cuda's ``LocalCUDACluster``, one worker per GPU, on a machine with GPUs when
   dask-cuda is installed)
   and reused by later calls in the same process.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from ..exceptions import ClusterConnectionError, DclustValueError
from .threads import usable_cores

__all__ = ["connect", "configured_address", "get_client", "local_cluster_layout", "make_security",
           "shutdown"]

_lock = threading.RLock()
_embedded = None  # (LocalCluster, Client) started by dclust
_connected = None  # Client made by connect()


def _say(msg: str) -> None:
    print(f"dclust: {msg}", file=sys.stderr, flush=True)


def local_cluster_layout(n_cores: int | None = None) -> tuple[int, int]:
    """(workers, threads per worker) for the embedded cluster.

    dclust's kernels release the GIL and use one BLAS thread per worker thread, so
    threads scale inside one process; several processes only pay off on larger
    machines, where one process per four cores keeps memory allocators and the
    scheduler's per-worker bookkeeping in check. By default the cores this process may
    run on (:func:`dclust.runtime.threads.usable_cores`: a ``taskset`` or a container's
    CPU set, not every core of the host).
    """
    if n_cores is not None and (isinstance(n_cores, bool) or not isinstance(n_cores, int) or n_cores < 1):
        raise DclustValueError(f"n_cores={n_cores!r} must be a positive integer (or None for this machine's).")
    n_cores = n_cores or usable_cores()
    workers = max(1, n_cores // 4)
    while n_cores % workers:
        workers -= 1
    return workers, n_cores // workers


def configured_address():
    """The scheduler address the environment or the Dask config names, or ``None``.

    ``DASK_SCHEDULER_ADDRESS`` first, then the ``scheduler-address`` key of the Dask
    configuration (``~/.config/dask/*.yaml``), as ``distributed.Client()`` reads them.
    """
    env = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if env:
        return env
    import dask

    value = dask.config.get("scheduler-address", None)
    return value or None


def _read_scheduler_file(scheduler_file) -> str:
    import json

    scheduler_file = os.fspath(scheduler_file)
    if not os.path.exists(scheduler_file):
        raise ClusterConnectionError(
            f"Scheduler file {scheduler_file!r} does not exist. Start the scheduler with "
            f"`dask scheduler --scheduler-file {scheduler_file}` or pass its address."
        )
    try:
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        if not isinstance(address, str):
            raise TypeError(address)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ClusterConnectionError(
            f"Scheduler file {scheduler_file!r} has no scheduler address ({type(e).__name__}: "
            f"{e}); it should be the JSON file written by `dask scheduler --scheduler-file "
            f"{scheduler_file}`. Start the scheduler again or pass its address."
        ) from None
    return address


def _check_address(address) -> str:
    from distributed.comm.registry import backends

    if not isinstance(address, str) or not address.strip():
        raise DclustValueError(
            f"address={address!r} is not a scheduler address; pass a string such as "
            "'tcp://host:8786' or 'tls://host:8786'."
        )
    address = address.strip()
    scheme, sep, _ = address.partition("://")
    if sep and scheme not in backends:
        hint = ""
        if scheme in ("http", "https"):
            hint = (" That looks like the dashboard's URL; the scheduler listens on its own "
                    "port (8786 by default).")
        raise DclustValueError(
            f"Unknown protocol {scheme!r} in the scheduler address {address!r}; use "
            f"'tcp://host:port' or 'tls://host:port' (known: {', '.join(sorted(backends))}).{hint}"
        )
    return address


def make_security(tls_ca_file=None, tls_cert=None, tls_key=None):
    """A ``distributed.Security`` requiring TLS, from the CA, certificate and key files.

    Parameters
    ----------
    tls_ca_file : str
        The certificate authority that signed the scheduler's and workers' certificates.
    tls_cert : str
        This client's certificate (PEM), signed by a CA the scheduler trusts.
    tls_key : str, optional
        Its private key, unless it is in the ``tls_cert`` file.

    Returns
    -------
    distributed.Security
    """
    from distributed import Security

    given = {"tls_ca_file": tls_ca_file, "tls_cert": tls_cert, "tls_key": tls_key}
    for name, path in given.items():
        if path is not None and not os.path.isfile(os.fspath(path)):
            raise DclustValueError(
                f"{name}={os.fspath(path)!r} is not a file. Pass the PEM file made for this "
                "cluster (see deploy/tls/README.md for how to make one)."
            )
    if tls_ca_file is None or tls_cert is None:
        missing = [n for n in ("tls_ca_file", "tls_cert") if given[n] is None]
        raise DclustValueError(
            f"TLS needs both tls_ca_file and tls_cert (CLI: --tls-ca-file and --tls-cert); "
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing. "
            "Give the CA file and this client's certificate (and --tls-key unless the key "
            "is in the certificate file)."
        )
    return Security(
        tls_ca_file=os.fspath(tls_ca_file),
        tls_client_cert=os.fspath(tls_cert),
        tls_client_key=os.fspath(tls_key) if tls_key is not None else None,
        require_encryption=True,
    )


def _has_client_tls(security) -> bool:
    return bool(security is not None and security.tls_ca_file and security.tls_client_cert)


def connect(address=None, *, scheduler_file=None, security=None, tls_ca_file=None, tls_cert=None,
            tls_key=None, timeout=10.0, quiet=False):
    """Connect dclust to a running Dask scheduler.

    Parameters
    ----------
    address : str, optional
        ``tcp://host:port`` or ``tls://host:port`` (``host:port`` means ``tcp://``).
        Defaults to the scheduler file when one is given, else ``DASK_SCHEDULER_ADDRESS``,
        else the ``scheduler-address`` of the Dask configuration.
    scheduler_file : str, optional
        Path of the JSON file written by ``dask scheduler --scheduler-file``.
    security : distributed.Security, optional
        TLS configuration for ``tls://`` addresses. Without it (and without the
        ``tls_*`` files) the Dask configuration's ``distributed.comm.tls.*`` settings
        (or ``DASK_DISTRIBUTED__COMM__TLS__*`` variables) are used.
    tls_ca_file, tls_cert, tls_key : str, optional
        Instead of ``security``: the CA file, this client's certificate and its key
        (PEM). They make a ``Security`` that requires encryption.
    timeout : float, default=10
        Seconds to wait for the scheduler before giving up.
    quiet : bool, default=False
        Do not print the dashboard link.

    Returns
    -------
    client : distributed.Client
        Also made the client that every later dclust call uses.

    Raises
    ------
    ClusterConnectionError
        The scheduler cannot be reached, refuses the connection (TLS), or the scheduler
        file is missing.
    DclustValueError
        The address, the timeout or the TLS files are not valid.
    """
    global _connected
    from distributed import Client, Security

    if scheduler_file is not None:
        file_address = _read_scheduler_file(scheduler_file)
        if address is None:
            address = file_address
    elif address is None:
        address = configured_address()
        if not address:
            raise DclustValueError(
                "connect() needs an address ('tcp://host:8786') or scheduler_file=...; "
                "neither was given and DASK_SCHEDULER_ADDRESS is not set."
            )
    address = _check_address(address)
    given_timeout = timeout
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        timeout = -1.0
    if not timeout > 0 or timeout != timeout:
        raise DclustValueError(
            f"timeout={given_timeout!r} must be a positive number of seconds, for example timeout=10."
        )
    tls_files = (tls_ca_file, tls_cert, tls_key)
    if any(f is not None for f in tls_files):
        if security is not None:
            raise DclustValueError(
                "Pass either security=distributed.Security(...) or the tls_ca_file/tls_cert/"
                "tls_key files, not both."
            )
        security = make_security(*tls_files)
    if security is not None and not isinstance(security, Security):
        raise DclustValueError(
            f"security={security!r} is not a distributed.Security; pass for example "
            "distributed.Security(tls_ca_file='ca.pem', tls_client_cert='cert.pem', "
            "tls_client_key='key.pem'), or the tls_ca_file/tls_cert/tls_key files."
        )
    where = repr(address) if scheduler_file is None else f"{address!r} (from {os.fspath(scheduler_file)!r})"
    if address.startswith("tls://") and not _has_client_tls(security or Security()):
        raise ClusterConnectionError(
            f"The scheduler at {where} requires TLS, but no client certificate was given. Pass "
            "tls_ca_file=, tls_cert= and tls_key= (CLI: --tls-ca-file, --tls-cert, --tls-key), "
            "security=distributed.Security(...), or set distributed.comm.tls.ca-file and "
            "distributed.comm.tls.client.cert/key in the Dask configuration "
            "(DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ...). See deploy/tls/README.md."
        )
    tls_hint = (
        " If the scheduler requires TLS, connect to its tls:// address with certificates."
        if not address.startswith("tls://") else
        " Check that the client certificate is signed by a CA the scheduler trusts and that "
        "tls_ca_file holds the CA that signed the scheduler's certificate."
    )
    try:
        client = Client(address, security=security, timeout=f"{timeout}s", set_as_default=True)
    except (OSError, TimeoutError) as e:
        raise ClusterConnectionError(
            f"Cannot reach the Dask scheduler at {where} within {timeout:g} s "
            f"({type(e).__name__}: {_one_line(e)}). Check that `dask scheduler` is running there "
            f"and that host and port are right.{tls_hint}"
        ) from None
    except (ValueError, TypeError, RuntimeError) as e:
        raise ClusterConnectionError(
            f"Cannot connect to the Dask scheduler at {where}: {_one_line(e)}. Pass an address "
            "such as 'tcp://host:8786' or 'tls://host:8786' (with certificates), or the scheduler "
            f"file written by `dask scheduler --scheduler-file`.{tls_hint}"
        ) from None
    with _lock:
        _connected = client
    if not quiet:
        _say(f"connected to {client.scheduler.address}; dashboard: {client.dashboard_link}")
    return client


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _local_gpus() -> int:
    """GPUs this machine offers dask-cuda (0 without CuPy, dask-cuda or a CUDA device)."""
    import importlib.util

    if importlib.util.find_spec("dask_cuda") is None or importlib.util.find_spec("cupy") is None:
        return 0
    from .gpus import gpu_count

    return gpu_count()


def _embedded_cluster():
    """A cluster sized to this machine: one worker per GPU with dask-cuda when there are
    GPUs (and dask-cuda is installed), else processes sharing the CPU cores."""
    # Dask's nannies run in this process and set OMP/MKL/OPENBLAS_NUM_THREADS=1 in its
    # environment before spawning workers (``distributed.nanny.pre-spawn-environ``). The
    # workers need that; the user's own process does not: NumPy, scikit-learn or FAISS
    # started afterwards here would run on one thread without saying so.
    saved = {k: os.environ.get(k) for k in _pre_spawn_keys()}
    try:
        return _start_embedded_cluster()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pre_spawn_keys():
    import dask

    keys = set(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
    return keys | {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}


def _start_embedded_cluster():
    # A worker's own errors reach the client with the task that failed; what the worker
    # processes would log on top (lost heartbeats while shutting down) is noise here.
    quiet_logs = logging.CRITICAL
    n_gpus = _local_gpus()
    if n_gpus:
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(dashboard_address=":0", silence_logs=quiet_logs)
        return cluster, f"{n_gpus} GPU worker(s), dask-cuda"
    from distributed import LocalCluster

    workers, threads = local_cluster_layout()
    why = _no_worker_processes()
    if why is None:
        try:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                                   dashboard_address=":0", silence_logs=quiet_logs)
            return cluster, f"{workers} worker(s) x {threads} thread(s)"
        except Exception as e:  # "Nanny failed to start" and the like
            why = f"worker processes failed to start ({_one_line(e)})"
    _say(f"notice: {why}; running the local cluster in threads of this process instead "
         "(same results; run the code from a script file under "
         "`if __name__ == \"__main__\":` for worker processes).")
    cluster = LocalCluster(n_workers=1, threads_per_worker=workers * threads, processes=False,
                           dashboard_address=":0", silence_logs=quiet_logs)
    return cluster, f"1 worker x {workers * threads} thread(s), in this process"


def _no_worker_processes():
    """Why worker processes cannot be started from this program, or ``None``.

    Dask starts workers with multiprocessing's "spawn", which re-imports the main module
    in every worker: that fails when the main module is not a file (``python -`` reading
    a pipe, some IDE consoles), and a worker process must never start a cluster itself
    (a script without a ``__main__`` guard runs dclust again while being imported there).
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        from ..exceptions import DclustError

        raise DclustError(
            "dclust was started while a worker process was importing the main script: put the "
            "code that calls dclust under `if __name__ == \"__main__\":`."
        )
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is not None and not os.path.exists(path):
        return f"the main program ({path}) is not a file that worker processes can import"
    return None


def _usable(client) -> bool:
    return client is not None and client.status in ("running", "connecting", "newly-created")


def get_client(*, quiet=False):
    """The ``distributed.Client`` dclust computes on (see the module docstring)."""
    global _embedded, _connected
    from distributed import Client

    with _lock:
        if _usable(_connected):
            return _connected
        _connected = None
        try:
            current = Client.current(allow_global=True)
        except ValueError:
            current = None
        if _usable(current):
            return current
        address = configured_address()
        if address:
            return connect(address, quiet=quiet)
        if _embedded is not None and _usable(_embedded[1]):
            return _embedded[1]
        cluster, what = _embedded_cluster()
        client = Client(cluster, set_as_default=True)
        _embedded = (cluster, client)
        _install_gc_policy(client)
        # Close it before the interpreter tears down, so workers do not log lost heartbeats.
        atexit.register(shutdown)
        if not quiet:
            _say(f"started a local Dask cluster ({what}); dashboard: {client.dashboard_link}")
        return client


def _install_gc_policy(client) -> None:
    """dclust's garbage-collector policy (:mod:`.gcpolicy`) in this process and in the
    embedded cluster's workers, unless ``DCLUST_GC_FREEZE=0``.

    Without it, full collections of the ~170,000 objects that imports leave in each
    process stalled workload a's passes by 100-300 ms: twice per process in the first
    fit, then about every 40 iterations in the client.
    """
    from . import gcpolicy, switches

    if not switches.gc_freeze_enabled():
        return
    try:
        client.register_plugin(gcpolicy.GCPolicyPlugin())
    except Exception as e:  # pragma: no cover - a speed measure only
        _say(f"notice: garbage-collector policy not installed on the workers ({_one_line(e)})")
    gcpolicy.install()


def shutdown() -> None:
    """Close the embedded cluster and any client made by :func:`connect`."""
    global _embedded, _connected
    with _lock:
        if _connected is not None:
            _connected.close()
            _connected = None
        if _embedded is not None:
            cluster, client = _embedded
            client.close()
            cluster.close()
            _embedded = None
            from . import gcpolicy

            gcpolicy.release()
