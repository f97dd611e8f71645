"""``dclust fit ALGORITHM``: fit a model on a Zarr array, save it, optionally write labels.

Algorithms plug in as modules of this package named ``fit_<something>.py`` and are found
automatically, so adding one touches no other file. Such a module defines:

``NAME``
    The subcommand (``"kmeans"``, ``"kmedoids"``, ``"balanced-kmeans"``).
``HELP``
    One line for ``dclust fit --help``.
``DESCRIPTION`` (optional)
    A paragraph for ``dclust fit NAME --help``.
``estimator()``
    The estimator class. Its options are generated from the class's parameter
    declarations (``_params``: flag, type, choices, default and help), so the shell
    and Python cannot drift apart. The options every algorithm shares (``INPUT``,
    ``--model``, ``--labels``, ``--chunk-size``, ``--overwrite``, ``--scheduler``,
    ``--storage-option``, ``--quiet``) are added here, and so is the handling of
    ``--checkpoint`` / ``--resume`` and of a missing ``--seed``.
``GROUP``
    The title of its options' group in ``--help``.
``TYPES`` (optional)
    argparse types for parameters the shell spells differently (``--cluster-weights``).
``convert(kwargs)`` (optional)
    Adjusts the parsed values before the estimator is made.
``summary(estimator) -> list of str`` (optional)
    Extra ``"name value"`` fields for the summary line (``"inertia 1.23e+05"``).
``add_arguments(group)`` (optional)
    Adds options of the command's own that are not estimator parameters (extra
    outputs, ``--export-tree``) to its options' group.
``outputs(args) -> list of (path, what)`` (optional)
    The extra files it will write, checked with ``--model`` before the fit starts (a
    fit can run for hours; an output that cannot be written should fail first).
``after_fit(estimator, args) -> list of str`` (optional)
    Writes those outputs once the model is saved; returns lines for the summary
    (``"tree: tree.json"``).

See ``fit_kmeans.py`` for a complete example.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time

from ..params import add_arguments
from ._common import (
    CLIError,
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
        group = ap.add_argument_group(module.GROUP)
        add_arguments(group, module.estimator(), types=getattr(module, "TYPES", {}))
        if hasattr(module, "add_arguments"):
            module.add_arguments(group)
        out = ap.add_argument_group("input and outputs")
        out.add_argument("--model", required=True, metavar="MODEL",
                         help="where to save the fitted model (a .npz file; no pickle)")
        out.add_argument("--labels", metavar="LABELS.zarr",
                         help="also write the label of every row to this Zarr array (one more pass)")
        out.add_argument("--chunk-size", type=positive_rows, metavar="ROWS",
                         help="rows per task when reading INPUT (default: a multiple of the "
                              "stored chunk near 64 MiB)")
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
    for path, what in (module.outputs(args) if hasattr(module, "outputs") else ()):
        check_output(path, overwrite=args.overwrite, storage_options=so, what=what)
    estimator = build(module, args)
    X = dclust.open_array(args.input, storage_options=so, chunks=args.chunk_size or "auto")
    with dask_client(args):
        t0 = time.perf_counter()
        estimator.fit(X)
        fit_seconds = time.perf_counter() - t0
        estimator.save(args.model, storage_options=so)
        extra = module.after_fit(estimator, args) if hasattr(module, "after_fit") else []
        label_seconds = None
        if args.labels:
            t1 = time.perf_counter()
            dclust.write_labels(estimator.labels_, args.labels, storage_options=so,
                                overwrite=args.overwrite)
            label_seconds = time.perf_counter() - t1
    say(_summary(module, estimator, X, args, fit_seconds, label_seconds, extra))
    return 0


def build(module, args):
    """The unfitted estimator the options describe (a seed drawn when none is given)."""
    import numpy as np

    cls = module.estimator()
    so = storage_options(args)
    names = cls._get_param_names()
    overrides = {"progress": not args.quiet}
    if "storage_options" in names:
        overrides["storage_options"] = so
    checkpoint, resume = getattr(args, "checkpoint", None), getattr(args, "resume", False)
    if resume and not checkpoint:
        raise CLIError("--resume needs --checkpoint PATH, the checkpoint file of the fit to continue.")
    if checkpoint:
        from ..io.checkpoint import Checkpoint
        from ..io.paths import exists

        there = exists(checkpoint, so)
        if there and not resume and not args.overwrite:
            raise CLIError(
                f"The checkpoint {checkpoint!r} already exists; pass --resume to continue the "
                "fit it holds, or --overwrite to start afresh and replace it."
            )
        if there and resume and args.random_state is None:
            args.random_state = Checkpoint(checkpoint, cls.__name__, {}, {},
                                           storage_options=so).saved_seed()
    if "random_state" in names and args.random_state is None:
        # Drawn here rather than inside fit so that the model file records it and the
        # run can be repeated exactly (63 bits, as check_random_state draws).
        args.random_state = int(np.random.default_rng().integers(2**63 - 1))
    kw = {p.name: getattr(args, p.name) for p in cls._params
          if p.option() is not None and hasattr(args, p.name)}
    kw.update(overrides)
    if hasattr(module, "convert"):
        kw = module.convert(kw)
    return cls(**kw)


def _summary(module, est, X, args, fit_seconds, label_seconds, extra=()) -> str:
    n, d = X.shape
    k = getattr(est, "n_clusters", getattr(est, "n_components", None))
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
    lines.extend(extra)
    return "\n".join(lines)
