"""Choosing the number of clusters: :func:`select_k` and :func:`estimate_n_clusters`.

:func:`select_k` fits every candidate ``k`` and scores each clustering with the usual
criteria; :func:`estimate_n_clusters` does the same and picks the ``k`` whose clustering
best matches the classes known for some rows (the estimate of novel and generalized
category discovery, NCD/GCD). For k-means all candidates run in the same passes over
the data (:mod:`dclust.algorithms.select_k`): a sweep over ten values of ``k`` reads the
data about as often as its slowest fit alone. Other estimators (``KMedoids``,
``GaussianMixture``) are fitted one ``k`` after the other, and scored with
:mod:`dclust.metrics`.
"""

from __future__ import annotations

import importlib
import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from .exceptions import ConvergenceWarning, DclustValueError, EmptyClusterWarning

__all__ = ["select_k", "estimate_n_clusters", "SelectKResult", "CRITERIA", "parse_ks"]

# criterion -> (table column, better): "max" or "min" of the column, or "elbow" of it.
CRITERIA = {
    "elbow": ("inertia", "elbow"),
    "calinski_harabasz": ("calinski_harabasz", "max"),
    "davies_bouldin": ("davies_bouldin", "min"),
    "silhouette": ("silhouette", "max"),
    "bic": ("bic", "min"),
    "aic": ("aic", "min"),
    "accuracy": ("accuracy", "max"),
}
_ALIASES = {"inertia": "elbow", "ch": "calinski_harabasz", "db": "davies_bouldin"}
_ESTIMATORS = {
    "kmeans": ("dclust.estimators.kmeans", "KMeans"),
    "kmedoids": ("dclust.estimators.kmedoids", "KMedoids"),
    "gmm": ("dclust.estimators.gmm", "GaussianMixture"),
}
_UNSUPERVISED = ("elbow", "calinski_harabasz", "davies_bouldin", "silhouette")


@dataclass
class SelectKResult:
    """What :func:`select_k` and :func:`estimate_n_clusters` found.

    Attributes
    ----------
    best_k : int
        The ``k`` the criterion chose.
    criterion : str
        The criterion that chose it.
    table : dict of str to list
        One column per figure, one entry per ``k`` (``table["k"]``): ``inertia``,
        ``calinski_harabasz``, ``davies_bouldin``, ``silhouette``, ``bic`` and ``aic``
        (Gaussian mixtures), ``accuracy`` (known classes), ``elbow`` (the kneedle
        difference curve of the inertia), ``n_iter``, ``converged``; NaN where a
        figure is undefined (``k=1``) or was not computed.
    choices : dict of str to int
        The ``k`` each computed criterion would choose.
    models : dict of int to estimator
        The fitted model of each ``k`` (``labels_`` lazily computed for dask input).
    n_passes : int
        Passes over the data: the k-means sweep's (initialisation, iterations and
        criteria), or, for other estimators, the computations submitted for the fits
        and the criteria.
    seed : int
        The ``random_state`` every ``k`` was fitted with.
    """

    best_k: int
    criterion: str
    table: dict
    choices: dict
    models: dict = field(repr=False, default_factory=dict)
    n_passes: int = 0
    seed: int | None = None

    @property
    def best_model(self):
        """The fitted model of ``best_k``."""
        return self.models.get(self.best_k)

    def __repr__(self):
        cols = [c for c in self.table if c not in ("k",)]
        head = ["k"] + cols
        rows = []
        for i, k in enumerate(self.table["k"]):
            cells = [str(k)]
            for c in cols:
                v = self.table[c][i]
                if isinstance(v, (bool, np.bool_)):
                    cells.append("yes" if v else "no")
                elif isinstance(v, numbers.Integral):
                    cells.append(str(v))
                elif v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append("-")
                else:
                    cells.append(f"{v:.6g}")
            rows.append(cells)
        width = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]
        lines = [f"SelectKResult(best_k={self.best_k}, criterion={self.criterion!r})",
                 "  " + "  ".join(h.rjust(w) for h, w in zip(head, width))]
        for k, cells in zip(self.table["k"], rows):
            mark = "*" if k == self.best_k else " "
            lines.append(mark + " " + "  ".join(c.rjust(w) for c, w in zip(cells, width)))
        others = ", ".join(f"{c}: {k}" for c, k in self.choices.items() if c != self.criterion)
        if others:
            lines.append(f"  other criteria choose: {others}")
        return "\n".join(lines)


# ---- arguments -------------------------------------------------------------------------------
def parse_ks(text):
    """``ks`` from the command line: ``"2:32"`` (2 to 32, both included), ``"2:32:2"``
    (a step), ``"2,4,8"`` or ``"8"``."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = parts[0], parts[1]
            step = parts[2] if len(parts) == 3 else 1
            if step < 1:
                raise ValueError
            return list(range(start, stop + 1, step))
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise DclustValueError(
            f"k={text!r} is not a range or list of numbers of clusters; write it as START:STOP "
            "(both included, as 2:32), START:STOP:STEP or a comma-separated list (2,4,8)."
        ) from None


def check_ks(ks, n_samples):
    """``ks`` as a sorted list of distinct ints in ``1 .. n_samples``."""
    if isinstance(ks, str):
        ks = parse_ks(ks)
    if isinstance(ks, numbers.Number) or not hasattr(ks, "__iter__"):
        raise DclustValueError(
            f"ks={ks!r} must be a sequence of numbers of clusters to try, such as range(2, 11) "
            "or [2, 4, 8]."
        )
    ks = list(ks)
    for k in ks:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or k < 1:
            raise DclustValueError(f"ks holds {k!r}; every k must be an integer >= 1.")
    if not ks:
        raise DclustValueError("ks is empty; pass the numbers of clusters to try, such as "
                               "range(2, 11).")
    ks = sorted({int(k) for k in ks})
    if ks[-1] > n_samples:
        raise DclustValueError(f"ks holds k={ks[-1]}, more than n_samples={n_samples}; every k "
                               "must be at most the number of rows.")
    return ks


def _criterion_name(criterion):
    name = _ALIASES.get(criterion, criterion)
    if name not in CRITERIA:
        listed = ", ".join(repr(c) for c in CRITERIA)
        raise DclustValueError(f"Unknown criterion {criterion!r}; expected one of {listed}.")
    return name


def estimator_class(name):
    if name not in _ESTIMATORS:
        listed = ", ".join(repr(e) for e in _ESTIMATORS)
        raise DclustValueError(
            f"Unknown estimator {name!r}; expected one of {listed}, or an unfitted dclust "
            "estimator such as dclust.KMeans(init='k-means++')."
        )
    module, cls = _ESTIMATORS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise DclustValueError(
            f"estimator={name!r} needs dclust.{cls}, which this installation of dclust does not "
            "have yet; choose estimator='kmeans' or 'kmedoids'."
        ) from None


def _template(estimator, params):
    """An unfitted estimator carrying every parameter but the number of clusters."""
    from sklearn.base import clone

    if isinstance(estimator, str):
        cls = estimator_class(estimator)
        valid = set(cls._get_param_names())
        unknown = sorted(set(params) - valid)
        if unknown:
            raise DclustValueError(
                f"{cls.__name__} has no parameter {unknown[0]!r}; its parameters are "
                f"{', '.join(sorted(valid))}."
            )
        return cls(**params)
    if not (hasattr(estimator, "get_params") and hasattr(estimator, "fit")):
        raise DclustValueError(
            f"estimator={estimator!r} is not valid; expected 'kmeans', 'kmedoids', 'gmm' or an "
            "unfitted dclust estimator."
        )
    return clone(estimator).set_params(**params)


def _size_param(est):
    names = est.get_params(deep=False)
    for p in ("n_clusters", "n_components"):
        if p in names:
            return p
    raise DclustValueError(f"{type(est).__name__} has neither n_clusters nor n_components; "
                           "select_k varies one of them.")


def _criteria_for(est, criteria, criterion, supervised):
    has_bic = hasattr(est, "bic")
    if criteria is None:
        names = list(_UNSUPERVISED) + (["bic", "aic"] if has_bic else [])
    else:
        if isinstance(criteria, str):
            criteria = [criteria]
        names = [_criterion_name(c) for c in criteria]
    if criterion not in names:
        names.append(criterion)
    if supervised and "accuracy" not in names:
        names.append("accuracy")
    if not supervised and "accuracy" in names:
        raise DclustValueError("criterion 'accuracy' needs known classes: use "
                               "estimate_n_clusters(X, y, ks).")
    for b in ("bic", "aic"):
        if b in names and not has_bic:
            raise DclustValueError(
                f"criterion {b!r} needs a likelihood; {type(est).__name__} has none. Use "
                "estimator='gmm', or one of 'elbow', 'calinski_harabasz', 'davies_bouldin', "
                "'silhouette'.")
    return names


def _choose(ks, table, criterion):
    column, better = CRITERIA[criterion]
    values = np.asarray(table[column], dtype=np.float64)
    if better == "elbow":
        values = np.asarray(table["elbow"], dtype=np.float64)
        better = "max"
    ok = np.isfinite(values)
    if not ok.any():
        return None
    idx = np.flatnonzero(ok)
    pick = idx[np.argmax(values[ok])] if better == "max" else idx[np.argmin(values[ok])]
    return int(ks[pick])


# ---- k-means: the shared-pass sweep ------------------------------------------------------
def _sweep_kmeans(template, X, ks, sample_weight, names, silhouette_sample_size, y):
    from .validation import check_known_classes
    from .algorithms.select_k import LloydSweep
    from .estimators.kmeans import effective_n_init
    from .params import result_params

    template._check_params()
    init = template.init
    if not isinstance(init, str) and not callable(init):
        raise DclustValueError(
            "An init array fixes the number of clusters; select_k needs init='k-means||', "
            "'k-means++', 'random' or a callable."
        )
    session = template._session(X, sample_weight, algorithm="SelectK(KMeans)")
    ks = check_ks(ks, session.n_samples)
    n_init = effective_n_init(template.n_init, init)
    session.set_label(f"select_k(KMeans, k={ks[0]}..{ks[-1]})")
    params = result_params(template, n_clusters=list(ks), init=init, n_init=n_init)
    params["criteria"] = sorted(names)
    params["silhouette_sample_size"] = silhouette_sample_size
    if y is not None:
        y = check_known_classes(y, session.n_samples)
        if y is None:
            raise DclustValueError("y labels no row (every value is -1); estimate_n_clusters "
                                   "needs the class of some rows.")
        from .params import array_digest

        params["y"] = array_digest(y) if isinstance(y, np.ndarray) else y.name
    session.open(params, template.random_state)
    seed = session.seed
    y_rows = None if y is None else session.place_rows(y)
    res = session.run(lambda run: LloydSweep(
        ks, init=init, n_init=n_init, max_iter=template.max_iter, tol=template.tol, seed=seed,
        init_size=template.init_size, oversampling_factor=template.oversampling_factor,
        n_init_rounds=template.init_max_iter, davies_bouldin="davies_bouldin" in names,
        silhouette_size=silhouette_sample_size if "silhouette" in names else None, y=y_rows))
    session.close(f"select_k: {len(ks)} values of k in {session.n_passes} passes")
    per_k = res["per_k"]
    models = {}
    for k in ks:
        r = per_k[str(k)]
        km = _kmeans_model(template, k, seed, r, session)
        models[k] = km
    _sweep_warnings(template, ks, per_k)
    rows = {k: {c: per_k[str(k)].get(c, math.nan)
                for c in ("inertia", "calinski_harabasz", "davies_bouldin", "silhouette",
                          "accuracy")}
            for k in ks}
    for k in ks:
        rows[k]["n_iter"] = per_k[str(k)]["n_iter"]
        rows[k]["converged"] = per_k[str(k)]["converged"]
    return ks, rows, models, session.n_passes, seed


def _kmeans_model(template, k, seed, r, session):
    """A fitted KMeans of one ``k`` of the sweep, as ``fit`` would have left it."""
    from sklearn.base import clone

    km = clone(template).set_params(n_clusters=k, random_state=seed)
    km.cluster_centers_ = np.asarray(r["centers"]).astype(session.dtype)
    km.inertia_ = float(r["inertia"])
    km.n_iter_ = int(r["n_iter"])
    km.converged_ = bool(r["converged"])
    km.n_features_in_ = int(session.n_features)
    km.n_passes_ = int(session.n_passes)
    km._init_inertia = r["init_inertia"]
    km._fit_seed = seed
    if getattr(template, "feature_names_in_", None) is not None:
        km.feature_names_in_ = template.feature_names_in_
    km.labels_ = km._predict_array(session.X_source)
    return km


def _sweep_warnings(template, ks, per_k):
    slow = [k for k in ks if not per_k[str(k)]["converged"]]
    if slow:
        warnings.warn(
            f"KMeans stopped at max_iter={template.max_iter} before converging for k="
            f"{', '.join(map(str, slow))}; raise max_iter or tol.", ConvergenceWarning,
            stacklevel=4)
    moved = sum(per_k[str(k)]["n_empty_total"] for k in ks)
    if moved:
        warnings.warn(f"{moved} empty cluster(s) over the sweep were moved to the points "
                      "farthest from their centres.", EmptyClusterWarning, stacklevel=4)


# ---- any other estimator: one fit per k, scored by dclust.metrics -------------------------
def _sweep_each(template, X, ks, sample_weight, names, silhouette_sample_size, y):
    from sklearn.base import clone

    from . import metrics
    from .metrics._inputs import as_data
    from .runtime.compute import compute_count
    from .validation import check_random_state

    Xd = as_data(X)
    ks = check_ks(ks, int(Xd.shape[0]))
    param = _size_param(template)
    seed = check_random_state(template.get_params().get("random_state"))
    if sample_weight is not None:
        import inspect

        if "sample_weight" not in inspect.signature(template.fit).parameters:
            raise DclustValueError(f"{type(template).__name__}.fit takes no sample_weight; "
                                   "pass sample_weight=None.")
    y_known = None
    if y is not None:
        from .validation import check_known_classes

        y_known = check_known_classes(y, int(Xd.shape[0]))
        if y_known is None:
            raise DclustValueError("y labels no row (every value is -1); estimate_n_clusters "
                                   "needs the class of some rows.")
    before = compute_count()
    rows, models = {}, {}
    metric = template.get_params().get("metric", "euclidean")
    metric = metric if metric in ("euclidean", "sqeuclidean", "manhattan", "cosine") else \
        "euclidean"
    for k in ks:
        est = clone(template).set_params(**{param: k})
        if "random_state" in est.get_params():
            est.set_params(random_state=seed)
        kw = {} if sample_weight is None else {"sample_weight": sample_weight}
        est.fit(X, **kw)
        labels = est.labels_ if hasattr(est, "labels_") else est.predict(X)
        row = {"inertia": float(getattr(est, "inertia_", math.nan)), "calinski_harabasz":
               math.nan, "davies_bouldin": math.nan, "silhouette": math.nan,
               "accuracy": math.nan, "bic": math.nan, "aic": math.nan,
               "n_iter": int(getattr(est, "n_iter_", 0)),
               "converged": bool(getattr(est, "converged_", True))}
        n_labels = k  # k=1 (or a clustering into one label) has no internal score
        if n_labels >= 2:
            if "calinski_harabasz" in names:
                row["calinski_harabasz"] = _or_nan(metrics.calinski_harabasz_score, X, labels)
            if "davies_bouldin" in names:
                row["davies_bouldin"] = _or_nan(metrics.davies_bouldin_score, X, labels)
            if "silhouette" in names:
                row["silhouette"] = _or_nan(metrics.silhouette_score, X, labels, metric=metric,
                                            sample_size=silhouette_sample_size,
                                            random_state=seed)
        if "bic" in names:
            row["bic"] = float(est.bic(X))
        if "aic" in names:
            row["aic"] = float(est.aic(X))
        if y_known is not None:
            row["accuracy"] = _labelled_accuracy(y_known, labels)
        rows[k], models[k] = row, est
    return ks, rows, models, compute_count() - before, seed


def _or_nan(score, *args, **kw):
    try:
        return float(score(*args, **kw))
    except DclustValueError:  # fewer than 2 labels found (clusters left empty)
        return math.nan


def _labelled_accuracy(y, labels):
    """Accuracy on the rows of known class (the -1 row of the contingency table dropped)."""
    from scipy.optimize import linear_sum_assignment

    from .metrics import contingency_table

    t = contingency_table(y, labels)
    C = t.dense(np.int64)[np.asarray(t.classes) >= 0]
    n = int(C.sum())
    if n == 0:
        return math.nan
    r, c = linear_sum_assignment(C, maximize=True)
    return float(C[r, c].sum() / n)


# ---- the public functions ----------------------------------------------------------------
def _run(X, ks, estimator, criterion, criteria, sample_weight, random_state,
         silhouette_sample_size, y, params):
    from .estimators.kmeans import KMeans
    from .algorithms.select_k import kneedle

    if random_state is not None:
        params = {**params, "random_state": random_state}
    template = _template(estimator, params)
    if criterion == "auto":
        criterion = "bic" if hasattr(template, "bic") else "calinski_harabasz"
    criterion = _criterion_name(criterion)
    if y is None and criterion == "accuracy":
        raise DclustValueError("criterion 'accuracy' needs known classes: use "
                               "estimate_n_clusters(X, y, ks).")
    names = _criteria_for(template, criteria, criterion, y is not None)
    if silhouette_sample_size is not None and (
            isinstance(silhouette_sample_size, bool)
            or not isinstance(silhouette_sample_size, numbers.Integral)
            or silhouette_sample_size < 2):
        raise DclustValueError(
            f"silhouette_sample_size={silhouette_sample_size!r} must be an integer >= 2, the "
            "rows the silhouette is computed on.")
    if type(template) is KMeans:
        if silhouette_sample_size is None and "silhouette" in names:
            raise DclustValueError("silhouette_sample_size=None (every row) is O(n^2) for each k; "
                                   "pass a sample size such as 10000.")
        ks, rows, models, n_passes, seed = _sweep_kmeans(
            template, X, ks, sample_weight, names, silhouette_sample_size, y)
    else:
        ks, rows, models, n_passes, seed = _sweep_each(
            template, X, ks, sample_weight, names, silhouette_sample_size, y)
    table = {"k": list(ks)}
    columns = ["inertia"]
    columns += [CRITERIA[c][0] for c in names if CRITERIA[c][0] not in ("inertia",)]
    for c in columns:
        table[c] = [rows[k].get(c, math.nan) for k in ks]
    if "elbow" in names:
        table["elbow"] = [float(v) for v in kneedle(ks, table["inertia"])]
    table["n_iter"] = [rows[k]["n_iter"] for k in ks]
    table["converged"] = [rows[k]["converged"] for k in ks]
    choices = {c: _choose(ks, table, c) for c in names}
    return ks, table, choices, models, n_passes, seed, criterion


def select_k(X, ks, estimator="kmeans", *, criterion="auto", criteria=None, sample_weight=None,
             random_state=None, silhouette_sample_size=10_000, **params):
    """Fit every number of clusters in ``ks`` and choose one by a criterion.

    For k-means, every candidate's Lloyd iterations run in the same passes over the
    data: each pass reads each chunk once for all the ``k`` still iterating, and a ``k``
    that has converged drops out. The initialisation draws one sample per run for all
    ``k``, the criteria cost at most one more pass together, so a sweep over ten values
    of ``k`` reads the data about as often as the slowest of those fits alone.
    ``KMedoids`` and ``GaussianMixture`` are fitted one ``k`` after the other.

    Every ``k`` is fitted with the same seed: for k-means, ``models[k]`` has the same
    centres, iterations and inertia, bit for bit, as
    ``KMeans(n_clusters=k, random_state=result.seed, **params).fit(X)`` on the same data
    and chunking (see :mod:`dclust.algorithms.select_k` for why the shared sample draws
    the same initialisation).

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    ks : sequence of int, or str
        The numbers of clusters to try (``range(2, 11)``, ``[4, 8, 16]`` or ``"2:10"``).
    estimator : {"kmeans", "kmedoids", "gmm"} or unfitted estimator, default="kmeans"
        What to fit: a name (with ``params`` passed to its class) or an unfitted
        estimator whose parameters are kept (``dclust.KMeans(init="k-means++")``); its
        ``n_clusters`` (``n_components`` for a mixture) is set to each ``k``. ``"gmm"``
        needs ``dclust.GaussianMixture``.
    criterion : str, default="auto"
        How ``best_k`` is chosen:

        - ``"elbow"`` (alias ``"inertia"``): the knee of the inertia curve by the
          kneedle rule (Satopaa et al., 2011): with ``k`` and the inertia scaled to
          [0, 1], the ``k`` where ``(1 - inertia) - k`` is largest, the point farthest
          below the chord from the first to the last ``k`` (needs at least 3 values);
        - ``"calinski_harabasz"``: its maximum (``"auto"`` for k-means and k-medoids);
        - ``"davies_bouldin"``: its minimum;
        - ``"silhouette"``: the maximum of the silhouette of a uniform sample of
          ``silhouette_sample_size`` rows (the same rows for every ``k``);
        - ``"bic"``, ``"aic"``: their minimum (Gaussian mixtures; ``"auto"`` there).
    criteria : sequence of str, optional
        The criteria to compute and tabulate (default: all those the estimator has;
        ``criterion`` is always added). For k-means, inertia and Calinski-Harabasz cost
        no pass, Davies-Bouldin one pass for every ``k`` together, and the silhouette
        none (its sample is the initialisation's) but ``O(m^2)`` distances on the client.
    sample_weight : array-like or dask array of shape (n_samples,), optional
        k-means only. Criteria then count each row ``w`` times.
    random_state : int, Generator, RandomState or None, default=None
        The seed of every fit (overrides the estimator's).
    silhouette_sample_size : int, default=10000
        Rows the silhouette is computed on (exactly, ``O(m^2)`` distances).
    **params
        Parameters of the estimator named by ``estimator`` (``max_iter=100``,
        ``n_init=3``, ``progress=False``...).

    Returns
    -------
    SelectKResult
        ``best_k``, the criteria ``table``, each criterion's ``choices`` and the fitted
        ``models``.

    Raises
    ------
    DclustValueError
        Unknown estimator or criterion, ``ks`` empty or out of range, a criterion the
        estimator cannot compute, or an init array.

    Examples
    --------
    >>> import dclust
    >>> res = dclust.select_k("blobs.zarr", range(2, 12), random_state=0)  # doctest: +SKIP
    >>> res.best_k, res.table["calinski_harabasz"]                         # doctest: +SKIP
    """
    ks, table, choices, models, n_passes, seed, criterion = _run(
        X, ks, estimator, criterion, criteria, sample_weight, random_state,
        silhouette_sample_size, None, params)
    best = choices[criterion]
    if best is None:
        why = ("the elbow needs at least 3 values of k" if criterion == "elbow" and len(ks) < 3
               else "it is undefined for every k tried (k=1 has no internal score)")
        raise DclustValueError(f"criterion {criterion!r} cannot choose among ks={ks}: {why}. "
                               "Try more values of k or another criterion.")
    return SelectKResult(best, criterion, table, choices, models, n_passes, seed)


def estimate_n_clusters(X, y, ks, estimator="kmeans", *, tie_break="calinski_harabasz",
                        tol=0.01, criteria=None, sample_weight=None, random_state=None,
                        silhouette_sample_size=10_000, **params):
    """Estimate the number of classes from the classes known for some rows.

    The estimate of novel and generalized category discovery (Han et al., 2019; Vaze et
    al., 2022): every ``k`` is fitted on all rows, labelled or not, and the ``k`` whose
    clustering best matches the known classes wins, by clustering accuracy (the best
    one-to-one matching of clusters to classes, :func:`dclust.metrics.accuracy`) on the
    labelled rows. Accuracy on a subset of the classes cannot tell apart clusterings
    that differ only among the other classes, so every ``k`` within ``tol`` of the best
    accuracy counts as equally good and ``tie_break`` chooses among them. The other
    criteria are computed and tabulated as by :func:`select_k`; for k-means the accuracy
    comes from the same pass as Davies-Bouldin.

    Parameters
    ----------
    X : array-like, dask array, Zarr array or path of shape (n_samples, n_features)
    y : array-like, dask or Zarr array of shape (n_samples,)
        The class of each row (an integer >= 0), or -1 where it is unknown.
    ks : sequence of int, or str
    estimator : {"kmeans", "kmedoids", "gmm"} or unfitted estimator, default="kmeans"
        Fitted without ``y`` (plain, unseeded clustering).
    tie_break : str, default="calinski_harabasz"
        The criterion that chooses among the ``k`` tied on accuracy (any of
        :func:`select_k`'s).
    tol : float, default=0.01
        Accuracies within ``tol`` of the best are tied.
    criteria, sample_weight, random_state, silhouette_sample_size, **params
        As :func:`select_k`.

    Returns
    -------
    SelectKResult
        ``criterion`` is ``"accuracy"``; the table has an ``accuracy`` column.

    Raises
    ------
    DclustValueError
        ``y`` labels no row or holds values below -1, or as :func:`select_k`.
    """
    tie = _criterion_name(tie_break)
    if tie == "accuracy":
        raise DclustValueError("tie_break='accuracy' would not break ties; choose one of "
                               "'calinski_harabasz', 'davies_bouldin', 'silhouette', 'elbow', "
                               "'bic', 'aic'.")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 <= tol < 1:
        raise DclustValueError(f"tol={tol!r} must be a number in [0, 1): accuracies within tol "
                               "of the best are tied.")
    if criteria is not None:
        criteria = [criteria] if isinstance(criteria, str) else list(criteria)
        criteria = criteria + [tie]
    ks, table, choices, models, n_passes, seed, _ = _run(
        X, ks, estimator, tie, criteria, sample_weight, random_state, silhouette_sample_size, y,
        params)
    acc = np.asarray(table["accuracy"], dtype=np.float64)
    if not np.isfinite(acc).any():
        raise DclustValueError("y labels no row (every value is -1); estimate_n_clusters needs "
                               "the class of some rows.")
    tied = np.isfinite(acc) & (acc >= np.nanmax(acc) - tol)
    # The tied ks' rows of the table (the elbow's values stay those of the whole curve).
    sub = {c: [v for v, t in zip(col, tied) if t] for c, col in table.items()}
    best = _choose(sub["k"], sub, tie)
    if best is None:  # the tie-break is undefined on the tied ks: the best accuracy
        best = int(np.asarray(ks)[np.nanargmax(acc)])
    choices = {"accuracy": best, **{c: k for c, k in choices.items() if c != "accuracy"}}
    return SelectKResult(best, "accuracy", table, choices, models, n_passes, seed)
