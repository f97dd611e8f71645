"""``dclust stream``: follow a growing Zarr array and update a model as rows land."""

from __future__ import annotations

import argparse

from ._common import say

_DESCRIPTION = """\
Follow a Zarr array that another process appends rows to (along its first axis) and
update a mini-batch model with every new row, once. The model file is saved after each
update with the rows consumed, so the same command started again continues where the
last one stopped.

examples:
  dclust stream events.zarr --model m.npz -k 16 --batch-size 1024 --poll 5
  dclust stream events.zarr --model m.npz --idle-timeout 60       # stop after 60 s idle
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stream", help="update a model from rows appended to a Zarr array",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="path of a 2-D Zarr array that grows")
    p.add_argument("--model", required=True, metavar="MODEL",
                   help="model file: continued when it exists, saved after every update")
    _add_model_options(p.add_argument_group("the model (used when MODEL does not exist yet)"))
    p.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                   help="seconds between looks at the array (default: 1)")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="stop after this long without new rows (default: follow forever)")
    p.add_argument("--max-rows", type=int, default=None, metavar="N",
                   help="stop once N rows of the array were used")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=run)


# MiniBatchKMeans's own declarations give these options their types, checks and help.
_MODEL_OPTIONS = ("n_clusters", "batch_size", "decay", "decay_unit", "init", "random_state")


def _add_model_options(group) -> None:
    import dataclasses

    from ..estimators.minibatch_kmeans import MiniBatchKMeans
    from ..params import declared

    defaults = MiniBatchKMeans().get_params()
    defaults["random_state"] = 0  # a stream's model is reproducible unless told otherwise
    params = declared(MiniBatchKMeans)
    for name in _MODEL_OPTIONS:
        # -k is required by `dclust fit`, not here: an existing MODEL knows its k.
        dataclasses.replace(params[name], required=False).add_to(group, defaults[name])


def run(args) -> int:
    from ..algorithms.stream import stream_fit
    from ..estimators.minibatch_kmeans import MiniBatchKMeans

    est = MiniBatchKMeans(**{name: getattr(args, name) for name in _MODEL_OPTIONS})
    est = stream_fit(est, args.input, poll=args.poll, checkpoint=args.model,
                     idle_timeout=args.idle_timeout, max_rows=args.max_rows)
    if not args.quiet:
        pos = int(getattr(est, "stream_position_", 0) or 0)
        say(f"{args.model}: {pos:,} rows used in {int(getattr(est, 'n_steps_', 0))} updates")
    return 0
