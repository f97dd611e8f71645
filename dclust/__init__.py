"""dclust: distributed clustering of chunked Zarr arrays on Dask.

Every algorithm is a short loop of passes over the data; a pass is one Dask graph of
per-chunk kernels and a tree reduction. See README.md for a tour.

The estimators are imported on first use, so that worker processes, which only run
kernels, do not pay for importing scikit-learn.
"""

import importlib

from ._version import __version__
from .exceptions import (
    ClusterConnectionError,
    DataError,
    DclustError,
    EmptyClusterWarning,
    ModelFormatError,
    ProbeRecallWarning,
    StorageError,
)
from .runtime import install_policies as _install_policies

# Every process that runs a kernel imports this package first (a worker unpickling a
# kernel imports the kernel's module, hence ``dclust``), so the kernels' process-wide
# policies (BLAS thread limit, environment switches) are installed here, on workers as
# on the client, while the kernels themselves never import the runtime.
_install_policies()

_LAZY = {
    "KMeans": "dclust.estimators.kmeans",
    "BalancedKMeans": "dclust.estimators.balanced_kmeans",
    "sinkhorn_assign": "dclust.algorithms.sinkhorn_assign",
    "MiniBatchKMeans": "dclust.estimators.minibatch_kmeans",
    "stream_fit": "dclust.algorithms.stream",
    "append_rows": "dclust.algorithms.stream",
    "SinkhornQueue": "dclust.algorithms.online_balanced",
    "KMedoids": "dclust.estimators.kmedoids",
    "BisectingKMeans": "dclust.estimators.bisecting_kmeans",
    "GaussianMixture": "dclust.estimators.gmm",
    "ProductQuantizer": "dclust.estimators.quantizers",
    "IVFQuantizer": "dclust.estimators.quantizers",
    "add_to_faiss": "dclust.estimators.quantizers",
    "select_k": "dclust.model_selection",
    "estimate_n_clusters": "dclust.model_selection",
    "load": "dclust.estimators.base",
    "open_array": "dclust.io.zarr_io",
    "write_array": "dclust.io.zarr_io",
    "write_labels": "dclust.io.labels",
    "connect": "dclust.runtime.client",
    "get_client": "dclust.runtime.client",
    "shutdown": "dclust.runtime.client",
    "NotFittedError": "dclust.exceptions",
    "ConvergenceWarning": "dclust.exceptions",
}

__all__ = [
    "__version__",
    "metrics",
    "KMeans",
    "KMedoids",
    "BalancedKMeans",
    "BisectingKMeans",
    "GaussianMixture",
    "ProductQuantizer",
    "IVFQuantizer",
    "add_to_faiss",
    "sinkhorn_assign",
    "MiniBatchKMeans",
    "stream_fit",
    "append_rows",
    "SinkhornQueue",
    "select_k",
    "estimate_n_clusters",
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
    "ProbeRecallWarning",
]


_SUBMODULES = ("metrics",)


def __getattr__(name):
    if name in _SUBMODULES:  # dclust.metrics after a plain `import dclust`
        value = importlib.import_module(f"dclust.{name}")
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dclust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
