"""Synthetic datasets for tests: the generators of :mod:`dclust.datasets`.

They live outside :mod:`dclust.testing` because the library itself uses them (the
``dclust make-blobs`` command); this module keeps the names tests and users import.
"""

from ..datasets import make_blobs, make_blobs_array

__all__ = ["make_blobs_array", "make_blobs"]
