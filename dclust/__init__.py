"""dclust: distributed clustering of chunked Zarr arrays on Dask.

Every algorithm is a short loop of passes over the data; a pass is one Dask graph of
per-chunk kernels and a tree reduction. See README.md for a tour.
"""

from ._version import __version__
from .estimators.base import load
from .estimators.kmeans import KMeans
from .exceptions import (
    ClusterConnectionError,
    ConvergenceWarning,
    DataError,
    DclustError,
    EmptyClusterWarning,
    ModelFormatError,
    NotFittedError,
    StorageError,
)
from .io.zarr_io import open_array, write_array
from .runtime.client import connect, get_client, shutdown

__all__ = [
    "__version__",
    "KMeans",
    "load",
    "open_array",
    "write_array",
    "write_labels",
    "connect",
    "get_client",
    "shutdown",
    "DclustError",
    "DataError",
    "StorageError",
    "ModelFormatError",
    "ClusterConnectionError",
    "NotFittedError",
    "ConvergenceWarning",
    "EmptyClusterWarning",
]


def write_labels(labels, path, *, storage_options=None, overwrite=True):
    """Write labels (a dask or NumPy array) to a Zarr array at ``path``, atomically.

    The Zarr chunks follow the labels' (that is, ``X``'s) row chunks; the array appears
    under ``path`` only once every chunk is written.
    """
    import dask.array as da
    import numpy as np

    if isinstance(labels, np.ndarray):
        labels = da.from_array(labels, chunks=(max(1, min(labels.shape[0], 1 << 22)),))
    return write_array(labels, path, storage_options=storage_options, overwrite=overwrite,
                       attributes={"dclust": {"kind": "labels"}}, fill_value=-1)
