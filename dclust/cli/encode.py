"""``dclust encode``: the codes of a Zarr array under a saved quantizer, written to Zarr."""

from __future__ import annotations

import argparse
import time

from ._common import (
    CLIError,
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
Encode every row of INPUT with a quantizer saved by `dclust fit pq` (or an IVFQuantizer
model) and write the codes (uint8 for up to 8 bits, else uint16; one column per
sub-quantizer) to a Zarr array chunked like INPUT's rows. With an IVF model, --lists
also writes each row's inverted list (int32). Each task encodes and writes its own
chunk; the arrays appear only once complete.

examples:
  dclust encode pq.npz X.zarr --codes codes.zarr
  dclust encode ivf.npz X.zarr --codes codes.zarr --lists lists.zarr
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode a Zarr array with a saved product quantizer",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_input_arguments(p, model_help="quantizer file written by `dclust fit pq`",
                              output_what="codes'")
    p.add_argument("--codes", required=True, metavar="CODES.zarr",
                   help="where to write the codes (a Zarr array of uint8 or uint16)")
    p.add_argument("--lists", metavar="LISTS.zarr",
                   help="IVF models: also write the inverted list of every row")
    add_output_options(p)
    add_cluster_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import dclust

    so = storage_options(args)
    est = dclust.load(args.model, storage_options=so)
    if not hasattr(est, "encode"):
        raise CLIError(f"{args.model!r} holds a {type(est).__name__} model, which has no codes; "
                       "`dclust encode` needs a model of `dclust fit pq` (ProductQuantizer) or an "
                       "IVFQuantizer.")
    if args.lists and not hasattr(est, "coarse_centers_"):
        raise CLIError(f"--lists needs an IVFQuantizer model; {args.model!r} holds a "
                       f"{type(est).__name__}, which has no inverted lists.")
    check_output(args.codes, overwrite=args.overwrite, storage_options=so, what="codes array")
    if args.lists:
        check_output(args.lists, overwrite=args.overwrite, storage_options=so, what="lists array")
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    with dask_client(args):
        t0 = time.perf_counter()
        est.encode(X, args.codes, storage_options=so, overwrite=args.overwrite)
        if args.lists:
            dclust.write_labels(est.predict(X), args.lists, storage_options=so,
                                overwrite=args.overwrite)
        seconds = time.perf_counter() - t0
    M = est.codebooks_.shape[0]
    say(f"{type(est).__name__} M={M}: encoded {fmt_shape(X.shape)} {X.dtype} -> {args.codes} "
        f"({len(X.chunks[0])} chunks), {seconds:.2f} s")
    return 0
