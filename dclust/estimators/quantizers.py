"""``dclust.ProductQuantizer`` and ``dclust.IVFQuantizer``: vector quantizers trained
out-of-core, with export to FAISS.

A :class:`ProductQuantizer` is ``M`` k-means codebooks of ``2**n_bits`` centres, one per
sub-space of ``d / M`` features, all trained in the same passes over the data
(:mod:`dclust.algorithms.pq`), optionally after an OPQ rotation. An
:class:`IVFQuantizer` adds a coarse k-means (any dclust k-means estimator) whose
residuals the product quantizer encodes: FAISS's ``IndexIVFPQ``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import TransformerMixin, clone

from ..algorithms.pq import INITS, ProductQuantization, check_codebooks, pq_error_aggregation
from ..exceptions import ConvergenceWarning, DclustTypeError, DclustValueError, NotFittedError
from ..kernels.lloyd import nearest_center
from ..kernels.pq import code_dtype, pq_decode, pq_encode, rotate, subspace_slices
from ..params import Param, common, result_params
from .base import DclustEstimator, map_rows, register
from .base import require_finite_block as _require_finite

__all__ = ["ProductQuantizer", "IVFQuantizer", "add_to_faiss", "import_faiss"]


def import_faiss():
    """The ``faiss`` module, or an error saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "to_faiss() and add_to_faiss() need FAISS, which is not installed. Install it with "
            "`pip install 'dclust[faiss]'` (or `pip install faiss-cpu`; faiss-gpu for GPUs)."
        ) from None
    return faiss


# ---- per-block functions (map_blocks) -----------------------------------------------------
def _encode_block(X, codebooks, rotation, block_info=None):
    _require_finite(X, block_info)
    return pq_encode(X, codebooks, rotation)


def _residual_block(X, centers, block_info=None):
    labels, _ = nearest_center(X, centers)
    return (np.asarray(X, dtype=np.float64) - centers[np.asarray(labels)]).astype(X.dtype)


def _lists_block(X, centers, block_info=None):
    _require_finite(X, block_info)
    labels, _ = nearest_center(X, centers)
    return np.asarray(labels).astype(np.int32)


def _decode_block(codes, codebooks, rotation, dtype):
    return pq_decode(codes, codebooks, rotation, dtype=dtype)


def _as_rows(a, what):
    import dask.array as da

    from ..validation import as_dask_rows

    if isinstance(a, da.Array):
        return a if a.ndim == 1 or len(a.chunks[1]) == 1 else a.rechunk({1: -1})
    a = np.asarray(a) if not hasattr(a, "chunks") else as_dask_rows(a, name=what)
    return a


def _to_numpy(x):
    return x if isinstance(x, np.ndarray) else np.asarray(x.compute())


@register
class ProductQuantizer(TransformerMixin, DclustEstimator):
    """Product quantizer (and OPQ) trained on data larger than memory.

    The ``d`` features are split into ``n_subquantizers`` contiguous sub-spaces of
    ``d / n_subquantizers`` features; each is quantized by k-means with ``2**n_bits``
    centres, so a row is stored as ``n_subquantizers`` codes. Every iteration is one
    pass over the data for all sub-quantizers together.

    Parameters
    ----------
    n_subquantizers : int, default=8
        ``M``, the number of sub-spaces; must divide the number of features.
    n_bits : int, default=8
        Bits per code: ``2**n_bits`` centres per sub-quantizer. Codes are uint8 for
        ``n_bits <= 8``, else uint16.
    init : {"k-means++", "k-means||", "random"} or array of shape (M, 2**n_bits, d / M), default="k-means++"
        How each sub-space's codebook is seeded, from one sample of ``init_size`` rows
        shared by all sub-spaces (one pass); an array is used as given.
    max_iter : int, default=25
        Lloyd iterations (FAISS's default for its ``ProductQuantizer``); with ``opq``,
        those after the rotation is learnt.
    tol : float, default=1e-4
        Stop when the codebooks move less (summed over the sub-spaces) than ``tol``
        times ``M`` times the mean feature variance; ``0`` runs ``max_iter``.
    opq : bool, default=False
        Learn an orthogonal rotation first (optimized product quantization): the
        quantizer encodes ``X @ rotation_``.
    n_opq_iter : int, default=10
        OPQ rounds, each one rotation pass and ``opq_pq_iter`` Lloyd passes.
    opq_pq_iter : int, default=4
        Lloyd passes per OPQ round.
    init_size : int, optional
        Rows of the seeding sample; default ``min(n, max(50000, 32 * 2**n_bits))``.
    random_state : int, numpy Generator, RandomState or None, default=None
    cache : {"auto", "memory", "none"}, default="auto"
    split_every : int, optional
    progress : bool, default=True
    checkpoint : str or os.PathLike, optional
        Save the state after every iteration; with ``resume`` an interrupted fit
        continues and ends, bit for bit, where an uninterrupted one does.
    resume : bool, default=False
    storage_options : dict, optional

    Attributes
    ----------
    codebooks_ : ndarray of shape (n_subquantizers, 2**n_bits, n_features / n_subquantizers)
    rotation_ : ndarray of shape (n_features, n_features)
        Only with ``opq=True``: the orthogonal rotation applied before quantizing.
    mse_ : float
        Mean squared reconstruction error ``||x - decode(encode(x))||^2`` of the
        training rows.
    n_iter_ : int
    converged_ : bool
    n_features_in_ : int
    n_passes_ : int

    Examples
    --------
    >>> import dclust
    >>> pq = dclust.ProductQuantizer(16, n_bits=8, random_state=0).fit(X)   # doctest: +SKIP
    >>> codes = pq.encode(X)                      # lazy uint8, shape (n, 16)  # doctest: +SKIP
    >>> index = pq.to_faiss()                     # a trained faiss.IndexPQ   # doctest: +SKIP
    """

    _params = (
        Param("n_subquantizers", "sub-spaces (M); must divide the number of features", "int",
              low=1, short="-m", metavar="M"),
        Param("n_bits", "bits per code: 2**BITS centres per sub-space", "int", low=1, high=16,
              flag="--bits", metavar="BITS"),
        Param("init", "seeding of each sub-space's codebook", "any", options=INITS),
        Param("max_iter", "Lloyd iterations (after OPQ's rotation, with --opq)", "int", low=1,
              metavar="N"),
        Param("tol", "stop when the codebooks move less than F times M times the mean feature "
              "variance", "float", low=0, metavar="F"),
        Param("opq", "learn an orthogonal rotation first (optimized PQ)", "bool"),
        Param("n_opq_iter", "OPQ rounds (one rotation pass and --opq-pq-iter Lloyd passes each)",
              "int", low=1, metavar="N"),
        Param("opq_pq_iter", "Lloyd passes per OPQ round", "int", low=1, metavar="N"),
        Param("init_size", "rows of the seeding sample", "int", low=1, none=True, metavar="N"),
        *common("random_state", "cache", "split_every", "progress", "checkpoint", "resume",
                "storage_options"),
    )
    _fitted_arrays = ("codebooks_", "rotation_")
    _fitted_scalars = ("mse_", "n_iter_", "converged_", "n_features_in_", "n_passes_")

    def __init__(self, n_subquantizers=8, n_bits=8, *, init="k-means++", max_iter=25, tol=1e-4,
                 opq=False, n_opq_iter=10, opq_pq_iter=4, init_size=None, random_state=None,
                 cache="auto", split_every=None, progress=True, checkpoint=None, resume=False,
                 storage_options=None):
        self.n_subquantizers = n_subquantizers
        self.n_bits = n_bits
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.opq = opq
        self.n_opq_iter = n_opq_iter
        self.opq_pq_iter = opq_pq_iter
        self.init_size = init_size
        self.random_state = random_state
        self.cache = cache
        self.split_every = split_every
        self.progress = progress
        self.checkpoint = checkpoint
        self.resume = resume
        self.storage_options = storage_options

    # ---- fitting ---------------------------------------------------------------------
    def _check_params(self):
        if isinstance(self.init, str) and self.init not in INITS:
            raise DclustValueError(
                f"Unknown init {self.init!r}; expected one of 'k-means++', 'k-means||', 'random' "
                "or an array of shape (n_subquantizers, 2**n_bits, n_features / n_subquantizers)."
            )
        super()._check_params()

    def _check_shape(self, n, d):
        M, K = int(self.n_subquantizers), 2 ** int(self.n_bits)
        if d % M:
            raise DclustValueError(
                f"n_subquantizers={M} does not divide n_features={d}; each sub-space needs the "
                f"same number of features. Choose M among the divisors of {d} "
                f"({', '.join(str(m) for m in range(1, d + 1) if d % m == 0)}) or pad the features."
            )
        if K > n:
            raise DclustValueError(
                f"n_samples={n} must be >= 2**n_bits={K} (the centres of each sub-quantizer). "
                "Lower n_bits or pass more rows."
            )
        return M, K

    def fit(self, X, y=None, sample_weight=None):
        """Train the codebooks (and the OPQ rotation) on ``X``.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        y : None
            Ignored.
        sample_weight : array-like or dask array of shape (n_samples,), default=None

        Returns
        -------
        self : ProductQuantizer
        """
        self._check_params()
        session = self._session(X, sample_weight)
        n, d = session.n_samples, session.n_features
        M, K = self._check_shape(n, d)
        init = self.init
        if not isinstance(init, str):
            init = check_codebooks(init, M, K, d // M)
        session.set_label(f"ProductQuantizer(M={M}, bits={self.n_bits})")
        session.open(result_params(self, init=init), self.random_state)
        seed = session.seed
        res = session.run(lambda run: ProductQuantization(
            M, K, init=init, max_iter=self.max_iter, tol=self.tol, seed=seed,
            init_size=self.init_size, opq=self.opq, n_opq_iter=self.n_opq_iter,
            opq_pq_iter=self.opq_pq_iter))
        session.close(f"ProductQuantizer(M={M}, bits={self.n_bits}): {res['n_iter']} iterations, "
                      f"mse {res['mse']:.6g}")
        self.codebooks_ = np.asarray(res["codebooks"]).astype(session.dtype)
        if self.opq:
            self.rotation_ = np.asarray(res["rotation"], dtype=np.float64)
        else:
            self.__dict__.pop("rotation_", None)
        self.mse_ = float(res["mse"])
        self.n_iter_ = int(res["n_iter"])
        self.converged_ = bool(res["converged"])
        self.n_features_in_ = int(d)
        self.n_passes_ = int(session.n_passes)
        return self

    # ---- using the codes ------------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "codebooks_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")

    def _check_X(self, X):
        from ..validation import as_dask_rows

        self._check_fitted()
        X = as_dask_rows(X)
        if X.shape[1] != self.n_features_in_:
            raise DclustValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the number it was fitted on).")
        return X

    @property
    def _n_features_out(self):
        return self.codebooks_.shape[0]

    def _books(self):
        return np.asarray(self.codebooks_, dtype=np.float64)

    def _rotation(self):
        R = getattr(self, "rotation_", None)
        return None if R is None else np.asarray(R, dtype=np.float64)

    @property
    def code_dtype_(self):
        """uint8 for ``n_bits <= 8``, else uint16."""
        return code_dtype(int(self.n_bits))

    def encode(self, X, out=None, *, storage_options=None, overwrite=True):
        """The codes of ``X``: the nearest centre of each sub-quantizer, per row.

        Parameters
        ----------
        X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
        out : str or os.PathLike, optional
            Write the codes to a Zarr array there (atomically, chunked like ``X``'s rows)
            and return the path.

        Returns
        -------
        codes : ndarray or lazy dask array of shape (n_samples, n_subquantizers)
            uint8 (``n_bits <= 8``) or uint16; an ndarray for NumPy input.
        """
        X = self._check_X(X)
        codes = map_rows(X, _encode_block, self._books(), self._rotation(),
                         n_out=self.codebooks_.shape[0], dtype=self.code_dtype_)
        if out is None:
            return codes
        from ..io.zarr_io import write_array

        return write_array(codes, out, storage_options=storage_options, overwrite=overwrite,
                           attributes={"dclust": {"kind": "pq-codes"}})

    transform = encode

    def decode(self, codes):
        """The reconstructions of ``codes`` (float32; float64 for a float64 model)."""
        self._check_fitted()
        codes = _as_rows(codes, "codes")
        M = self.codebooks_.shape[0]
        if codes.ndim != 2 or codes.shape[1] != M:
            raise DclustValueError(
                f"codes has shape {tuple(codes.shape)}; expected (n_samples, {M}), one code per "
                "sub-quantizer.")
        dtype = self.codebooks_.dtype
        if isinstance(codes, np.ndarray):
            return pq_decode(codes, self._books(), self._rotation(), dtype=dtype)
        return codes.map_blocks(_decode_block, self._books(), self._rotation(), dtype,
                                chunks=(codes.chunks[0], (self.n_features_in_,)), dtype=dtype,
                                meta=np.empty((0, 0), dtype))

    def reconstruction_error(self, X, sample_weight=None):
        """Mean of ``||x - decode(encode(x))||^2`` over the rows of ``X`` (one pass)."""
        session = self._scoring_session(X, sample_weight)
        res = session.run_pass({"err": pq_error_aggregation(self._books(), self._rotation())},
                               name="pq-error")["err"]
        return float(res["sse"]) / max(float(res["weight"]), 1e-300)

    def score(self, X, y=None, sample_weight=None):
        """Opposite of :meth:`reconstruction_error`."""
        return -self.reconstruction_error(X, sample_weight)

    def distance_tables(self, Q):
        """Asymmetric-distance tables of queries: ``||q_m - c_mk||^2``, (n_q, M, K)."""
        self._check_fitted()
        Q = rotate(np.asarray(Q, dtype=np.float64), self._rotation())
        books = self._books()
        M = books.shape[0]
        out = np.empty((Q.shape[0], M, books.shape[1]))
        for m, sl in enumerate(subspace_slices(Q.shape[1], M)):
            diff = Q[:, None, sl] - books[m][None]
            out[:, m] = np.einsum("qkd,qkd->qk", diff, diff)
        return out

    def search(self, Q, codes, k=10):
        """The ``k`` nearest codes of each query by asymmetric distance (in memory).

        Returns ``(distances, indices)`` of shape (n_q, k), as FAISS's ``search``.
        """
        tables = self.distance_tables(Q)
        codes = _to_numpy(codes).astype(np.intp)
        M = tables.shape[1]
        D = np.zeros((tables.shape[0], codes.shape[0]))
        for m in range(M):
            D += tables[:, m, codes[:, m]]
        k = min(int(k), codes.shape[0])
        idx = np.argsort(D, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(D, idx, axis=1), idx

    # ---- FAISS ------------------------------------------------------------------------------
    def _faiss_pq_centroids(self, faiss, pq):
        faiss.copy_array_to_vector(np.ascontiguousarray(self.codebooks_, np.float32).ravel(),
                                   pq.centroids)

    def _faiss_rotation(self, faiss):
        # FAISS's OPQMatrix applies y = A x, that is X @ A.T: A is our rotation transposed.
        d = self.n_features_in_
        opq = faiss.OPQMatrix(d, self.codebooks_.shape[0])
        faiss.copy_array_to_vector(np.ascontiguousarray(self.rotation_.T, np.float32).ravel(),
                                   opq.A)
        opq.is_trained = True
        opq.is_orthonormal = True
        return opq

    def to_faiss(self):
        """A trained, empty ``faiss.IndexPQ`` with these codebooks.

        With OPQ, a ``faiss.IndexPreTransform(OPQMatrix, IndexPQ)``. Fill it with
        :func:`add_to_faiss`.
        """
        self._check_fitted()
        faiss = import_faiss()
        d, M = self.n_features_in_, self.codebooks_.shape[0]
        index = faiss.IndexPQ(d, M, int(self.n_bits))
        self._faiss_pq_centroids(faiss, index.pq)
        index.is_trained = True
        if getattr(self, "rotation_", None) is None:
            return index
        pre = faiss.IndexPreTransform(self._faiss_rotation(faiss), index)
        pre.is_trained = True  # (faiss's wrappers keep the parts alive with the index)
        return pre

    def _sa_codes(self, X):
        return self.encode(X)


def _resolve(spec, default):
    """An unfitted estimator from ``spec``: an estimator, a saved dict, or ``None``."""
    if spec is None:
        return default()
    if isinstance(spec, dict) and "estimator" in spec:
        from .base import _ESTIMATOR_MODULES, _REGISTRY
        import importlib

        for module in _ESTIMATOR_MODULES:
            importlib.import_module(module)
        return _REGISTRY[spec["estimator"]](**spec.get("params", {}))
    if not hasattr(spec, "get_params"):
        raise DclustTypeError(f"{spec!r} is not a dclust estimator.")
    return clone(spec)


def _spec(est):
    if est is None or isinstance(est, dict):
        return est
    params = {k: v for k, v in est.get_params(deep=False).items()
              if not isinstance(v, (np.ndarray, np.random.Generator, np.random.RandomState))}
    return {"estimator": type(est).__name__, "params": params}


@register
class IVFQuantizer(TransformerMixin, DclustEstimator):
    """Inverted-file quantizer with residual product quantization (FAISS's IVF-PQ).

    A coarse k-means splits the data into ``n_lists`` inverted lists; the product
    quantizer then encodes each row's residual from its list's centre.

    Parameters
    ----------
    n_lists : int, default=1024
        Coarse centres (inverted lists).
    pq : ProductQuantizer, optional
        The residual quantizer (cloned); default ``ProductQuantizer()``.
    coarse : dclust estimator, optional
        The coarse quantizer (cloned; its ``n_clusters`` is set to ``n_lists``): any
        dclust k-means with ``cluster_centers_`` (``KMeans``, ``MiniBatchKMeans``,
        ``BalancedKMeans`` for lists of equal sizes, as RepCONC's). Default
        ``KMeans(max_iter=20)``.
    random_state : int, numpy Generator, RandomState or None, default=None
        Seeds both quantizers (overrides theirs).
    progress : bool, default=True

    Attributes
    ----------
    coarse_centers_ : ndarray of shape (n_lists, n_features)
    codebooks_ : ndarray of shape (M, 2**n_bits, n_features / M)
    rotation_ : ndarray of shape (n_features, n_features), only with an OPQ ``pq``
        Applied to the residuals.
    pq_ : ProductQuantizer
        The fitted residual quantizer.
    labels_ : dask array of shape (n_samples,)
        The inverted list of each training row (lazy).
    mse_ : float
        Mean squared reconstruction error of the training rows.
    n_features_in_ : int
    """

    _params = (
        Param("n_lists", "coarse centres (inverted lists)", "int", low=1, metavar="N"),
        Param("pq", "residual product quantizer", "any", none=True, flag=None),
        Param("coarse", "coarse k-means estimator", "any", none=True, flag=None),
        *common("random_state"),
        Param("progress", "show a progress line", "bool", result=False, flag=None),
    )
    _fitted_arrays = ("coarse_centers_", "codebooks_", "rotation_")
    _fitted_scalars = ("mse_", "n_features_in_", "n_bits_")

    def __init__(self, n_lists=1024, *, pq=None, coarse=None, random_state=None, progress=True):
        self.n_lists = n_lists
        self.pq = pq
        self.coarse = coarse
        self.random_state = random_state
        self.progress = progress

    def fit(self, X, y=None, sample_weight=None):
        """Fit the coarse quantizer, then the product quantizer on the residuals.

        The residuals are never stored: each pass of the product quantizer recomputes
        them from ``X`` (or reads them from the workers' memory when they fit there).
        """
        from ..estimators.kmeans import KMeans
        from ..validation import as_dask_rows, check_random_state

        self._check_params()
        seed = check_random_state(self.random_state)
        coarse = _resolve(self.coarse, lambda: KMeans(max_iter=20))
        pq = _resolve(self.pq, ProductQuantizer)
        if not hasattr(coarse, "n_clusters"):
            raise DclustTypeError(
                f"coarse={type(coarse).__name__} has no n_clusters; pass a dclust k-means "
                "estimator (KMeans, MiniBatchKMeans, BalancedKMeans).")
        names = coarse.get_params(deep=False)
        coarse.set_params(n_clusters=int(self.n_lists), random_state=seed,
                          **({"progress": self.progress} if "progress" in names else {}))
        pq.set_params(random_state=seed + 1, progress=self.progress)
        with warnings.catch_warnings():
            if self.coarse is None:
                # The default coarse k-means stops at 20 iterations on purpose (FAISS runs
                # 10): lists need not be converged k-means to index well.
                warnings.simplefilter("ignore", ConvergenceWarning)
            coarse.fit(X, sample_weight=sample_weight)
        C = np.asarray(coarse.cluster_centers_, dtype=np.float64)
        X = as_dask_rows(X)
        residuals = map_rows(X, _residual_block, C, n_out=X.shape[1], dtype=X.dtype)
        pq.fit(residuals, sample_weight=sample_weight)
        self.coarse_ = coarse
        self.pq_ = pq
        self.coarse_centers_ = np.asarray(coarse.cluster_centers_)
        self.codebooks_ = pq.codebooks_
        if hasattr(pq, "rotation_"):
            self.rotation_ = pq.rotation_
        else:
            self.__dict__.pop("rotation_", None)
        self.n_bits_ = int(pq.n_bits)
        self.mse_ = pq.mse_
        self.n_features_in_ = int(X.shape[1])
        self.labels_ = self.predict(X)
        return self

    def _check_fitted(self):
        if not hasattr(self, "coarse_centers_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet; call fit(X) first.")

    def _check_X(self, X):
        return ProductQuantizer._check_X(self, X)

    @property
    def _n_features_out(self):
        return self.codebooks_.shape[0]

    def _pq(self):
        """The residual quantizer (rebuilt from the arrays of a loaded model)."""
        if getattr(self, "pq_", None) is None:
            pq = ProductQuantizer(self.codebooks_.shape[0], self.n_bits_)
            pq.codebooks_ = self.codebooks_
            if getattr(self, "rotation_", None) is not None:
                pq.rotation_ = self.rotation_
                pq.opq = True
            pq.n_features_in_ = self.n_features_in_
            self.pq_ = pq
        return self.pq_

    def predict(self, X):
        """The inverted list (nearest coarse centre) of each row, int32 (lazy)."""
        X = self._check_X(X)
        return map_rows(X, _lists_block, np.asarray(self.coarse_centers_, dtype=np.float64))

    def encode(self, X, out=None, *, storage_options=None, overwrite=True):
        """The PQ codes of the residuals of ``X`` from their lists' centres (lazy)."""
        X = self._check_X(X)
        C = np.asarray(self.coarse_centers_, dtype=np.float64)
        residuals = map_rows(X, _residual_block, C, n_out=X.shape[1], dtype=X.dtype)
        return self._pq().encode(residuals, out, storage_options=storage_options,
                                 overwrite=overwrite)

    transform = encode

    def decode(self, lists, codes):
        """Reconstructions: the lists' centres plus the decoded residuals."""
        lists = _to_numpy(lists).astype(np.intp)
        return (np.asarray(self.coarse_centers_, np.float64)[lists]
                + self._pq().decode(_to_numpy(codes))).astype(self.codebooks_.dtype)

    def save(self, path, *, storage_options=None):
        """Save the fitted model (NPZ with JSON metadata; no pickle)."""
        from ..io.model import save_model

        self._check_fitted()
        params = {"n_lists": self.n_lists, "pq": _spec(self.pq), "coarse": _spec(self.coarse),
                  "random_state": self.random_state if isinstance(self.random_state, int)
                  else None, "progress": self.progress}
        attributes = {k: getattr(self, k) for k in self._fitted_scalars if hasattr(self, k)}
        arrays = {k: getattr(self, k) for k in self._fitted_arrays if hasattr(self, k)}
        return save_model(path, type(self).__name__, params, attributes, arrays,
                          storage_options=storage_options)

    def to_faiss(self):
        """A trained, empty ``faiss.IndexIVFPQ`` with these centres and codebooks.

        With an OPQ ``pq``, a ``faiss.IndexPreTransform(OPQMatrix, IndexIVFPQ)`` whose
        coarse centres are rotated too (the rotation is orthogonal, so rotating the
        residuals is rotating the vectors and the centres). Fill it with
        :func:`add_to_faiss`.
        """
        self._check_fitted()
        faiss = import_faiss()
        pq = self._pq()
        d, M = self.n_features_in_, self.codebooks_.shape[0]
        C = np.asarray(self.coarse_centers_, dtype=np.float64)
        R = getattr(self, "rotation_", None)
        if R is not None:
            C = C @ R
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(np.ascontiguousarray(C, dtype=np.float32))
        index = faiss.IndexIVFPQ(quantizer, d, C.shape[0], M, int(self.n_bits_))
        pq._faiss_pq_centroids(faiss, index.pq)
        index.is_trained = True
        index.precompute_table()
        if R is None:
            return index
        pre = faiss.IndexPreTransform(pq._faiss_rotation(faiss), index)
        pre.is_trained = True
        return pre


def add_to_faiss(index, X, model=None):
    """Add the rows of ``X`` to a FAISS index, one chunk at a time.

    With ``model`` (the :class:`ProductQuantizer` or :class:`IVFQuantizer` whose
    ``to_faiss()`` made ``index``), the codes are computed by dclust on the workers
    and only they travel, added with ``index.add_sa_codes``; without it each chunk is
    brought to this machine and encoded by FAISS (``index.add``). Either way memory
    holds one chunk at a time.

    Parameters
    ----------
    index : faiss.Index
    X : array-like, dask array, zarr array or path of shape (n_samples, n_features)
    model : ProductQuantizer or IVFQuantizer, optional

    Returns
    -------
    index
    """
    from ..validation import as_dask_rows

    import_faiss()
    X = as_dask_rows(X)
    if X.shape[1] != index.d:
        raise DclustValueError(f"X has {X.shape[1]} features; the index holds vectors of "
                               f"{index.d}.")
    if model is None:
        for block in _blocks(X):
            index.add(np.ascontiguousarray(block, dtype=np.float32))
        return index
    faiss = import_faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) \
        else index
    codes = model.encode(X)
    if isinstance(model, IVFQuantizer):
        lists = model.predict(X)
        width = inner.coarse_code_size()
        parts = zip(_blocks(lists), _blocks(codes))
        start = inner.ntotal
        for lb, cb in parts:
            # FAISS's IVF codes: the list number in coarse_code_size() little-endian bytes,
            # then the PQ code.
            lb = np.asarray(lb, dtype="<u8")
            head = lb.view(np.uint8).reshape(-1, 8)[:, :width]
            sa = np.ascontiguousarray(np.hstack([head, _code_bytes(cb, model.n_bits_)]))
            ids = np.arange(start, start + sa.shape[0], dtype=np.int64)
            inner.add_sa_codes(sa, ids)
            start += sa.shape[0]
    else:
        for cb in _blocks(codes):
            sa = np.ascontiguousarray(_code_bytes(cb, model.n_bits))
            inner.add_sa_codes(sa)
    if inner is not index:
        index.ntotal = inner.ntotal
    return index


def _code_bytes(codes, n_bits):
    """Codes packed as FAISS packs them: ``n_bits`` per code, little-endian bit order."""
    codes = np.asarray(codes)
    if n_bits == 8:
        return codes.astype(np.uint8)
    if n_bits == 16:
        return codes.astype("<u2").view(np.uint8).reshape(codes.shape[0], -1)
    # Other widths: a bit stream, code m at bits [m * n_bits, (m + 1) * n_bits).
    n, M = codes.shape
    bits = ((codes[:, :, None].astype(np.uint32) >> np.arange(n_bits)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(n, M * n_bits), axis=1, bitorder="little")


def _blocks(a):
    """The row blocks of ``a`` (NumPy or dask), computed one at a time."""
    if isinstance(a, np.ndarray):
        yield a
        return
    for block in a.to_delayed().ravel():
        yield np.asarray(block.compute())
