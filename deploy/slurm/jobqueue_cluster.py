#!/usr/bin/env python
"""Fit k-means with dclust on a SLURM cluster, workers started by dask-jobqueue.

Run this on a login node (or inside a small allocation); it starts a Dask scheduler in
this process, submits worker jobs with ``sbatch``, fits, and cancels the jobs at the end::

    pip install dask-jobqueue            # next to dclust, in an environment every node sees
    python jobqueue_cluster.py /scratch/me/vectors.zarr -k 256 --model km.npz \\
        --jobs 8 --queue compute --account my-project

``--print-job-script`` prints the job script that would be submitted and exits; check it
before a first real run. The workers run ``python -m distributed.cli.dask_worker``
(what ``dask worker`` runs) inside each job.
"""

from __future__ import annotations

import argparse


def make_cluster(*, cores=16, memory="64GiB", processes=4, walltime="02:00:00", queue=None,
                 account=None, interface=None, local_directory="$TMPDIR", job_extra=(),
                 scheduler_options=None, python=None):
    """A ``dask_jobqueue.SLURMCluster`` for dclust (no job is submitted yet).

    Parameters
    ----------
    cores, memory : int, str
        Per job (one node or part of one): CPU cores and memory SLURM allocates.
    processes : int
        Dask worker processes per job; each gets ``cores // processes`` threads. A few
        processes per node keep each one's memory small; dclust's kernels release the GIL.
    walltime, queue, account : str
        ``#SBATCH -t``, ``-p``, ``-A``.
    interface : str, optional
        Network interface the workers listen on (``ib0`` for InfiniBand).
    local_directory : str
        Node-local scratch for spilled data.
    job_extra : sequence of str
        More ``#SBATCH`` directives, for example ``["--exclusive"]``.
    scheduler_options : dict, optional
        Passed to the scheduler (``{"dashboard_address": ":8787"}``).
    python : str, optional
        Interpreter on the compute nodes (default: this one).
    """
    from dask_jobqueue import SLURMCluster

    kwargs = {}
    if python is not None:
        kwargs["python"] = python
    return SLURMCluster(
        job_name="dclust-worker",
        cores=cores,
        memory=memory,
        processes=processes,
        walltime=walltime,
        queue=queue,
        account=account,
        interface=interface,
        local_directory=local_directory,
        job_extra_directives=list(job_extra),
        # Numba kernels are compiled once per node, not once per worker process.
        job_script_prologue=["export NUMBA_CACHE_DIR=${TMPDIR:-/tmp}/numba-cache"],
        scheduler_options=scheduler_options or {},
        **kwargs,
    )


def main(argv=None):
    p = argparse.ArgumentParser(description="dclust k-means on SLURM via dask-jobqueue")
    p.add_argument("input", help="Zarr array (path on a shared file system, or s3://...)")
    p.add_argument("-k", "--n-clusters", type=int, required=True)
    p.add_argument("--model", required=True, help="where to save the model (.npz)")
    p.add_argument("--labels", help="also write the labels to this Zarr array")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=4, help="worker jobs to submit (default: 4)")
    p.add_argument("--cores", type=int, default=16)
    p.add_argument("--memory", default="64GiB")
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--walltime", default="02:00:00")
    p.add_argument("--queue")
    p.add_argument("--account")
    p.add_argument("--interface")
    p.add_argument("--print-job-script", action="store_true",
                   help="print the job script and exit without submitting anything")
    args = p.parse_args(argv)

    cluster = make_cluster(cores=args.cores, memory=args.memory, processes=args.processes,
                           walltime=args.walltime, queue=args.queue, account=args.account,
                           interface=args.interface)
    try:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        import dclust

        cluster.scale(jobs=args.jobs)
        client = dclust.connect(cluster.scheduler_address)
        client.wait_for_workers(args.jobs * args.processes, timeout=3600)
        X = dclust.open_array(args.input)
        km = dclust.KMeans(args.n_clusters, random_state=args.seed).fit(X)
        km.save(args.model)
        if args.labels:
            dclust.write_labels(km.labels_, args.labels)
        print(f"inertia {km.inertia_:.6g} after {km.n_iter_} iterations; model: {args.model}")
        client.close()
        return 0
    finally:
        cluster.close()


if __name__ == "__main__":
    raise SystemExit(main())
