"""Exceptions and warnings raised by dclust.

Every error says what is wrong, the value given, why it matters and how to fix it.
"""


class DclustError(Exception):
    """Base class of every error dclust raises on purpose."""


class DclustValueError(DclustError, ValueError):
    """An argument or the data has a value dclust cannot work with."""


class DclustTypeError(DclustError, TypeError):
    """An argument or the data has a type dclust cannot work with."""


class DataError(DclustValueError):
    """The data itself is unusable (non-finite values, a corrupted chunk, ...)."""


class StorageError(DclustError, OSError):
    """A dataset, labels store or model file cannot be read or written."""


class ModelFormatError(DclustValueError):
    """A file is not a dclust model, or is one from an unsupported format version."""


class ClusterConnectionError(DclustError, ConnectionError):
    """The Dask scheduler cannot be reached, or the connection was lost."""


class EmptyClusterWarning(UserWarning):
    """A cluster lost all its points and its centre was moved to a far-away point."""


class ProbeRecallWarning(UserWarning):
    """A probe-limited fit (``KMeans(algorithm="hierarchical")``) assigns a sample of rows
    measurably worse than the exact nearest centre would: its inertia is likely several
    percent above exact Lloyd's."""


def _make_not_fitted_error():
    # Built on first use: it subclasses scikit-learn's NotFittedError (so code written
    # for scikit-learn catches it), and importing scikit-learn costs seconds that worker
    # processes, which never raise it, should not pay.
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

    class NotFittedError(DclustError, _SklearnNotFittedError):
        """An estimator was used before ``fit``.

        Also a ``sklearn.exceptions.NotFittedError``, hence a ``ValueError`` and an
        ``AttributeError``.
        """

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def _make_convergence_warning():
    # A subclass of scikit-learn's, so that users' warning filters and
    # ``pytest.warns(sklearn.exceptions.ConvergenceWarning)`` catch dclust's too; built on
    # first use for the same reason as NotFittedError.
    from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning

    class ConvergenceWarning(_SklearnConvergenceWarning):
        """An iterative algorithm stopped at ``max_iter`` before meeting its tolerance, or
        found fewer distinct clusters than asked for.

        Also a ``sklearn.exceptions.ConvergenceWarning`` (hence a ``UserWarning``).
        """

    ConvergenceWarning.__module__ = __name__
    ConvergenceWarning.__qualname__ = "ConvergenceWarning"
    return ConvergenceWarning


_LAZY = {"NotFittedError": _make_not_fitted_error, "ConvergenceWarning": _make_convergence_warning}


def __getattr__(name):
    if name in _LAZY:
        cls = _LAZY[name]()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
