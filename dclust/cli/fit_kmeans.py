"""``dclust fit kmeans``: distributed k-means (found by :mod:`dclust.cli.fit` by its name)."""

from __future__ import annotations

NAME = "kmeans"
HELP = "k-means (Lloyd iterations, k-means|| initialisation)"
DESCRIPTION = """\
Fit k-means to a Zarr array. Each Lloyd iteration is one pass over the data on the Dask
cluster; only the k x d centre sums come back to this machine. The data is kept in the
workers' memory when it fits (--cache auto) and streamed from storage otherwise.

With --checkpoint the state is saved after every iteration; if the fit is interrupted
(the machine goes away, the job is killed), the same command with --resume continues it
and ends with the same model as an uninterrupted fit.

examples:
  dclust fit kmeans blobs.zarr -k 16 --model km.npz --labels labels.zarr --seed 0
  dclust fit kmeans blobs.zarr -k 16 --model km.npz --checkpoint km.ckpt.npz --resume
"""

_INITS = ("k-means||", "k-means++", "random")


def add_arguments(parser) -> None:
    g = parser.add_argument_group("k-means")
    g.add_argument("-k", "--n-clusters", dest="n_clusters", type=int, required=True, metavar="K",
                   help="number of clusters")
    g.add_argument("--init", choices=_INITS, default="k-means||",
                   help="initialisation (default: k-means||)")
    g.add_argument("--max-iter", type=int, default=300, metavar="N",
                   help="maximum Lloyd iterations per run (default: 300)")
    g.add_argument("--tol", type=float, default=1e-4, metavar="F",
                   help="stop when the centres move less than F times the mean feature variance "
                        "(default: 1e-4)")
    g.add_argument("--n-init", type=int, default=1, metavar="N",
                   help="runs with different seeds; the lowest inertia wins (default: 1)")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="random seed; the same seed and chunking give the same model "
                        "(default: a fresh seed, printed in the summary and kept in the model)")
    g.add_argument("--cache", choices=("auto", "memory", "none"), default="auto",
                   help="keep the data in the workers' memory during the fit: auto (when it "
                        "takes at most half of it), memory, or none (stream it every pass); "
                        "default: auto")
    r = parser.add_argument_group("checkpoints")
    r.add_argument("--checkpoint", metavar="CKPT.npz",
                   help="save the state of the fit to this file after every iteration "
                        "(atomically), so that an interrupted fit can be resumed")
    r.add_argument("--resume", action="store_true",
                   help="continue the interrupted fit saved in --checkpoint (a missing file "
                        "starts a new fit); the result is the same as without the interruption. "
                        "Without --seed, the checkpoint's seed is used")


def build(args):
    import numpy as np

    from ..estimators.kmeans import KMeans
    from ._common import CLIError, storage_options

    so = storage_options(args)
    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH, the checkpoint file of the fit to continue.")
    if args.checkpoint:
        from ..algorithms.checkpoint import Checkpoint
        from ..io.paths import exists

        there = exists(args.checkpoint, so)
        if there and not args.resume and not args.overwrite:
            raise CLIError(
                f"The checkpoint {args.checkpoint!r} already exists; pass --resume to continue the "
                "fit it holds, or --overwrite to start afresh and replace it."
            )
        if there and args.resume and args.seed is None:
            args.seed = Checkpoint(args.checkpoint, "KMeans", {}, {}, storage_options=so).saved_seed()
    if args.seed is None:
        # Drawn here rather than inside fit so that the model file records it and the
        # run can be repeated exactly.
        args.seed = int(np.random.default_rng().integers(2**31 - 1))
    return KMeans(
        n_clusters=args.n_clusters, init=args.init, n_init=args.n_init, max_iter=args.max_iter,
        tol=args.tol, random_state=args.seed, cache=args.cache, progress=not args.quiet,
        checkpoint=args.checkpoint, resume=args.resume, storage_options=so,
    )


def summary(est) -> list:
    return [f"inertia {est.inertia_:.6g}", f"seed {est.random_state}"]
