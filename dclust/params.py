"""Estimator parameters, declared once: validation, CLI flags and help, checkpoints.

Each estimator lists its parameters as :class:`Param` objects (in the spirit of
scikit-learn's ``_parameter_constraints``, with the doc line beside the constraint).
From that one list come:

* the validation at ``fit`` (:func:`check_params`), with uniform messages naming the
  value and what would be accepted;
* the ``dclust fit ...`` flags, their types, choices, defaults and help
  (:func:`add_arguments`, :func:`from_arguments`), so a parameter cannot drift between
  Python and the shell;
* what a checkpoint compares on resume (:func:`result_params`): the parameters that
  change the result, and not those that only say where or how it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import numbers
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .exceptions import DclustValueError

__all__ = ["Param", "check_params", "add_arguments", "from_arguments", "result_params",
           "array_digest", "COMMON"]

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Param:
    """One estimator parameter.

    Parameters
    ----------
    name : str
    doc : str
        One line: what it does (the CLI's help).
    kind : {"int", "float", "bool", "str", "choice", "seed", "path", "dict", "any"}
        ``"choice"`` takes one of ``options``; ``"seed"`` is scikit-learn's
        ``random_state``; ``"any"`` is checked by the estimator itself.
    low, high : float, optional
        Bounds of a number; ``low_open`` / ``high_open`` exclude them.
    options : tuple, optional
        Accepted values of a ``"choice"`` (also accepted besides a number or array).
    none : bool
        ``None`` is accepted.
    array : bool
        An array is accepted (an ``init`` array, cluster weights).
    result : bool
        Whether it changes the fitted result (checkpoints compare those).
    flag : str or None
        The CLI option (default ``--name-with-dashes``); ``None``: no option.
    short : str, optional
        A short CLI option (``-k``).
    cli_type : callable, optional
        argparse ``type`` (default from ``kind``).
    metavar : str, optional
    required : bool
        Required on the command line.
    """

    name: str
    doc: str
    kind: str = "any"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    options: tuple | None = None
    none: bool = False
    array: bool = False
    result: bool = True
    flag: str | None = ""
    short: str | None = None
    cli_type: Callable | None = None
    metavar: str | None = None
    required: bool = False

    # ---- validation --------------------------------------------------------------
    def expected(self) -> str:
        """What the parameter accepts, in words (for messages)."""
        parts = []
        if self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            lo = None if self.low is None else (">" if self.low_open else ">=") + f" {self.low:g}"
            hi = None if self.high is None else ("<" if self.high_open else "<=") + f" {self.high:g}"
            parts.append(" and ".join([noun + (f" {lo}" if lo else "")] + ([hi] if hi else [])))
        elif self.kind == "bool":
            parts.append("True or False")
        elif self.kind == "seed":
            parts.append("an integer >= 0, a numpy Generator or RandomState")
        elif self.kind == "path":
            parts.append("a path or URL")
        elif self.kind == "dict":
            parts.append("a dict")
        elif self.kind == "str":
            parts.append("a string")
        if self.options:
            listed = ", ".join(repr(o) for o in self.options)
            parts.insert(0, f"one of {listed}" if len(self.options) > 1 else repr(self.options[0]))
        if self.array:
            parts.append("an array")
        if self.none:
            parts.append("None")
        if len(parts) > 1:
            return ", ".join(parts[:-1]) + " or " + parts[-1]
        return parts[0] if parts else "a valid value"

    def check(self, value):
        """``value`` if acceptable, else a :class:`DclustValueError` naming it."""
        if value is None:
            if self.none:
                return value
            raise self._error(value)
        if self.options is not None and _is_option(value, self.options):
            return value
        if self.array and (isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "__array__")):
            return value
        kind = self.kind
        ok = True
        if kind == "choice":
            ok = False
        elif kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and not np.isnan(value)
        elif kind == "bool":
            ok = isinstance(value, (bool, np.bool_))
        elif kind == "seed":
            ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0) \
                or isinstance(value, (np.random.Generator, np.random.RandomState))
        elif kind == "path":
            ok = isinstance(value, (str, os.PathLike))
        elif kind == "dict":
            ok = isinstance(value, dict)
        elif kind == "str":
            ok = isinstance(value, str)
        if ok and kind in ("int", "float"):
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                ok = False
            if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
                ok = False
        if not ok:
            raise self._error(value)
        return value

    def _error(self, value):
        return DclustValueError(f"{self.name}={value!r} is not valid; expected {self.expected()} "
                                f"({self.doc}).")

    # ---- command line -------------------------------------------------------------
    def option(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    def add_to(self, parser, default=_NO_DEFAULT):
        """Add this parameter's option to an argparse parser or group."""
        flags = [f for f in (self.short, self.option()) if f]
        kw: dict[str, Any] = {"dest": self.name, "help": self.doc}
        if self.kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif self.kind in ("choice", "any", "str") and self.options:
            kw["choices"] = self.options
        else:
            kw["type"] = self.cli_type or _CLI_TYPES.get(self.kind, str)
            if self.options and self.cli_type is None:
                kw["type"] = _or_options(kw["type"], self.options)
        if self.metavar:
            kw["metavar"] = self.metavar
        if self.required:
            kw["required"] = True
        elif default is not _NO_DEFAULT:
            kw["default"] = default
            if default is not None and self.kind != "bool" and "(default" not in self.doc:
                kw["help"] = f"{self.doc} (default: {default})"
        parser.add_argument(*flags, **kw)


def _is_option(value, options):
    """Whether ``value`` is one of ``options``. Booleans match only booleans: ``1 == True``
    in Python, but ``semi_supervised=1`` is not the option ``True``."""
    if isinstance(value, (np.ndarray, list, tuple, dict)):
        return False
    for o in options:
        if isinstance(o, (bool, np.bool_)) or isinstance(value, (bool, np.bool_)):
            if isinstance(o, (bool, np.bool_)) and isinstance(value, (bool, np.bool_)) \
                    and bool(o) == bool(value):
                return True
        elif isinstance(o, str) != isinstance(value, str):
            continue
        elif value == o:
            return True
    return False


def _cli_int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _cli_float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _or_options(convert, options):
    def parse(text):
        for o in options:
            if isinstance(o, str) and text == o:
                return o
        return convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


_CLI_TYPES = {"int": _cli_int, "float": _cli_float, "seed": _cli_int, "path": str, "str": str}


# ---- what estimators call ----------------------------------------------------------------
def check_params(estimator, params=None):
    """Validate every declared parameter of ``estimator``; raise on the first bad one."""
    for p in params or estimator._params:
        p.check(getattr(estimator, p.name))


def declared(cls) -> dict:
    """``{name: Param}`` of an estimator class."""
    return {p.name: p for p in cls._params}


def add_arguments(parser, cls, names=None, *, exclude=(), types=None):
    """Add the options of ``cls``'s parameters (``names``, default all with a flag),
    with the estimator's defaults, to an argparse parser or group. ``types`` maps a
    parameter to the argparse type the shell spells it with."""
    defaults = cls().get_params()
    types = types or {}
    for p in cls._params:
        if p.option() is None or p.name in exclude or (names is not None and p.name not in names):
            continue
        if p.name in types:
            p = dataclasses.replace(p, cli_type=types[p.name], kind="str", options=None)
        p.add_to(parser, defaults.get(p.name))


def from_arguments(cls, args, **overrides):
    """An unfitted ``cls`` from parsed options (those it declares), plus ``overrides``."""
    kw = {p.name: getattr(args, p.name) for p in cls._params
          if p.option() is not None and hasattr(args, p.name)}
    kw.update(overrides)
    return cls(**kw)


def result_params(estimator, **effective) -> dict:
    """The parameters that determine the result, as JSON values (arrays as digests).

    ``effective`` replaces declared values with what the fit actually used (an
    ``n_init`` ignored with an init array, a checked ``n_clusters``...).
    """
    out = {}
    for p in estimator._params:
        if not p.result or p.kind == "seed":
            continue
        v = effective.get(p.name, getattr(estimator, p.name))
        out[p.name] = _jsonable_param(v)
    for k, v in effective.items():
        if k not in out:
            out[k] = _jsonable_param(v)
    return out


def _jsonable_param(v):
    if isinstance(v, (np.ndarray, list, tuple)) and not isinstance(v, str):
        return array_digest(v)
    if callable(v):
        return f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', repr(v))}"
    if isinstance(v, np.generic):
        return v.item()
    return v


def array_digest(a) -> str:
    """A short, stable digest of an array parameter (an init array), for fingerprints."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
    h = hashlib.sha1(str(a.shape).encode())
    h.update(a.tobytes())
    return "sha1:" + h.hexdigest()


# ---- parameters every estimator has -----------------------------------------------------
COMMON = {
    "random_state": Param(
        "random_state", "random seed; the same seed and chunking give the same model", "seed",
        none=True, flag="--seed", metavar="S"),
    "cache": Param(
        "cache", "keep the data in the workers' memory during the fit: auto (when it takes at "
        "most half of it), memory, or none (stream it from storage every pass)", "choice",
        options=("auto", "memory", "none"), result=False),
    "split_every": Param(
        "split_every", "fan-in of the reduction tree", "int", low=2, none=True, metavar="N"),
    "progress": Param("progress", "show a progress line for long fits", "bool", result=False,
                      flag=None),
    "checkpoint": Param(
        "checkpoint", "save the state of the fit to this file after every iteration "
        "(atomically), so that an interrupted fit can be resumed", "path", none=True,
        result=False, metavar="CKPT.npz"),
    "resume": Param(
        "resume", "continue the interrupted fit saved at the checkpoint (a missing file starts "
        "a new fit); the result is the same as without the interruption", "bool", result=False),
    "storage_options": Param("storage_options", "fsspec options of a checkpoint URL", "dict",
                             none=True, result=False, flag=None),
    # Checked by dclust.runtime.device.check_device (case, 'cuda:0' advice); "any" here.
    "device": Param(
        "device", "where the kernels run: cuda (the workers' GPUs, needs CuPy), cpu, or auto "
        "(GPUs when every worker has one)", "any", options=("auto", "cpu", "cuda"),
        result=False),
}


def common(*names):
    """The shared declarations of ``names``, in that order."""
    return tuple(COMMON[n] for n in names)
