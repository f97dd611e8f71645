"""scikit-learn's estimator checks on dclust's estimators."""

from __future__ import annotations

import warnings

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import dclust

# Checks that cannot pass by design, with the reason.
EXPECTED_FAILED = {
    # The same expected failure as scikit-learn's own KMeans: the seeding draws from the
    # random stream per row, so repeating a row is not the same draw as doubling its weight.
    "check_sample_weight_equivalence_on_dense_data": (
        "sample_weight is not equivalent to removing/repeating samples (as sklearn.cluster.KMeans)."
    ),
}


def _estimators():
    return [
        dclust.KMeans(n_clusters=3, random_state=0, progress=False, max_iter=50),
        dclust.KMedoids(n_clusters=3, random_state=0, progress=False, max_iter=20),
        # Few iterations: each Sinkhorn iteration is a pass, and the checks fit ~100 times.
        dclust.BalancedKMeans(n_clusters=3, random_state=0, progress=False, max_iter=5,
                              sinkhorn_max_iter=10),
        dclust.BisectingKMeans(n_clusters=3, random_state=0, progress=False, max_iter=50),
    ]


@parametrize_with_checks(_estimators(), expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
