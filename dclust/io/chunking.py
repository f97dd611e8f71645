"""How many rows go in one chunk: the one rule for every row-chunked array dclust makes.

A chunk holds whole rows. Its size aims at :data:`DEFAULT_CHUNK_BYTES`: big enough that
per-task overhead vanishes, small enough that a few per worker thread fit in memory with
their temporaries.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHUNK_BYTES", "row_chunk"]

DEFAULT_CHUNK_BYTES = 64 * 2**20


def row_chunk(n_features: int, itemsize: int, target_bytes: int | None = None, *,
              n_rows: int | None = None, multiple_of: int = 1) -> int:
    """Rows per chunk for a target chunk size in bytes.

    Parameters
    ----------
    n_features : int
        Items per row (1 for a vector such as labels).
    itemsize : int
        Bytes per item.
    target_bytes : int, optional
        Aimed-at bytes per chunk; :data:`DEFAULT_CHUNK_BYTES` (read at call time) if not
        given.
    n_rows : int, optional
        Rows there are: the result is never more (but at least 1).
    multiple_of : int, default=1
        Round down to a multiple of this many rows (a Zarr array's stored chunk or shard
        rows, so that no stored chunk is read by two tasks), but never below one multiple.

    Returns
    -------
    int
        At least 1; one row even when a single row is larger than the target.

    Examples
    --------
    >>> row_chunk(16, 4, 64 * 2**20)
    1048576
    >>> row_chunk(128, 4, 2**20, multiple_of=1000)
    2000
    >>> row_chunk(128, 4, n_rows=500, multiple_of=1000)
    500
    """
    target = DEFAULT_CHUNK_BYTES if target_bytes is None else target_bytes
    rows = max(1, int(target // max(1, n_features * itemsize)))
    step = max(1, int(multiple_of or 1))
    rows = max(step, (rows // step) * step)
    if n_rows is not None:
        rows = min(rows, max(int(n_rows), 1))
    return int(rows)
