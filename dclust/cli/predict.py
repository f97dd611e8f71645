"""``dclust predict``: label a Zarr array with a saved model, writing the labels to Zarr."""

from __future__ import annotations

import argparse
import time

from ._common import (
    add_model_input_arguments,
    add_cluster_options,
    add_output_options,
    check_output,
    dask_client,
    fmt_shape,
    say,
    storage_options,
)

_DESCRIPTION = """\
Assign every row of INPUT to a cluster of a model saved by `dclust fit`, and write the
labels (int32, one per row) to a Zarr array. This is one pass over the data: each task
labels and writes its own chunk, and the labels array appears only once complete.

example:
  dclust predict km.npz more-data.zarr --labels more-labels.zarr
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="label a Zarr array with a saved model",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_input_arguments(p, model_help="model file written by `dclust fit`",
                              output_what="labels'")
    p.add_argument("--labels", required=True, metavar="LABELS.zarr",
                   help="where to write the labels (a Zarr array of int32)")
    add_output_options(p)
    add_cluster_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import dclust

    so = storage_options(args)
    check_output(args.labels, overwrite=args.overwrite, storage_options=so, what="labels array")
    est = dclust.load(args.model, storage_options=so)
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    labels = est.predict(X)  # lazy: computed chunk by chunk as it is written
    with dask_client(args):
        t0 = time.perf_counter()
        dclust.write_labels(labels, args.labels, storage_options=so, overwrite=args.overwrite)
        seconds = time.perf_counter() - t0
    k = getattr(est, "n_clusters", "?")
    say(
        f"{type(est).__name__} k={k}: labelled {fmt_shape(X.shape)} {X.dtype} "
        f"-> {args.labels} ({len(X.chunks[0])} chunks), {seconds:.2f} s"
    )
    return 0
