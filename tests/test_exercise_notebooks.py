"""The unsolved exercise notebooks fail exactly at their check cells.

Every exercise notebook runs once in its own kernel, with the runner of
``dclab grade``. Each check cell must raise the stub's
``NotImplementedError`` and every other cell must run. So a student starts
from a notebook whose only failures are the exercises. One notebook also
runs under ``pytest --nbval-lax``, the way a student checks their work.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dclab.grading import EXERCISES
from dclab.grading.notebooks import NOT_IMPLEMENTED, check_cells, grade_notebooks, kernel_environment

ROOT = Path(__file__).resolve().parents[1]
EXERCISE_DIR = ROOT / "exercises"


@pytest.fixture(scope="module")
def graded_exercises():
    return {result.path.stem: result for result in grade_notebooks([EXERCISE_DIR], timeout=180)}


def test_every_notebook_graded(graded_exercises):
    assert sorted(graded_exercises) == sorted(EXERCISES)


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_exercises_score_zero(graded_exercises, notebook):
    result = graded_exercises[notebook]
    assert result.problem is None
    assert [e.exercise for e in result.exercises] == list(EXERCISES[notebook])
    assert result.points == 0
    assert {e.status for e in result.exercises} == {NOT_IMPLEMENTED}


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_only_check_cells_fail(graded_exercises, notebook):
    result = graded_exercises[notebook]
    nb = nbformat.read(EXERCISE_DIR / f"{notebook}.ipynb", as_version=4)
    failing = [error.cell for error in result.cell_errors]
    assert failing == sorted(check_cells(nb))
    assert {error.ename for error in result.cell_errors} == {"NotImplementedError"}
    for error in result.cell_errors:
        assert re.match(r"implement \w+: ", error.evalue), error.evalue


@pytest.mark.slow
def test_nbval_fails_each_check_cell():
    notebook = EXERCISE_DIR / "04_huffman.ipynb"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q",
         str(notebook)],
        capture_output=True, text=True, cwd=ROOT, env=kernel_environment(), timeout=300,
    )
    summary = completed.stdout.strip().splitlines()[-1]
    assert completed.returncode == 1, completed.stdout[-2000:]
    assert re.search(rf"\b{len(EXERCISES['04_huffman'])} failed\b", summary), summary
    assert "NotImplementedError" in completed.stdout


def test_kernel_environment_imports_this_dclab():
    env = kernel_environment()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert env["DCLAB_QUICK"] in {"1", os.environ.get("DCLAB_QUICK")}
