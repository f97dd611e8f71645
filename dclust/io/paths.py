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

__all__ = ["is_url", "local_path", "atomic_output", "exists", "make_store"]


def is_url(path) -> bool:
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
    if is_url(path):
        fs, root = _fs(path, storage_options)
        return fs.exists(root)
    return os.path.exists(local_path(path))


def make_store(path, *, storage_options=None, read_only=True):
    """A zarr store for ``path``."""
    from zarr.storage import FsspecStore, LocalStore

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
        # Object stores have no rename: the new version is complete before the old goes.
        old = None
        if fs.exists(root):
            old = _sibling(root, "old")
            fs.mv(root, old, recursive=True)
        fs.mv(tmp_root, root, recursive=True)
        if old is not None:
            with contextlib.suppress(Exception):
                fs.rm(old, recursive=True)
        return
    final = local_path(path)
    if not overwrite and os.path.exists(final):
        raise StorageError(f"{path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    parent = os.path.dirname(final)
    if not os.path.isdir(parent):
        raise StorageError(f"Cannot write {path!r}: the folder {parent!r} does not exist.")
    tmp = _sibling(final, "tmp")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if os.path.isdir(final) and not os.path.islink(final):
        # A directory cannot be replaced in one rename: move the old one aside first;
        # the window between the two renames is two metadata operations long.
        old = _sibling(final, "old")
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            _remove(tmp)
            raise
        _remove(old)
    else:
        os.replace(tmp, final)


def _remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.exists(p):
        with contextlib.suppress(OSError):
            os.remove(p)
