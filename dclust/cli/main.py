"""``dclust``: the command-line entry point.

Each subcommand lives in its own module with a ``register(subparsers)`` function that
adds its parser and sets ``func`` to the function that runs it (taking the parsed
arguments, returning an exit code or ``None``). Error policy, in one place:

- mistakes the user can fix (every :class:`dclust.DclustError`, a missing file, a bad
  argument) print one line ``dclust: error: <message>`` and exit with status 2;
- Ctrl-C exits with status 130;
- anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .._version import __version__
from ..exceptions import ConvergenceWarning, DclustError, EmptyClusterWarning
from . import encode, fit, info, make_blobs, predict, score, select_k, sinkhorn_assign, stream
from ._common import CLIError

__all__ = ["main", "build_parser"]

_COMMANDS = (make_blobs, fit, predict, encode, sinkhorn_assign, stream, select_k, score, info)

_EPILOG = """\
examples:
  dclust make-blobs blobs.zarr --n-samples 1000000 --n-features 32 --centers 16
  dclust fit kmeans blobs.zarr -k 16 --model km.npz --labels labels.zarr
  dclust predict km.npz blobs.zarr --labels labels2.zarr
  dclust sinkhorn-assign logits.zarr --scores --labels pseudo-labels.zarr
  dclust select-k blobs.zarr --k 2:32 --seed 0
  dclust score blobs.zarr labels.zarr
  dclust info km.npz

Run `dclust COMMAND --help` for the options of each command. Without --scheduler (or
DASK_SCHEDULER_ADDRESS) dclust starts a local Dask cluster sized to this machine.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full ``dclust`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="dclust",
        description="Distributed clustering of chunked Zarr arrays on Dask.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for module in _COMMANDS:
        module.register(sub)
    return parser


def _user_message(exc: BaseException) -> str:
    msg = str(exc)
    plain_os_error = isinstance(exc, OSError) and not isinstance(exc, DclustError)
    if plain_os_error and exc.filename is not None and exc.strerror is not None:
        msg = f"{exc.strerror}: {exc.filename!r}"
    # One line whatever the exception held: scripts grep for it, terminals stay tidy.
    return " ".join(msg.split()) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    # dclust's own warnings are advice to the user, not to a developer: no source lines.
    stream = file or sys.stderr
    stream.write(f"dclust: warning: {message}\n")


def main(argv=None) -> int:
    """Run the ``dclust`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 2 for a usage or user error, 130 when interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        with warnings.catch_warnings():
            original = warnings.showwarning

            def show(message, category, *rest, **kw):
                if issubclass(category, (ConvergenceWarning, EmptyClusterWarning)):
                    return _show_warning(message, category, *rest, **kw)
                return original(message, category, *rest, **kw)

            warnings.showwarning = show
            status = args.func(args)
    except KeyboardInterrupt:
        print("\ndclust: interrupted", file=sys.stderr)
        return 130
    except (DclustError, CLIError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as e:
        print(f"dclust: error: {_user_message(e)}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
