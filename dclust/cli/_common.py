"""Pieces every ``dclust`` command shares: options, the Dask client, output checks, formats."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

__all__ = [
    "CLIError",
    "add_cluster_options",
    "add_output_options",
    "storage_option",
    "storage_options",
    "dask_client",
    "check_output",
    "stored_bytes",
    "fmt_bytes",
    "fmt_shape",
    "say",
]


class CLIError(ValueError):
    """A command-line argument is wrong; reported as ``dclust: error: ...``, exit code 2."""


def say(msg: str = "", *, file=None) -> None:
    print(msg, file=file or sys.stdout, flush=True)


# ---- options -----------------------------------------------------------------------
def storage_option(text: str):
    """Parse one ``--storage-option key=value`` into ``(key, value)``.

    Values are read as JSON when they parse (``8``, ``0.5``, ``true``, ``null``,
    ``{"a": 1}``), as booleans for ``True``/``False``, and as strings otherwise, so
    ``anon=true`` and ``endpoint_url=http://127.0.0.1:5555`` both do what they say.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not of the form key=value (for example anon=true)"
        )
    if raw in ("True", "False"):
        return key, raw == "True"
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def storage_options(args) -> dict | None:
    """The ``--storage-option`` pairs as a dict (``None`` when there are none)."""
    pairs = getattr(args, "storage_option", None) or []
    return dict(pairs) or None


def add_cluster_options(parser, *, scheduler=True) -> None:
    """``--scheduler`` (unless ``scheduler=False``), ``--storage-option`` and ``--quiet``."""
    group = parser.add_argument_group("cluster and storage" if scheduler else "storage")
    if scheduler:
        group.add_argument(
            "--scheduler", metavar="ADDR",
            help="address of a running Dask scheduler (tcp://host:8786 or tls://host:8786). "
                 "Default: DASK_SCHEDULER_ADDRESS if set, else an embedded local cluster sized "
                 "to this machine.",
        )
    group.add_argument(
        "--storage-option", metavar="KEY=VALUE", action="append", type=storage_option, default=[],
        help="fsspec storage option for remote paths (s3://, gs://, ...), repeatable; values "
             "are parsed as JSON when possible, e.g. --storage-option anon=true",
    )
    if scheduler:
        group.add_argument("-q", "--quiet", action="store_true",
                           help="print only the final summary (no progress or cluster messages)")


def add_output_options(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that already exist (they are replaced atomically)")


# ---- runtime -----------------------------------------------------------------------
@contextlib.contextmanager
def dask_client(args):
    """Yield the client a command computes on; close it afterwards if the command made it.

    An existing client (a notebook's, a test session's) is used as is and left running.
    """
    from distributed import Client

    import dclust

    quiet = bool(getattr(args, "quiet", False))
    if getattr(args, "scheduler", None):
        client = dclust.connect(args.scheduler, quiet=quiet)
        try:
            yield client
        finally:
            client.close()
        return
    try:
        existing = Client.current(allow_global=True)
    except ValueError:
        existing = None
    client = dclust.get_client(quiet=quiet)
    try:
        yield client
    finally:
        if existing is None or client is not existing:
            # Closing the cluster we started here lets the process exit promptly.
            dclust.shutdown()


# ---- outputs -----------------------------------------------------------------------
def check_output(path, *, overwrite, storage_options=None, what="output"):
    """Fail before any work when ``path`` cannot be written.

    A fit can run for hours; finding out afterwards that its output exists or that its
    folder is missing would waste all of it.
    """
    from ..io.paths import exists, is_url, local_path

    if exists(path, storage_options) and not overwrite:
        raise CLIError(f"The {what} {str(path)!r} already exists; pass --overwrite to replace it.")
    if not is_url(path):
        parent = os.path.dirname(local_path(path))
        if not os.path.isdir(parent):
            raise CLIError(
                f"Cannot write the {what} {str(path)!r}: the folder {parent!r} does not exist."
            )


def stored_bytes(path, storage_options=None) -> int:
    """Bytes a file or folder takes in storage."""
    from ..io.paths import _fs, is_url, local_path

    if is_url(path):
        fs, root = _fs(path, storage_options)
        return int(fs.du(root, total=True))
    p = local_path(path)
    if os.path.isfile(p):
        return os.path.getsize(p)
    total = 0
    for folder, _, files in os.walk(p):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, f))
    return total


# ---- formats -----------------------------------------------------------------------
def fmt_bytes(n) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def fmt_shape(shape) -> str:
    return " x ".join(f"{int(s):,}" for s in shape)
