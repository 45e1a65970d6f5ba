"""Run exercise notebooks in fresh kernels and turn their check cells into points.

A check cell is a code cell that calls ``check_<name>(...)`` for a known
exercise. It earns its exercise one point when it runs without an error and
prints ``name: N/N checks passed``. Each notebook runs top to bottom in its
own kernel (nbclient) with a time limit for the whole notebook. When the
limit is reached or the kernel dies, the exercises not yet graded get 0 and
the next notebook runs.

The exercises a notebook should contain come from
:data:`dclab.grading.EXERCISES` (by file name, so a student who deletes a
check cell loses that point) plus any other check cell found in it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from dclab.grading import EXERCISES, exercise_names

__all__ = [
    "ExerciseResult",
    "CellError",
    "NotebookResult",
    "find_notebooks",
    "check_cells",
    "run_notebook",
    "grade_notebook",
    "grade_notebooks",
    "kernel_environment",
]

log = logging.getLogger(__name__)

_CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")

PASSED = "passed"
FAILED = "failed"
NOT_IMPLEMENTED = "not implemented"
NOT_RUN = "not run"
MISSING = "missing"


@dataclass(frozen=True)
class ExerciseResult:
    """The grade of one exercise.

    Attributes:
        exercise: the exercise name (``magnitude_mask``).
        points: 1 when its check cell passed, else 0.
        status: ``passed``, ``failed``, ``not implemented``, ``not run``
            (time limit or kernel death before its cell) or ``missing`` (no check cell).
        detail: the first line of the error, or why the cell did not run.
    """

    exercise: str
    points: int
    status: str
    detail: str = ""


@dataclass(frozen=True)
class CellError:
    """An error raised by one code cell: its index, the exception name and the first line of its message."""

    cell: int
    ename: str
    evalue: str


@dataclass
class NotebookResult:
    """The grade of one notebook.

    Attributes:
        path: the notebook file.
        student: the name of the folder that contains the notebook.
        exercises: one result per exercise, in notebook order.
        cell_errors: every cell that raised, check cells included.
        problem: why the run stopped early (time limit, dead kernel,
            unreadable file), or None.
        seconds: wall-clock time of the run.
    """

    path: Path
    student: str
    exercises: list[ExerciseResult] = field(default_factory=list)
    cell_errors: list[CellError] = field(default_factory=list)
    problem: str | None = None
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return sum(result.points for result in self.exercises)

    @property
    def max_points(self) -> int:
        return len(self.exercises)


def find_notebooks(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of notebooks.

    Folders are searched recursively for ``*.ipynb``, skipping
    ``.ipynb_checkpoints``.

    Raises:
        FileNotFoundError: a path does not exist, or no notebook was found.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist; give notebooks or folders that contain them")
    if not found:
        raise FileNotFoundError(f"no .ipynb files found in {', '.join(str(p) for p in paths)}")
    return sorted(dict.fromkeys(found))


def check_cells(notebook) -> dict[int, list[str]]:
    """Return code cell index -> the exercises whose checks that cell calls."""
    known = set(exercise_names())
    cells: dict[int, list[str]] = {}
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        names = [name for name in _CHECK_CALL.findall(cell.source) if name in known]
        if names:
            cells[index] = list(dict.fromkeys(names))
    return cells


def kernel_environment() -> dict[str, str]:
    """Return the environment for grading kernels: this one, quick mode on, this dclab importable first."""
    env = dict(os.environ)
    env.setdefault("DCLAB_QUICK", "1")
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class _Run:
    """Outcome of each code cell of one notebook run."""

    errors: dict[int, CellError] = field(default_factory=dict)
    stdout: dict[int, str] = field(default_factory=dict)
    executed: set[int] = field(default_factory=set)
    problem: str | None = None


def _record(run: _Run, index: int, cell) -> None:
    run.executed.add(index)
    text = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            text.append(output.get("text", ""))
        elif output.get("output_type") == "error":
            evalue = str(output.get("evalue", "")).strip().splitlines()
            run.errors[index] = CellError(index, str(output.get("ename", "")), evalue[0] if evalue else "")
    run.stdout[index] = "".join(text)


def run_notebook(notebook, workdir: Path, timeout: float, env: dict[str, str] | None = None) -> _Run:
    """Execute every code cell of ``notebook`` in a fresh ``python3`` kernel, in order.

    Errors do not stop the run, so later exercises are still graded. The run
    stops when ``timeout`` seconds (for the whole notebook, kernel start
    included) are used up or the kernel dies, and ``problem`` then names the reason.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    run = _Run()
    start = time.monotonic()
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=max(1, int(timeout)), allow_errors=True,
        record_timing=False, shutdown_kernel="immediate", startup_timeout=max(1, int(timeout)),
    )
    current = None
    try:
        # The kernel's own stderr (transport warnings) would interleave with the report, so it is dropped.
        with client.setup_kernel(cwd=str(workdir), env=env or kernel_environment(), stderr=subprocess.DEVNULL):
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code":
                    continue
                remaining = timeout - (time.monotonic() - start)
                if remaining < 1:
                    run.problem = f"timed out after {timeout:g} s, before cell {index}"
                    break
                current = index
                client.timeout = max(1, int(remaining))
                client.execute_cell(cell, index)
                _record(run, index, cell)
    except CellTimeoutError:
        run.problem = f"timed out after {timeout:g} s in cell {current}"
    except DeadKernelError:
        run.problem = f"the kernel died in cell {current}"
    except RuntimeError as error:
        # jupyter_client raises RuntimeError when the kernel does not start in time.
        run.problem = f"the kernel failed: {error}"
    return run


def _expected_exercises(path: Path, cells: dict[int, list[str]]) -> list[str]:
    found = [name for names in cells.values() for name in names]
    expected = list(EXERCISES.get(path.stem, ()))
    return expected + [name for name in dict.fromkeys(found) if name not in expected]


def _passed_line(name: str, stdout: str) -> bool:
    return re.search(rf"^{re.escape(name)}: (\d+)/\1 checks passed$", stdout, re.MULTILINE) is not None


def _grade_cell(name: str, index: int, run: _Run) -> ExerciseResult:
    if index not in run.executed:
        return ExerciseResult(name, 0, NOT_RUN, run.problem or "the cell did not run")
    error = run.errors.get(index)
    if error is not None:
        if error.ename == "NotImplementedError":
            return ExerciseResult(name, 0, NOT_IMPLEMENTED)
        return ExerciseResult(name, 0, FAILED, f"{error.ename}: {error.evalue}")
    if not _passed_line(name, run.stdout.get(index, "")):
        return ExerciseResult(name, 0, FAILED, f"the cell did not print '{name}: N/N checks passed'")
    return ExerciseResult(name, 1, PASSED)


def grade_notebook(path: str | Path, timeout: float = 120.0, env: dict[str, str] | None = None) -> NotebookResult:
    """Run one notebook in its own kernel and grade its check cells (1 point per passing check).

    Args:
        path: the notebook.
        timeout: seconds for the whole notebook, kernel start included.
        env: the kernel's environment (default: :func:`kernel_environment`).

    Returns:
        The :class:`NotebookResult`; a notebook that cannot be read gets 0
        for the exercises that its file name implies, with ``problem`` set.
    """
    path = Path(path)
    result = NotebookResult(path, path.resolve().parent.name)
    start = time.monotonic()
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:  # nbformat raises ValueError subclasses on bad JSON
        result.problem = f"cannot read the notebook: {error}"
        result.exercises = [ExerciseResult(name, 0, NOT_RUN, result.problem) for name in EXERCISES.get(path.stem, ())]
        return result

    cells = check_cells(notebook)
    run = run_notebook(notebook, path.resolve().parent, timeout, env)
    result.problem = run.problem
    result.cell_errors = [run.errors[index] for index in sorted(run.errors)]

    graded: dict[str, ExerciseResult] = {}
    for index, names in cells.items():
        for name in names:
            if name not in graded or graded[name].points == 0:
                graded[name] = _grade_cell(name, index, run)
    for name in _expected_exercises(path, cells):
        result.exercises.append(graded.get(name, ExerciseResult(name, 0, MISSING, "no check cell calls its check")))
    result.seconds = time.monotonic() - start
    log.info("graded %s: %d/%d in %.1f s", path, result.points, result.max_points, result.seconds)
    return result


def grade_notebooks(paths: Sequence[str | Path], timeout: float = 120.0,
                    env: dict[str, str] | None = None) -> list[NotebookResult]:
    """Grade every notebook found in ``paths`` (files or folders), one kernel each, in sorted order."""
    return [grade_notebook(path, timeout, env) for path in find_notebooks(paths)]
