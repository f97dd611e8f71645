"""Pieces every ``dclust`` command shares: options, the Dask client, output checks, formats."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from .._format import fmt_bytes, fmt_shape

__all__ = [
    "CLIError",
    "add_model_input_arguments",
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


def positive_rows(text: str) -> int:
    """argparse type of ``--chunk-size``: a positive whole number of rows."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of rows (50000)")
    return value


def add_model_input_arguments(parser, *, model_help, output_what) -> None:
    """MODEL, INPUT and ``--chunk-size``: the arguments of a command that applies a saved
    model to a Zarr array (``predict``, ``encode``)."""
    parser.add_argument("model", metavar="MODEL", help=model_help)
    parser.add_argument("input", metavar="INPUT", help="path or fsspec URL of a 2-D Zarr array")
    parser.add_argument("--chunk-size", type=positive_rows, metavar="ROWS",
                        help=f"rows per task, also the {output_what} Zarr chunk (default: a "
                             "multiple of the stored chunk near 64 MiB)")


def cluster_weights(text: str):
    """argparse type of ``--cluster-weights``: ``uniform`` or comma-separated numbers."""
    if text == "uniform":
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'uniform' or a comma-separated list of numbers (0.5,0.3,0.2)"
        ) from None


def storage_options(args) -> dict | None:
    """The ``--storage-option`` pairs as a dict (``None`` when there are none)."""
    pairs = getattr(args, "storage_option", None) or []
    return dict(pairs) or None


def add_cluster_options(parser, *, scheduler=True) -> None:
    """Cluster options (unless ``scheduler=False``), ``--storage-option`` and ``--quiet``.

    The cluster options are ``--scheduler`` or ``--scheduler-file`` and the TLS files
    ``--tls-ca-file``, ``--tls-cert``, ``--tls-key``.
    """
    group = parser.add_argument_group("cluster and storage" if scheduler else "storage")
    if scheduler:
        where = group.add_mutually_exclusive_group()
        where.add_argument(
            "--scheduler", metavar="ADDR",
            help="address of a running Dask scheduler (tcp://host:8786 or tls://host:8786). "
                 "Default: DASK_SCHEDULER_ADDRESS if set, else an embedded local cluster sized "
                 "to this machine.",
        )
        where.add_argument(
            "--scheduler-file", metavar="FILE",
            help="the JSON file written by `dask scheduler --scheduler-file FILE` (instead of "
                 "--scheduler)",
        )
        group.add_argument(
            "--tls-ca-file", metavar="PEM",
            help="CA certificate for a tls:// scheduler (with --tls-cert and --tls-key). "
                 "Default: the Dask configuration's distributed.comm.tls settings",
        )
        group.add_argument("--tls-cert", metavar="PEM",
                           help="this client's TLS certificate, signed by the cluster's CA")
        group.add_argument("--tls-key", metavar="PEM",
                           help="the private key of --tls-cert (unless it is in that file)")
    group.add_argument(
        "--storage-option", metavar="KEY=VALUE", action="append", type=storage_option, default=[],
        help="fsspec storage option for remote paths (s3://, gs://, ...), repeatable; values "
             "are parsed as JSON when possible, e.g. --storage-option anon=true. Credentials "
             "can also come from the environment (AWS_ACCESS_KEY_ID, ...); they are never "
             "saved in outputs or printed",
    )
    if scheduler:
        group.add_argument("-q", "--quiet", action="store_true",
                           help="print only the final summary (no progress or cluster messages)")


def add_output_options(parser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace outputs that already exist (they are replaced atomically)")


# ---- runtime -----------------------------------------------------------------------
def _connect_args(args):
    """``(address, scheduler_file, tls)`` from the command line; ``None`` address and file
    mean the embedded cluster (or the configured address)."""
    from ..runtime.client import configured_address

    address = getattr(args, "scheduler", None)
    scheduler_file = getattr(args, "scheduler_file", None)
    tls = {name: getattr(args, attr, None) for name, attr in
           (("tls_ca_file", "tls_ca_file"), ("tls_cert", "tls_cert"), ("tls_key", "tls_key"))}
    tls = {k: v for k, v in tls.items() if v is not None}
    if tls and not (address or scheduler_file or configured_address()):
        raise CLIError(
            f"{', '.join('--' + k.replace('_', '-') for k in tls)} given without a scheduler: "
            "TLS applies to a tls:// scheduler named by --scheduler, --scheduler-file or "
            "DASK_SCHEDULER_ADDRESS (the embedded local cluster needs none)."
        )
    return address, scheduler_file, tls


@contextlib.contextmanager
def dask_client(args):
    """Yield the client a command computes on; close it afterwards if the command made it.

    An existing client (a notebook's, a test session's) is used as is and left running.
    ``--scheduler``, ``--scheduler-file`` or TLS files connect to that scheduler instead.
    Any error raised inside is shown with the credentials of ``--storage-option`` and
    the environment masked.
    """
    from distributed import Client

    import dclust

    from ..io.paths import redact

    quiet = bool(getattr(args, "quiet", False))
    so = storage_options(args)
    address, scheduler_file, tls = _connect_args(args)
    try:
        if address or scheduler_file or tls:
            client = dclust.connect(address, scheduler_file=scheduler_file, quiet=quiet, **tls)
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
    except Exception as e:
        shown = redact(e, so)
        if shown == str(e):
            raise
        # The message held a credential: the same kind of error, with it masked, and
        # without the original (which a traceback would print) chained to it.
        from ..exceptions import DclustError, StorageError

        cls = type(e) if isinstance(e, DclustError) else StorageError
        try:
            masked = cls(shown)
        except Exception:  # pragma: no cover - an exception class with another signature
            masked = StorageError(shown)
        raise masked from None


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
