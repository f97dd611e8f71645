"""scikit-learn's estimator checks on dclust's estimators."""

from __future__ import annotations

import warnings

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import dclust

# Checks that cannot pass by design, with the reason.
EXPECTED_FAILED = {}


def _estimators():
    return [dclust.KMeans(n_clusters=3, random_state=0, progress=False, max_iter=50)]


@parametrize_with_checks(_estimators(), expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)
