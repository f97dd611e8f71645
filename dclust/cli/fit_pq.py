"""``dclust fit pq``: a product quantizer (optionally OPQ) trained on a Zarr array.

Its options are generated from :class:`dclust.ProductQuantizer`'s parameter declarations.
"""

from __future__ import annotations

NAME = "pq"
HELP = "product quantizer (M k-means codebooks in the same passes; --opq for a rotation)"
GROUP = "product quantization"
DESCRIPTION = """\
Train a product quantizer on a Zarr array: the features are split into M sub-spaces,
each quantized by k-means with 2**BITS centres, all trained in the same passes (one read
of the data per iteration). --opq first learns an orthogonal rotation (optimized PQ).
Encode data with the saved model with `dclust encode`.

examples:
  dclust fit pq X.zarr -m 16 --bits 8 --model pq.npz --seed 0
  dclust fit pq X.zarr -m 16 --bits 8 --opq --model opq.npz
  dclust encode pq.npz X.zarr --codes codes.zarr
"""


def estimator():
    from ..estimators.quantizers import ProductQuantizer

    return ProductQuantizer


def summary(est) -> list:
    M, K, _ = est.codebooks_.shape
    return [f"M={M} x {K} centres", f"mse {est.mse_:.6g}", f"seed {est.random_state}"]
