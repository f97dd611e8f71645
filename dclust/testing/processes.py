"""A real ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, for tests.

Multi-node behaviour (network transfers, TLS, a worker killed mid-fit) cannot be
tested with an in-process cluster: this starts the same commands a user runs on their
machines, on the loopback interface with port 0, and tears them down afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

__all__ = ["ProcessCluster", "process_cluster"]


def _dask_command() -> list:
    # ``python -m distributed.cli.dask_...`` would bypass the entry points a user has;
    # ``dask`` next to this interpreter is what they run.
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "dask"]


@dataclass
class ProcessCluster:
    """Handles on a running loopback cluster (see :func:`process_cluster`)."""

    address: str
    scheduler_file: str
    scheduler: subprocess.Popen
    workers: list = field(default_factory=list)
    log_dir: str = ""
    tls: dict | None = None

    def security(self):
        """A ``distributed.Security`` for a client of this cluster (``None`` without TLS).

        It uses the cluster's own certificate, which is valid as a client certificate.
        """
        if self.tls is None:
            return None
        from distributed import Security

        return Security(tls_ca_file=self.tls["ca_file"], tls_client_cert=self.tls["cert"],
                        tls_client_key=self.tls["key"], require_encryption=True)

    def kill_scheduler(self, sig=signal.SIGKILL) -> int:
        """Kill the scheduler process (SIGKILL by default) and return its pid."""
        os.kill(self.scheduler.pid, sig)
        self.scheduler.wait(timeout=30)
        return self.scheduler.pid

    def worker_pids(self) -> list:
        return [p.pid for p in self.workers if p.poll() is None]

    def kill_worker(self, i: int = 0, sig=signal.SIGKILL) -> int:
        """Kill worker process ``i`` (SIGKILL by default) and return its pid."""
        p = self.workers[i]
        os.kill(p.pid, sig)
        p.wait(timeout=30)
        return p.pid

    def logs(self) -> str:
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            with open(os.path.join(self.log_dir, name), errors="replace") as f:
                out.append(f"---- {name}\n{f.read()[-4000:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Stop the workers, then the scheduler (SIGTERM; SIGKILL after a grace period).

        Workers go first: a worker whose scheduler is already gone spends its grace
        period trying to reconnect instead of exiting.
        """
        for group, grace in ((self.workers, 10.0), ([self.scheduler], 5.0)):
            for p in group:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + grace
            for p in group:
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def process_cluster(n_workers=3, *, nthreads=1, memory_limit="1GiB", directory=None,
                    scheduler_args=(), worker_args=(), env=None, timeout=60.0,
                    protocol="tcp", tls=None) -> ProcessCluster:
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Parameters
    ----------
    n_workers : int, default=3
    nthreads : int, default=1
        Threads per worker.
    memory_limit : str, default="1GiB"
        Each worker's memory limit (``--memory-limit``).
    directory : str, optional
        Where the scheduler file and logs go (a new temporary folder by default).
    scheduler_args, worker_args : sequence of str
        Extra command-line arguments (for example the ``--tls-*`` options).
    env : dict, optional
        Environment of the processes (default: this process's).
    timeout : float, default=60
        Seconds to wait for the scheduler file and for every worker to register.
    protocol : {"tcp", "tls"}
        ``"tls"`` is implied by ``tls``.
    tls : dict, optional
        ``{"ca_file": ..., "cert": ..., "key": ...}`` (PEM files; see
        ``deploy/tls/make_certs.py``): the scheduler and the workers listen on ``tls://``
        only, present this certificate, trust only this CA, and require encryption on
        every connection (``distributed.comm.require-encryption``), so a client without a
        certificate signed by the CA is refused.

    Returns
    -------
    ProcessCluster
        Call ``close()`` when done (or use it in ``try``/``finally``).
    """
    directory = directory or tempfile.mkdtemp(prefix="dclust-procs-")
    log_dir = os.path.join(directory, "logs")
    os.makedirs(log_dir, exist_ok=True)
    sched_file = os.path.join(directory, "scheduler.json")
    dask = _dask_command()
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if tls is not None:
        protocol = "tls"
        missing = [k for k in ("ca_file", "cert", "key") if not tls.get(k)]
        if missing:
            raise ValueError(f"tls={tls!r} lacks {missing}; give ca_file, cert and key.")
        tls_args = ["--tls-ca-file", tls["ca_file"], "--tls-cert", tls["cert"],
                    "--tls-key", tls["key"]]
        scheduler_args = [*tls_args, *scheduler_args]
        worker_args = [*tls_args, *worker_args]
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
    sched = subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--protocol", protocol,
         "--scheduler-file", sched_file, "--no-dashboard", *scheduler_args],
        stdout=open(os.path.join(log_dir, "scheduler.log"), "w"), stderr=subprocess.STDOUT,
        env=env,
    )
    cluster = ProcessCluster("", sched_file, sched, [], log_dir, tls=dict(tls) if tls else None)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if sched.poll() is not None:
                raise RuntimeError(f"dask scheduler exited ({sched.returncode}):\n{cluster.logs()}")
            if os.path.exists(sched_file):
                try:
                    with open(sched_file) as f:
                        cluster.address = json.load(f)["address"]
                    break
                except (ValueError, KeyError):
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"dask scheduler did not start:\n{cluster.logs()}")
            time.sleep(0.1)
        for i in range(n_workers):
            cluster.workers.append(subprocess.Popen(
                [*dask, "worker", cluster.address, "--host", "127.0.0.1",
                 "--nworkers", "1", "--nthreads", str(nthreads), "--memory-limit", str(memory_limit),
                 "--no-dashboard", "--name", f"w{i}", "--local-directory",
                 os.path.join(directory, f"w{i}"), *worker_args],
                stdout=open(os.path.join(log_dir, f"worker-{i}.log"), "w"),
                stderr=subprocess.STDOUT, env=env,
            ))
        _wait_for_workers(cluster, n_workers, deadline)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _wait_for_workers(cluster, n, deadline) -> None:
    # Counting "Registered to" lines keeps this free of a client (which TLS would need
    # certificates for).
    while True:
        dead = [i for i, p in enumerate(cluster.workers) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"dask worker(s) {dead} exited:\n{cluster.logs()}")
        registered = 0
        for i in range(len(cluster.workers)):
            with open(os.path.join(cluster.log_dir, f"worker-{i}.log"), errors="replace") as f:
                registered += "Registered to" in f.read()
        if registered >= n:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {registered} of {n} workers registered:\n{cluster.logs()}")
        time.sleep(0.2)
