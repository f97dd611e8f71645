"""Which Dask cluster dclust runs on, and bringing one up when there is none.

Order of preference:

1. the client made by :func:`connect`, or any active ``distributed.Client`` (used as is);
2. the scheduler named by the ``DASK_SCHEDULER_ADDRESS`` environment variable;
3. an embedded ``distributed.LocalCluster`` sized to this machine, started on first use
   and reused by later calls in the same process.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from ..exceptions import ClusterConnectionError, DclustValueError

__all__ = ["connect", "get_client", "local_cluster_layout", "shutdown"]

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
    scheduler's per-worker bookkeeping in check.
    """
    if n_cores is not None and (isinstance(n_cores, bool) or not isinstance(n_cores, int) or n_cores < 1):
        raise DclustValueError(f"n_cores={n_cores!r} must be a positive integer (or None for this machine's).")
    n_cores = n_cores or os.cpu_count() or 1
    workers = max(1, n_cores // 4)
    while n_cores % workers:
        workers -= 1
    return workers, n_cores // workers


def connect(address=None, *, scheduler_file=None, security=None, timeout=10.0, quiet=False):
    """Connect dclust to a running Dask scheduler.

    Parameters
    ----------
    address : str, optional
        ``tcp://host:port`` or ``tls://host:port``. Defaults to ``DASK_SCHEDULER_ADDRESS``.
    scheduler_file : str, optional
        Path of the JSON file written by ``dask scheduler --scheduler-file``.
    security : distributed.Security, optional
        TLS configuration for ``tls://`` addresses.
    timeout : float, default=10
        Seconds to wait for the scheduler before giving up.
    quiet : bool, default=False
        Do not print the dashboard link.

    Returns
    -------
    client : distributed.Client
        Also made the client that every later dclust call uses.
    """
    global _connected
    from distributed import Client

    if address is None and scheduler_file is None:
        address = os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not address:
            raise DclustValueError(
                "connect() needs an address ('tcp://host:8786') or scheduler_file=...; "
                "neither was given and DASK_SCHEDULER_ADDRESS is not set."
            )
    if scheduler_file is not None and not os.path.exists(scheduler_file):
        raise ClusterConnectionError(
            f"Scheduler file {scheduler_file!r} does not exist. Start the scheduler with "
            f"`dask scheduler --scheduler-file {scheduler_file}` or pass its address."
        )
    given_timeout = timeout
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        timeout = -1.0
    if not timeout > 0 or timeout != timeout:
        raise DclustValueError(
            f"timeout={given_timeout!r} must be a positive number of seconds, for example timeout=10."
        )
    where = repr(address) if address is not None else f"scheduler file {scheduler_file!r}"
    try:
        client = Client(
            address,
            scheduler_file=scheduler_file,
            security=security,
            timeout=f"{timeout}s",
            set_as_default=True,
        )
    except (OSError, TimeoutError) as e:
        raise ClusterConnectionError(
            f"Cannot reach the Dask scheduler at {where} within {timeout:g} s ({e}). "
            "Check that `dask scheduler` is running there and that host and port are right."
        ) from None
    except ValueError as e:
        raise ClusterConnectionError(
            f"Cannot connect to the Dask scheduler at {where}: {e}. Pass an address such as "
            "'tcp://host:8786' or the scheduler file written by `dask scheduler --scheduler-file`."
        ) from None
    with _lock:
        _connected = client
    if not quiet:
        _say(f"connected to {client.scheduler.address}; dashboard: {client.dashboard_link}")
    return client


def _usable(client) -> bool:
    return client is not None and client.status in ("running", "connecting", "newly-created")


def get_client(*, quiet=False):
    """The ``distributed.Client`` dclust computes on (see the module docstring)."""
    global _embedded, _connected
    from distributed import Client, LocalCluster

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
        if os.environ.get("DASK_SCHEDULER_ADDRESS"):
            return connect(os.environ["DASK_SCHEDULER_ADDRESS"], quiet=quiet)
        if _embedded is not None and _usable(_embedded[1]):
            return _embedded[1]
        workers, threads = local_cluster_layout()
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = Client(cluster, set_as_default=True)
        _embedded = (cluster, client)
        # Close it before the interpreter tears down, so workers do not log lost heartbeats.
        atexit.register(shutdown)
        if not quiet:
            _say(
                f"started a local Dask cluster ({workers} worker(s) x {threads} thread(s)); "
                f"dashboard: {client.dashboard_link}"
            )
        return client


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
