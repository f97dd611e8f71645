"""``dclust fit gmm``: Gaussian mixture by distributed EM (found by :mod:`dclust.cli.fit`).

Its options are generated from :class:`dclust.GaussianMixture`'s parameter declarations.
"""

from __future__ import annotations

NAME = "gmm"
HELP = "Gaussian mixture (EM, one pass per iteration)"
GROUP = "Gaussian mixture"
DESCRIPTION = """\
Fit a Gaussian mixture to a Zarr array by EM, scikit-learn's GaussianMixture. Each EM
iteration is one pass over the data on the Dask cluster; only the mixture's sufficient
statistics (k x d sums and k x d x d moments for full covariances) come back to this
machine, where the M-step runs. --labels writes the most probable component of every
row (one more pass).

With --checkpoint the state is saved after every iteration; the same command with
--resume continues an interrupted fit and ends with the same model.

examples:
  dclust fit gmm X.zarr -k 8 --covariance-type diag --model gmm.npz
  dclust fit gmm X.zarr -k 16 --model gmm.npz --labels labels.zarr --seed 0
  dclust fit gmm X.zarr -k 8 --model gmm.npz --checkpoint gmm.ckpt.npz --resume
"""


def estimator():
    from ..estimators.gmm import GaussianMixture

    return GaussianMixture


def summary(est) -> list:
    return [est.covariance_type, f"lower bound {est.lower_bound_:.6g}", f"seed {est.random_state}"]
