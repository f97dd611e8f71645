"""Parameters of entropic optimal transport: marginals, regularisation, relaxations."""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..exceptions import DclustValueError

__all__ = ["MARGINALS", "check_marginal", "check_sinkhorn_params", "check_rho", "effective_reg_m"]

MARGINALS = ("balanced", "relaxed", "partial")
_MARGINALS = MARGINALS


def check_marginal(values, k, name="b", *, rtol=1e-6):
    """A marginal of ``k`` positive weights summing to one, or a clear error.

    ``"uniform"`` (or ``None``) means ``1/k`` each.
    """
    if values is None or (isinstance(values, str) and values == "uniform"):
        return np.full(k, 1.0 / k)
    if isinstance(values, str):
        raise DclustValueError(
            f"{name}={values!r} is not valid; expected 'uniform' or an array of {k} weights "
            "summing to 1."
        )
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != k:
        raise DclustValueError(
            f"{name} has shape {tuple(v.shape)}; expected ({k},), one weight per cluster."
        )
    if not np.isfinite(v).all():
        raise DclustValueError(f"{name} contains NaN or infinite values; weights must be finite.")
    if (v <= 0).any():
        j = int(np.flatnonzero(v <= 0)[0])
        raise DclustValueError(
            f"{name} has {int((v <= 0).sum())} weight(s) <= 0 (first: {name}[{j}]={float(v[j])!r}); "
            "every cluster needs a positive weight (drop the clusters that should stay empty)."
        )
    total = float(v.sum())
    if abs(total - 1.0) > rtol:
        raise DclustValueError(
            f"{name} sums to {total!r}, off by {total - 1.0:+.3g} from 1; marginals are "
            f"probabilities. Normalise it first: {name} / {name}.sum()."
        )
    return v / total


def check_sinkhorn_params(reg, marginal, reg_m, rho, max_iter, tol, eps_decay=0.5):
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not (reg > 0) or not math.isfinite(reg):
        raise DclustValueError(
            f"reg={reg!r} must be a positive finite number (the entropic regularisation); "
            "small values such as 1e-3 give sharper plans and are safe in the log domain."
        )
    if marginal not in _MARGINALS:
        raise DclustValueError(
            f"marginal={marginal!r} is not valid; expected one of 'balanced', 'relaxed' or 'partial'."
        )
    if marginal != "balanced" and reg_m is not None:
        if isinstance(reg_m, bool) or not isinstance(reg_m, numbers.Real) or not reg_m > 0:
            raise DclustValueError(
                f"reg_m={reg_m!r} must be a positive number (the strength of the KL penalty on "
                "the cluster sizes; math.inf enforces them exactly)."
            )
    if marginal == "partial":
        if rho is None:
            raise DclustValueError(
                "marginal='partial' needs rho, the fraction of the mass to transport, in (0, 1]."
            )
        check_rho(rho)
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise DclustValueError(f"max_iter={max_iter!r} must be a positive integer.")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or tol < 0:
        raise DclustValueError(f"tol={tol!r} must be a number >= 0.")
    if not (isinstance(eps_decay, numbers.Real) and 0 < eps_decay < 1):
        raise DclustValueError(f"eps_decay={eps_decay!r} must be in (0, 1).")


def check_rho(rho, name="rho"):
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not (0 < rho <= 1):
        raise DclustValueError(
            f"{name}={rho!r} must be in (0, 1]: the fraction of the mass sent to the clusters "
            "(1 - rho goes to the virtual cluster)."
        )
    return float(rho)


def effective_reg_m(marginal, reg_m):
    """The KL strength the column update uses (``None``: exact column marginals)."""
    if marginal == "relaxed":
        return 1.0 if reg_m is None else float(reg_m)
    if marginal == "partial" and reg_m is not None:
        return float(reg_m)
    return None
