"""``dclust make-blobs``: write a synthetic Gaussian-blobs dataset to Zarr, in parallel."""

from __future__ import annotations

import argparse
import time

from ._common import (
    add_cluster_options,
    add_output_options,
    check_output,
    dask_client,
    fmt_bytes,
    fmt_shape,
    say,
    stored_bytes,
    storage_options,
)

_DESCRIPTION = """\
Generate isotropic Gaussian blobs and write them to a Zarr v3 array. Every row-chunk is
generated and written by its own task on the Dask cluster, so datasets far larger than
this machine's memory can be made. The same arguments (including --chunk-size) give
identical data; the true centres and the parameters are stored in the array's attributes
under "dclust".
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-blobs",
        help="write a synthetic Gaussian-blobs dataset to a Zarr array",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("output", metavar="OUT.zarr", help="path or fsspec URL of the array to create")
    p.add_argument("--n-samples", type=int, required=True, metavar="N", help="number of rows")
    p.add_argument("--n-features", type=int, required=True, metavar="D", help="number of columns")
    p.add_argument("--centers", type=int, required=True, metavar="K", help="number of blobs")
    p.add_argument("--chunk-size", type=int, metavar="ROWS",
                   help="rows per chunk (default: about 64 MiB of rows); also the Zarr chunk")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="element type (default: float32)")
    p.add_argument("--cluster-std", type=float, default=1.0, metavar="F",
                   help="standard deviation of every blob (default: 1.0)")
    add_output_options(p)
    add_cluster_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..datasets import make_blobs, make_blobs_array

    so = storage_options(args)
    check_output(args.output, overwrite=args.overwrite, storage_options=so, what="output array")
    # Build (and so validate) the lazy array before starting a cluster for it.
    X, _ = make_blobs_array(args.n_samples, args.n_features, args.centers,
                            chunk_size=args.chunk_size, cluster_std=args.cluster_std,
                            seed=args.seed, dtype=args.dtype)
    with dask_client(args):
        t0 = time.perf_counter()
        make_blobs(args.output, args.n_samples, args.n_features, args.centers,
                   chunk_size=args.chunk_size, cluster_std=args.cluster_std, seed=args.seed,
                   dtype=args.dtype, storage_options=so, overwrite=args.overwrite)
        seconds = time.perf_counter() - t0
    size = stored_bytes(args.output, so)
    say(
        f"wrote {args.output}: {fmt_shape(X.shape)} {X.dtype}, {args.centers} centers, chunks "
        f"{fmt_shape((X.chunks[0][0], X.shape[1]))} ({len(X.chunks[0])} chunks), "
        f"{fmt_bytes(size)} on disk ({fmt_bytes(X.nbytes)} raw), {seconds:.2f} s"
    )
    return 0
