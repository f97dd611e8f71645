"""Writing cluster labels next to the data they label."""

from __future__ import annotations

from .zarr_io import write_array

__all__ = ["write_labels"]


def write_labels(labels, path, *, storage_options=None, overwrite=True):
    """Write labels (a dask or NumPy array) to a Zarr array at ``path``, atomically.

    The Zarr chunks follow the labels' (that is, ``X``'s) row chunks, and the array
    appears under ``path`` only once every chunk is written; a failure leaves whatever
    was there before.

    Parameters
    ----------
    labels : dask.array.Array or ndarray of shape (n_samples,)
    path : str or os.PathLike
        Local path or fsspec URL.
    storage_options : dict, optional
    overwrite : bool, default=True
        Replace an existing array at ``path``.
    """
    # NumPy labels are cut into row chunks by write_array (dclust.io.chunking's rule).
    return write_array(labels, path, storage_options=storage_options, overwrite=overwrite,
                       attributes={"dclust": {"kind": "labels"}}, fill_value=-1)
