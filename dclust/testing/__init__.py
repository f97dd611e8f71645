"""Public helpers for testing code that uses dclust.

- :func:`make_blobs_array` / :func:`make_blobs`: Gaussian blobs generated chunk by chunk
  on the Dask cluster (as a lazy array, or written to Zarr).
- :func:`assert_labels_equivalent`, :func:`best_permutation`, :func:`label_agreement`:
  compare clusterings up to a renaming of cluster ids.
- :func:`interrupt_after`: stop a fit at a chosen iteration (to test checkpoints).
"""

from .asserts import assert_labels_equivalent, best_permutation, label_agreement
from .datasets import make_blobs, make_blobs_array
from .interrupt import interrupt_after

__all__ = [
    "make_blobs_array",
    "make_blobs",
    "assert_labels_equivalent",
    "best_permutation",
    "label_agreement",
    "interrupt_after",
]
