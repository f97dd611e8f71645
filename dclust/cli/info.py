"""``dclust info``: describe a dclust model file or a Zarr array."""

from __future__ import annotations

import argparse
import json
import math
import os

from ..exceptions import StorageError
from ._common import add_cluster_options, fmt_bytes, fmt_shape, say, storage_options

__all__ = ["register", "describe"]

_DESCRIPTION = """\
Describe PATH: for a model file written by `dclust fit`, its estimator, parameters,
fitted attributes and arrays; for a Zarr array, its shape, dtype, chunks, shards, codecs,
number of chunks, bytes stored against bytes uncompressed, and attributes. Nothing is
computed on the cluster.

examples:
  dclust info km.npz
  dclust info blobs.zarr --json
"""

# Zip archives (and so NPZ model files) start with one of these.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# Attribute values longer than this are cut in the text view (the JSON view is complete).
_TEXT_WIDTH = 160


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe a model file or a Zarr array",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="PATH", help="model file or Zarr array (path or fsspec URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_cluster_options(p, scheduler=False)
    p.set_defaults(func=run)


def run(args) -> int:
    so = storage_options(args)
    info = describe(args.path, storage_options=so)
    if args.json:
        say(json.dumps(info, indent=2, default=_json_default))
    else:
        say(_text(info))
    return 0


# ---- inspection ----------------------------------------------------------------------
def _neither(path):
    return StorageError(
        f"{str(path)!r} is neither a dclust model file nor a Zarr array; `dclust info` "
        "describes model files written by `dclust fit` and Zarr arrays."
    )


def _kind_of(path, so):
    """``"file"`` or ``"folder"``; raises ``StorageError`` when nothing is there."""
    from ..io.paths import _fs, is_url, local_path

    if is_url(path):
        fs, root = _fs(path, so)
        if not fs.exists(root):
            raise StorageError(f"Nothing at {str(path)!r}: no such file or folder.")
        return "folder" if fs.isdir(root) else "file"
    p = local_path(path)
    if not os.path.exists(p):
        raise StorageError(f"Nothing at {str(path)!r}: no such file or folder.")
    return "folder" if os.path.isdir(p) else "file"


def _head(path, so, n=4) -> bytes:
    from ..io.paths import is_url, local_path

    if is_url(path):
        import fsspec

        with fsspec.open(path, "rb", **(so or {})) as f:
            return f.read(n)
    with open(local_path(path), "rb") as f:
        return f.read(n)


def describe(path, *, storage_options=None) -> dict:
    """A JSON-ready description of the model file or Zarr array at ``path``.

    Raises
    ------
    StorageError
        Nothing is at ``path``, or it is neither a model file nor a Zarr array.
    ModelFormatError
        A zip archive that is not a (readable) dclust model.
    """
    path = os.fspath(path)
    if _kind_of(path, storage_options) == "file":
        if _head(path, storage_options) not in _ZIP_MAGIC:
            raise _neither(path)
        return _describe_model(path, storage_options)
    return _describe_zarr(path, storage_options)


def _describe_model(path, so) -> dict:
    from ..io.model import read_model
    from ._common import stored_bytes

    meta, arrays = read_model(path, storage_options=so)
    info = {
        "path": path,
        "kind": "checkpoint" if meta.get("kind") == "checkpoint" else "model",
        "estimator": meta.get("estimator"),
        "format": meta.get("format"),
        "format_version": meta.get("format_version"),
        "dclust_version": meta.get("dclust_version"),
        "params": meta.get("params", {}),
        "attributes": meta.get("attributes", {}),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
        "bytes_stored": stored_bytes(path, so),
    }
    centers = arrays.get("cluster_centers_")
    if centers is not None and centers.ndim == 2:
        info["n_clusters"], info["n_features"] = (int(s) for s in centers.shape)
    return info


def _open_zarr(path, so):
    import zarr

    from ..io.paths import make_store

    store = make_store(path, storage_options=so, read_only=True)
    try:
        return zarr.open_array(store=store, mode="r")
    except zarr.errors.NodeTypeValidationError:
        try:
            names = sorted(zarr.open_group(store=store, mode="r").array_keys())
        except Exception:  # the listing is only a hint
            names = []
        inside = f" Arrays in it: {', '.join(names)}." if names else ""
        raise StorageError(
            f"{str(path)!r} is a Zarr group, not an array; pass the path of an array inside it."
            f"{inside}"
        ) from None
    except (zarr.errors.ArrayNotFoundError, zarr.errors.NodeNotFoundError, FileNotFoundError,
            NotADirectoryError):
        raise _neither(path) from None
    except Exception as e:
        raise StorageError(
            f"Cannot open {str(path)!r} as a Zarr array: {type(e).__name__}: {e}"
        ) from None


def _describe_zarr(path, so) -> dict:
    z = _open_zarr(path, so)
    meta = z.metadata.to_dict()
    fmt = int(meta.get("zarr_format", 3))
    if fmt == 3:
        codecs = meta.get("codecs", [])
    else:
        codecs = [c for c in (meta.get("filters") or []) + [meta.get("compressor")] if c]
    grid = [math.ceil(s / c) if c else 0 for s, c in zip(z.shape, z.chunks)]
    n_chunks = int(math.prod(grid)) if grid else 1
    stored = int(z.nbytes_stored())
    info = {
        "path": path,
        "kind": "zarr-array",
        "zarr_format": fmt,
        "shape": list(z.shape),
        "dtype": str(z.dtype),
        "chunks": list(z.chunks),
        "shards": list(z.shards) if getattr(z, "shards", None) else None,
        "codecs": codecs,
        "fill_value": meta.get("fill_value"),
        "n_chunks": n_chunks,
        "n_chunks_stored": int(z.nchunks_initialized),
        "bytes_uncompressed": int(z.nbytes),
        "bytes_stored": stored,
        "attributes": dict(z.attrs),
    }
    return info


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


# ---- text view -----------------------------------------------------------------------
def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=_json_default)
    if len(text) > _TEXT_WIDTH:
        text = f"{text[:_TEXT_WIDTH - 20]}... ({len(text):,} characters)"
    return text


def _flatten(mapping, prefix=""):
    # Nested attributes ({"dclust": {"generator": {...}}}) read better as dotted keys.
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _rows(title, mapping, indent="  "):
    mapping = _flatten(mapping)
    lines = [f"{title}:"]
    if not mapping:
        lines.append(f"{indent}(none)")
    width = max((len(k) for k in mapping), default=0)
    for key, value in mapping.items():
        lines.append(f"{indent}{key:<{width}}  {_short(value)}")
    return lines


def _codec_name(c) -> str:
    if isinstance(c, dict):
        conf = c.get("configuration") or {k: v for k, v in c.items() if k not in ("name", "id")}
        name = c.get("name") or c.get("id") or "?"
        if conf:
            return f"{name}({', '.join(f'{k}={v}' for k, v in conf.items())})"
        return str(name)
    return str(c)


def _text(info) -> str:
    if info["kind"] in ("model", "checkpoint"):
        what = "dclust model" if info["kind"] == "model" else \
            "dclust fit checkpoint (load it with --checkpoint PATH --resume)"
        head = [
            f"{info['path']}: {what} ({info['format']} v{info['format_version']}, "
            f"written by dclust {info['dclust_version']}, {fmt_bytes(info['bytes_stored'])})",
            f"estimator: {info['estimator']}",
        ]
        if "n_clusters" in info:
            head.append(f"centres: {info['n_clusters']} x {info['n_features']} "
                        f"(n_clusters={info['n_clusters']}, n_features={info['n_features']})")
        arrays = {k: f"{fmt_shape(v['shape'])} {v['dtype']}" for k, v in info["arrays"].items()}
        body = (_rows("params", info["params"]) + _rows("attributes", info["attributes"])
                + _rows("arrays", arrays))
        return "\n".join(head + body)
    stored, raw = info["bytes_stored"], info["bytes_uncompressed"]
    ratio = f", ratio {raw / stored:.2f}" if stored else ""
    fields = {
        "shape": fmt_shape(info["shape"]),
        "dtype": info["dtype"],
        "chunks": fmt_shape(info["chunks"]),
        "shards": fmt_shape(info["shards"]) if info["shards"] else "none",
        "codecs": " -> ".join(_codec_name(c) for c in info["codecs"]) or "none",
        "fill_value": info["fill_value"],
        "n_chunks": f"{info['n_chunks']:,} ({info['n_chunks_stored']:,} stored)",
        "bytes": f"{fmt_bytes(stored)} stored, {fmt_bytes(raw)} uncompressed{ratio}",
    }
    return "\n".join([f"{info['path']}: Zarr v{info['zarr_format']} array"]
                     + _rows("array", fields)[1:] + _rows("attributes", info["attributes"]))
