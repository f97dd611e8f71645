"""``dclust sinkhorn-assign``: balanced (or relaxed, partial) assignment of a cost matrix."""

from __future__ import annotations

import argparse
import time

from ..params import COMMON
from ._common import (
    CLIError,
    add_cluster_options,
    add_output_options,
    check_output,
    cluster_weights,
    dask_client,
    fmt_shape,
    positive_rows,
    say,
    storage_options,
)

_DESCRIPTION = """\
Solve entropic optimal transport between the rows of an n x k cost (or score) matrix
stored in Zarr and its k columns, so that every column receives its share of the rows,
and write the hard label of every row (int32) to a Zarr array. Each Sinkhorn iteration
is one pass over the matrix; only the k column potentials come back to this machine.
Optionally write the soft assignments (n x k float32, rows sum to 1).

examples:
  dclust sinkhorn-assign logits.zarr --scores --reg 0.05 --labels pseudo.zarr
  dclust sinkhorn-assign costs.zarr --cluster-weights 0.5,0.3,0.2 --labels labels.zarr
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sinkhorn-assign",
        help="assign the rows of a cost or score matrix under cluster-size marginals",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("costs", metavar="COSTS", help="path or fsspec URL of a 2-D Zarr array (n, k)")
    p.add_argument("--labels", required=True, metavar="LABELS.zarr",
                   help="where to write the hard labels (int32; -1 for the virtual cluster)")
    p.add_argument("--soft", metavar="SOFT.zarr",
                   help="also write the soft assignments (n x k float32)")
    p.add_argument("--scores", action="store_true",
                   help="COSTS holds scores (higher is better, e.g. logits): cost = -score")
    p.add_argument("--cluster-weights", type=cluster_weights, default="uniform", metavar="W",
                   help="'uniform' or k comma-separated weights summing to 1 (default: uniform)")
    p.add_argument("--reg", type=float, default=0.05, metavar="EPS",
                   help="entropic regularisation, relative to the cost scale (default: 0.05)")
    p.add_argument("--no-normalize", action="store_true",
                   help="use the costs as given instead of dividing them by their spread")
    p.add_argument("--marginal", choices=("balanced", "relaxed", "partial"), default="balanced")
    p.add_argument("--reg-m", type=float, default=None, metavar="F",
                   help="KL strength on the sizes for --marginal relaxed (default: 1.0)")
    p.add_argument("--rho", type=float, default=None, metavar="F",
                   help="transported mass in (0, 1] for --marginal partial")
    p.add_argument("--max-iter", type=int, default=1000, metavar="N")
    p.add_argument("--tol", type=float, default=1e-6, metavar="F",
                   help="marginal error at which to stop (default: 1e-6)")
    p.add_argument("--chunk-size", type=positive_rows, metavar="ROWS", help="rows per task")
    for name in ("checkpoint", "resume", "device"):
        COMMON[name].add_to(p, False if name == "resume" else ("auto" if name == "device" else None))
    add_output_options(p)
    add_cluster_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    import dclust

    so = storage_options(args)
    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH, the checkpoint file of the solve to continue.")
    check_output(args.labels, overwrite=args.overwrite, storage_options=so, what="labels array")
    if args.soft:
        check_output(args.soft, overwrite=args.overwrite, storage_options=so, what="soft array")
    C = dclust.open_array(args.costs, storage_options=so, chunks=args.chunk_size or "auto")
    b = args.cluster_weights
    if not isinstance(b, str):
        b = np.asarray(b, dtype=np.float64)
    with dask_client(args):
        t0 = time.perf_counter()
        res = dclust.sinkhorn_assign(
            C, b=b, reg=args.reg, marginal=args.marginal, reg_m=args.reg_m, rho=args.rho,
            kind="score" if args.scores else "cost", normalize=not args.no_normalize,
            max_iter=args.max_iter, tol=args.tol, progress=not args.quiet, device=args.device,
            checkpoint=args.checkpoint, resume=args.resume, storage_options=so,
        )
        solve_seconds = time.perf_counter() - t0
        dclust.write_labels(res.labels, args.labels, storage_options=so, overwrite=args.overwrite)
        if args.soft:
            dclust.write_array(res.soft_assignments.astype(np.float32), args.soft,
                               storage_options=so, overwrite=args.overwrite)
        seconds = time.perf_counter() - t0
    say(
        f"sinkhorn k={C.shape[1]} on {fmt_shape(C.shape)}: {res.n_iter} iterations, "
        f"{'converged' if res.converged else 'NOT converged'}, marginal error "
        f"{res.marginal_error:.3g}, {solve_seconds:.2f} s solve, {seconds:.2f} s total\n"
        f"labels: {args.labels}" + (f"\nsoft: {args.soft}" if args.soft else "")
    )
    return 0
