"""``dclust fit ALGORITHM``: fit a model on a Zarr array, save it, optionally write labels.

Algorithms plug in as modules of this package named ``fit_<something>.py`` and are found
automatically, so adding one touches no other file. Such a module defines:

``NAME``
    The subcommand (``"kmeans"``, ``"kmedoids"``, ``"balanced-kmeans"``).
``HELP``
    One line for ``dclust fit --help``.
``DESCRIPTION`` (optional)
    A paragraph for ``dclust fit NAME --help``.
``add_arguments(parser)``
    Adds the algorithm's own options. The options every algorithm shares (``INPUT``,
    ``--model``, ``--labels``, ``--chunk-size``, ``--device``, ``--overwrite``,
    ``--scheduler``, ``--storage-option``, ``--quiet``) are added here; ``--device`` is
    passed to every estimator that has a ``device`` parameter.
``build(args) -> estimator``
    An unfitted dclust estimator; ``args.quiet`` says whether to show progress.
``summary(estimator) -> list of str`` (optional)
    Extra ``"name value"`` fields for the summary line (``"inertia 1.23e+05"``).

See ``fit_kmeans.py`` for a complete example.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time

from ._common import (
    add_cluster_options,
    add_output_options,
    check_output,
    dask_client,
    fmt_shape,
    positive_rows,
    say,
    storage_options,
)

__all__ = ["register", "algorithms"]

_PREFIX = "fit_"


def algorithms() -> list:
    """The ``fit_*`` modules of this package, in name order."""
    from . import __path__ as here

    found = []
    for info in sorted(pkgutil.iter_modules(here), key=lambda m: m.name):
        if info.name.startswith(_PREFIX):
            found.append(importlib.import_module(f"{__package__}.{info.name}"))
    return found


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="fit a clustering model on a Zarr array",
        description="Fit a clustering model on a Zarr array, save it to a model file and "
                    "optionally write the training labels to a Zarr array. Choose the "
                    "algorithm with a subcommand; `dclust fit ALGORITHM --help` lists its options.",
    )
    sub = p.add_subparsers(dest="algorithm", metavar="ALGORITHM", title="algorithms")
    sub.required = True
    for module in algorithms():
        ap = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        ap.add_argument("input", metavar="INPUT",
                        help="path or fsspec URL of a 2-D Zarr array (n_samples, n_features)")
        module.add_arguments(ap)
        out = ap.add_argument_group("input and outputs")
        out.add_argument("--model", required=True, metavar="MODEL",
                         help="where to save the fitted model (a .npz file; no pickle)")
        out.add_argument("--labels", metavar="LABELS.zarr",
                         help="also write the label of every row to this Zarr array (one more pass)")
        out.add_argument("--chunk-size", type=positive_rows, metavar="ROWS",
                         help="rows per task when reading INPUT (default: a multiple of the "
                              "stored chunk near 64 MiB)")
        out.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                         help="where the kernels run: cuda (the workers' GPUs, needs CuPy), cpu, "
                              "or auto (GPUs when every worker has one; default)")
        add_output_options(out)
        add_cluster_options(ap)
        ap.set_defaults(func=run, fit_module=module)


def run(args) -> int:
    import dclust

    module = args.fit_module
    so = storage_options(args)
    check_output(args.model, overwrite=args.overwrite, storage_options=so, what="model file")
    if args.labels:
        check_output(args.labels, overwrite=args.overwrite, storage_options=so, what="labels array")
    estimator = module.build(args)
    if "device" in estimator.get_params():
        estimator.set_params(device=args.device)
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    with dask_client(args):
        t0 = time.perf_counter()
        estimator.fit(X)
        fit_seconds = time.perf_counter() - t0
        estimator.save(args.model, storage_options=so)
        label_seconds = None
        if args.labels:
            t1 = time.perf_counter()
            dclust.write_labels(estimator.labels_, args.labels, storage_options=so,
                                overwrite=args.overwrite)
            label_seconds = time.perf_counter() - t1
    say(_summary(module, estimator, X, args, fit_seconds, label_seconds))
    return 0


def _summary(module, est, X, args, fit_seconds, label_seconds) -> str:
    n, d = X.shape
    k = getattr(est, "n_clusters", None)
    fields = [f"{type(est).__name__} k={k} on {fmt_shape((n, d))} {X.dtype}"]
    if hasattr(est, "n_iter_"):
        fields.append(f"{est.n_iter_} iterations")
    if hasattr(est, "converged_"):
        fields.append("converged" if est.converged_ else "NOT converged")
    if hasattr(module, "summary"):
        fields.extend(module.summary(est))
    if hasattr(est, "n_passes_"):
        fields.append(f"{est.n_passes_} passes")
    fields.append(f"{fit_seconds:.2f} s")
    lines = [", ".join(fields), f"model: {args.model}"]
    if args.labels:
        lines.append(f"labels: {args.labels} ({label_seconds:.2f} s)")
    return "\n".join(lines)
