"""Paths and URLs: local paths, ``file://`` and any fsspec URL, and atomic replacement.

Every output dclust writes (labels, models, synthetic datasets) is written under a
temporary sibling name and moved into place only once it is complete, so a crash leaves
either the previous version or the complete new one under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid

__all__ = ["is_url", "local_path", "atomic_output", "exists", "make_store", "redact", "secret_values"]

# Storage-option keys and environment variables whose values are credentials.
_SECRET_WORDS = ("secret", "token", "password", "passwd", "credential", "key", "sas",
                 "signature", "auth")
_NOT_SECRET = ("anon", "use_ssl", "endpoint_url", "region_name", "default_block_size")
_MIN_SECRET_LEN = 4  # shorter values would blot out ordinary text


def _secret_key(name) -> bool:
    name = str(name).lower()
    return name not in _NOT_SECRET and any(w in name for w in _SECRET_WORDS)


def secret_values(storage_options=None, environ=None) -> set:
    """Credential strings that must not be shown: storage options and environment.

    Values of storage options (nested dicts included, such as ``client_kwargs``) whose
    key names a credential (``key``, ``secret``, ``token``, ``password``, ...), and of
    environment variables such as ``AWS_SECRET_ACCESS_KEY`` or ``AZURE_STORAGE_SAS_TOKEN``.
    """
    found = set()

    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif isinstance(v, str) and _secret_key(k) and len(v) >= _MIN_SECRET_LEN:
                found.add(v)

    if isinstance(storage_options, dict):
        walk(storage_options)
    env = os.environ if environ is None else environ
    for name, value in env.items():
        upper = name.upper()
        if (upper.startswith(("AWS_", "AZURE_", "GOOGLE_", "GCS_", "GCP_", "FSSPEC_"))
                and _secret_key(name) and "FILE" not in upper and len(value) >= _MIN_SECRET_LEN):
            found.add(value)
    return found


def redact(text, storage_options=None) -> str:
    """``text`` with every credential from ``storage_options`` or the environment masked.

    Error messages and logs pass through this before they are shown, so that a secret
    given as a storage option or in ``AWS_SECRET_ACCESS_KEY`` is never printed, even when
    a storage library repeats it in an error.
    """
    text = str(text)
    for secret in sorted(secret_values(storage_options), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def is_url(path) -> bool:
    """True for fsspec URLs other than ``file://`` (which is a local path)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def local_path(path) -> str:
    path = os.fspath(path)
    if path.startswith("file://"):
        path = path[len("file://") :]
    return os.path.abspath(os.path.expanduser(path))


def _fs(url, storage_options):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root


def exists(path, storage_options=None) -> bool:
    path = os.fspath(path)
    if is_url(path):
        fs, root = _fs(path, storage_options)
        return fs.exists(root)
    return os.path.exists(local_path(path))


def make_store(path, *, storage_options=None, read_only=True):
    """A zarr store for ``path``."""
    from zarr.storage import FsspecStore, LocalStore

    path = os.fspath(path)
    if is_url(path):
        return FsspecStore.from_url(path, storage_options=storage_options, read_only=read_only)
    return LocalStore(local_path(path), read_only=read_only)


def _sibling(path: str, tag: str) -> str:
    head, _, tail = path.rstrip("/").rpartition("/")
    name = f".{tail}.{tag}-{uuid.uuid4().hex[:8]}"
    return f"{head}/{name}" if head else name


@contextlib.contextmanager
def atomic_output(path, *, storage_options=None, overwrite=True):
    """Yield a temporary path to write to; move it to ``path`` when the block succeeds.

    On error the temporary output is removed and whatever was at ``path`` is untouched.
    """
    from ..exceptions import StorageError

    path = os.fspath(path)
    if is_url(path):
        fs, root = _fs(path, storage_options)
        if not overwrite and fs.exists(root):
            raise StorageError(f"{path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
        proto = path.split("://", 1)[0]
        tmp_root = _sibling(root, "tmp")
        try:
            yield f"{proto}://{tmp_root}"
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm(tmp_root, recursive=True)
            raise
        # The output was written through other filesystem instances (the workers', zarr's
        # async one): listings this one cached before (by the exists() checks) are stale.
        with contextlib.suppress(Exception):
            fs.invalidate_cache()
        # Object stores have no rename: the new version is complete before the old goes.
        old = None
        try:
            if fs.exists(root):
                old = _sibling(root, "old")
                _move_tree(fs, root, old)
            _move_tree(fs, tmp_root, root)
        except Exception as e:
            with contextlib.suppress(Exception):
                fs.invalidate_cache()
                if old is not None and not fs.exists(root):
                    _move_tree(fs, old, root)
            with contextlib.suppress(Exception):
                fs.rm(tmp_root, recursive=True)
            raise StorageError(
                f"Cannot move the new output into place at {path!r}: {redact(e, storage_options)}"
            ) from None
        if old is not None:
            with contextlib.suppress(Exception):
                fs.rm(old, recursive=True)
        return
    final = local_path(path)
    if not overwrite and os.path.lexists(final):
        raise StorageError(f"{path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    parent = os.path.dirname(final)
    if not os.path.isdir(parent):
        raise StorageError(
            f"Cannot write {path!r}: the folder {parent!r} does not exist. Create it first "
            "(os.makedirs(folder)) or choose a path in an existing folder."
        )
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    try:
        _move_into_place(tmp, final)
    except OSError as e:
        _remove(tmp)
        raise StorageError(f"Cannot move the new output into place at {path!r}: {e}") from e


def _move_tree(fs, src: str, dst: str) -> None:
    """Move the object ``src``, or every object under the prefix ``src``, to ``dst``.

    Object stores have no folders and no rename: this copies object by object, then
    deletes the originals. (``fs.mv(..., recursive=True)`` also tries to copy the
    folder's own name, which is not an object, and fails on S3.)
    """
    src = src.rstrip("/")
    dst = dst.rstrip("/")
    fs.invalidate_cache()
    files = [f for f in fs.find(src) if f == src or f.startswith(src + "/")]
    if not files:
        raise FileNotFoundError(f"nothing to move at {src!r}")
    fs.copy(files, [dst + f[len(src):] for f in files])
    fs.rm(files)
    with contextlib.suppress(Exception):
        fs.invalidate_cache()


def _move_into_place(tmp: str, final: str) -> None:
    """Rename ``tmp`` to ``final``, replacing whatever is there (file or folder)."""
    if not os.path.lexists(final) or (
        not os.path.isdir(tmp) and (os.path.islink(final) or not os.path.isdir(final))
    ):
        os.replace(tmp, final)  # one atomic rename, file over file
        return
    # A folder cannot be replaced in one rename (nor a file by a folder): move the old
    # one aside first; the window between the two renames is two metadata operations.
    old = _sibling(final, "old")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    _remove(old)


def _remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.exists(p):
        with contextlib.suppress(OSError):
            os.remove(p)
