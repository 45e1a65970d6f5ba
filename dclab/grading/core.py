"""The machinery shared by every check: cases, comparisons and the report line.

A check runs the student's function on a list of :class:`Case` objects. Each
case builds fresh arguments twice, once for the reference and once for the
student, so a function that modifies its inputs in place cannot change the
expected value or the next case. A case's ``verify`` compares the received
value with the reference's and returns ``None`` when it is correct or a
message explaining what differs.

Every check prints exactly one line, ``NAME: P/N checks passed``, then
raises ``AssertionError`` on the first failing case (input, expected,
received and a hint). ``NotImplementedError`` from an unsolved stub is
re-raised unchanged, so the notebook shows the stub's own message.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Case",
    "Mismatch",
    "run_check",
    "as_array",
    "compare_arrays",
    "compare_scalar",
    "describe",
]

# Maximum length of one rendered value in a failure message.
_MAX_SHOWN_CHARS = 400


class Mismatch(Exception):
    """A received value differs from the expected one. The message describes the difference."""


@dataclass(frozen=True)
class Case:
    """One input of a check.

    Attributes:
        label: what the case tests, in a few words ("tie at the threshold").
        args: positional arguments; copied with ``copy.deepcopy`` for every call.
        hint: what a function failing this case most likely got wrong.
        build: optional function returning fresh arguments, for inputs that
            do not deep-copy well (torch modules under pruning); replaces ``args``.
        shown: optional text shown as the input instead of ``args``.
    """

    label: str
    args: tuple = ()
    hint: str = ""
    build: Callable[[], tuple] | None = None
    shown: str | None = None

    def make_args(self) -> tuple:
        """Return a fresh copy of the arguments."""
        if self.build is not None:
            return self.build()
        return copy.deepcopy(self.args)

    def describe_input(self, names: Sequence[str]) -> str:
        if self.shown is not None:
            return self.shown
        return ", ".join(f"{name}={describe(value)}" for name, value in zip(names, self.args))


@dataclass
class _Failure:
    case: Case
    expected: str
    received: str
    reason: str
    error: BaseException | None = field(default=None)


def _is_tensor(value: Any) -> bool:
    # Checked by type name, so that numpy-only exercises never import torch (seconds per kernel).
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def describe(value: Any) -> str:
    """Render a value for a failure message: arrays and tensors as nested lists, cut at a few hundred characters."""
    if _is_tensor(value):
        text = f"tensor({value.detach().cpu().tolist()}, dtype={value.dtype})"
    elif isinstance(value, np.ndarray):
        text = f"array({value.tolist()}, dtype={value.dtype})"
    elif isinstance(value, tuple):
        text = "(" + ", ".join(describe(item) for item in value) + ")"
    else:
        text = repr(value)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[: _MAX_SHOWN_CHARS - 5] + " ...]"
    return text


def as_array(value: Any, what: str = "the result") -> np.ndarray:
    """Convert a tensor, array, list or number into a numpy array.

    Raises:
        Mismatch: the value cannot be read as an array of numbers.
    """
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise Mismatch(f"{what} is a {type(value).__name__}, which is not an array of numbers ({error})") from None
    if array.dtype == object:
        raise Mismatch(f"{what} is a {type(value).__name__}, which is not an array of numbers")
    return array


def compare_arrays(
    expected: Any, received: Any, *, what: str = "the result", exact: bool = False, atol: float = 1e-6,
    rtol: float = 1e-5, check_shape: bool = True,
) -> None:
    """Raise :class:`Mismatch` unless ``received`` has the expected shape and values.

    Dtypes are not compared: a float64 answer to a float32 question is
    correct. Booleans compare as 0 and 1.

    Args:
        exact: compare values exactly (integers, masks) instead of with ``atol`` and ``rtol``.
        check_shape: compare shapes; when False only the number of elements must match.
    """
    want = as_array(expected, "the expected value")
    got = as_array(received, what)
    if not np.issubdtype(got.dtype, np.number) and got.dtype != np.bool_:
        raise Mismatch(f"{what} has dtype {got.dtype}; numbers are expected")
    if check_shape and got.shape != want.shape:
        raise Mismatch(f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if got.size != want.size:
        raise Mismatch(f"{what} has {got.size} elements, expected {want.size}")
    want = want.reshape(-1).astype(np.float64)
    got = got.reshape(-1).astype(np.float64)
    if exact:
        wrong = np.flatnonzero(want != got)
    else:
        wrong = np.flatnonzero(~np.isclose(got, want, atol=atol, rtol=rtol))
    if wrong.size:
        first = int(wrong[0])
        raise Mismatch(
            f"{what} differs at {wrong.size} of {want.size} positions; "
            f"first at flat index {first}: expected {want[first]!r}, received {got[first]!r}"
        )


def compare_scalar(expected: float, received: Any, *, what: str = "the result", atol: float = 1e-9,
                   rtol: float = 1e-6) -> None:
    """Raise :class:`Mismatch` unless ``received`` is a number close to ``expected``."""
    try:
        got = float(received)
    except (TypeError, ValueError):
        raise Mismatch(f"{what} is a {type(received).__name__}, expected a single number") from None
    if not np.isclose(got, expected, atol=atol, rtol=rtol):
        raise Mismatch(f"{what} is {got!r}, expected {expected!r}")


Verify = Callable[[tuple, Any, Any], None]


def run_check(
    name: str,
    function: Callable,
    cases: Sequence[Case],
    reference: Callable,
    verify: Verify,
    arg_names: Sequence[str],
) -> None:
    """Grade ``function`` on ``cases``: print ``NAME: P/N checks passed``, raise on the first failure.

    Args:
        name: the exercise name, as in the notebook.
        function: the student's function.
        cases: the inputs.
        reference: the correct implementation; called with its own copy of each case's arguments.
        verify: ``verify(args, expected, received)`` raises :class:`Mismatch` when
            ``received`` is wrong. ``args`` is an unused copy of the inputs.
        arg_names: the function's parameter names, for failure messages.

    Raises:
        NotImplementedError: from ``function``, unchanged (an unsolved exercise).
        AssertionError: at least one case failed; the message shows the first.
        TypeError: ``function`` is not callable.
    """
    if not callable(function):
        raise TypeError(f"check_{name} needs your function, got {function!r}; call check_{name}({name})")
    failures: list[_Failure] = []
    for case in cases:
        expected = reference(*case.make_args())
        try:
            received = function(*case.make_args())
        except NotImplementedError:
            print(f"{name}: 0/{len(cases)} checks passed")
            raise
        except Exception as error:  # noqa: BLE001 - any error in student code is a failed case
            failures.append(_Failure(case, describe(expected), "(no value)",
                                     f"raised {type(error).__name__}: {error}", error))
            continue
        try:
            verify(case.make_args(), expected, received)
        except Mismatch as mismatch:
            failures.append(_Failure(case, describe(expected), describe(received), str(mismatch)))

    passed = len(cases) - len(failures)
    print(f"{name}: {passed}/{len(cases)} checks passed")
    if failures:
        first = failures[0]
        raise AssertionError(_failure_message(name, first, arg_names, len(failures))) from first.error


def _failure_message(name: str, failure: _Failure, arg_names: Sequence[str], count: int) -> str:
    case = failure.case
    lines = [
        f"{name} failed {count} check(s); the first one is {case.label!r}.",
        f"  input:    {case.describe_input(arg_names)}",
        f"  expected: {failure.expected}",
        f"  received: {failure.received}",
        f"  problem:  {failure.reason}",
    ]
    if case.hint:
        lines.append(f"  hint:     {case.hint}")
    return "\n".join(lines)
