"""Clustering metrics over dask, Zarr or NumPy inputs, in one or two passes each.

Scores against known classes (from the contingency table of the two labelings, found in
one pass whatever integers the labels are): :func:`adjusted_rand_score`,
:func:`normalized_mutual_info_score`, :func:`adjusted_mutual_info_score`,
:func:`homogeneity_completeness_v_measure`, :func:`contingency_matrix` and the
clustering :func:`accuracy` (best one-to-one matching).

Scores from the data alone: :func:`calinski_harabasz_score` (one pass),
:func:`davies_bouldin_score` (two), :func:`inertia` (one), :func:`silhouette_score`
(exact over all pairs, tiled across the workers, or on a uniform sample, two passes) and
:func:`simplified_silhouette_score` (distances to centres, one or two passes).

On data that fits in memory every score equals scikit-learn's up to float rounding
(scikit-learn has no inertia, accuracy or simplified silhouette function).
"""

from ._contingency import ContingencyTable, contingency_matrix, contingency_table
from ._internal import calinski_harabasz_score, davies_bouldin_score, inertia
from ._silhouette import silhouette_score, simplified_silhouette_score
from ._supervised import (
    accuracy,
    adjusted_mutual_info_score,
    adjusted_rand_score,
    homogeneity_completeness_v_measure,
    normalized_mutual_info_score,
)

__all__ = [
    "accuracy",
    "adjusted_mutual_info_score",
    "adjusted_rand_score",
    "calinski_harabasz_score",
    "contingency_matrix",
    "contingency_table",
    "ContingencyTable",
    "davies_bouldin_score",
    "homogeneity_completeness_v_measure",
    "inertia",
    "normalized_mutual_info_score",
    "silhouette_score",
    "simplified_silhouette_score",
]
