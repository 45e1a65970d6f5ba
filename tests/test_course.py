"""Tests of dclab.course: exercises generated from solutions, and the notebooks' structure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dclab import cli
from dclab.course import (
    BEGIN_MARKER,
    END_MARKER,
    SolutionMarkerError,
    make_exercise,
    make_exercises,
    strip_solution,
)
from dclab.grading import EXERCISES
from dclab.grading.notebooks import check_cells

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISE_DIR = ROOT / "exercises"

SOLVED = f'''def area(width, height):
    """Return the area."""
    {BEGIN_MARKER}
    product = width * height
    return product
    {END_MARKER}
'''


def _notebook(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python", "version": "3.11.7"}, "widgets": {"state": {}}}
    for index, source in enumerate(sources):
        cell = nbformat.v4.new_code_cell(source)
        cell.id = f"cell-{index}"
        cell.execution_count = index + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        nb.cells.append(cell)
    return nb


# ---------------------------------------------------------------- strip_solution


def test_strip_replaces_block_with_stub():
    stripped = strip_solution(SOLVED)
    assert "product" not in stripped
    assert BEGIN_MARKER not in stripped
    assert END_MARKER not in stripped
    assert '    raise NotImplementedError("implement area: ' in stripped
    assert stripped.startswith('def area(width, height):\n    """Return the area."""\n')


def test_strip_keeps_indentation():
    source = f"class Shape:\n    def area(self):\n        {BEGIN_MARKER}\n        return 1\n        {END_MARKER}\n"
    stripped = strip_solution(source)
    assert '\n        raise NotImplementedError("implement area: ' in stripped


def test_strip_names_enclosing_function():
    source = f"def first():\n    return 1\n\n\ndef second():\n    {BEGIN_MARKER}\n    return 2\n    {END_MARKER}\n"
    assert 'implement second: ' in strip_solution(source)


def test_strip_without_function():
    source = f"{BEGIN_MARKER}\nanswer = 42\n{END_MARKER}\n"
    assert strip_solution(source).startswith('raise NotImplementedError("implement this cell: ')


def test_strip_two_blocks():
    source = SOLVED + "\n\n" + SOLVED.replace("area", "volume")
    stripped = strip_solution(source)
    assert stripped.count("raise NotImplementedError") == 2
    assert "implement volume: " in stripped


def test_strip_without_markers_unchanged():
    assert strip_solution("x = 1\nprint(x)") == "x = 1\nprint(x)"


@pytest.mark.parametrize("source, pattern", [
    (f"def f():\n    {BEGIN_MARKER}\n    return 1\n", "without"),
    (f"def f():\n    return 1\n    {END_MARKER}\n", "without"),
    (f"def f():\n    {BEGIN_MARKER}\n    {BEGIN_MARKER}\n    {END_MARKER}\n", "inside another"),
])
def test_strip_unbalanced_markers(source, pattern):
    with pytest.raises(SolutionMarkerError, match=pattern):
        strip_solution(source, where="cell 3")


# ---------------------------------------------------------------- make_exercise(s)


def test_exercise_clears_outputs_and_metadata():
    exercise = make_exercise(_notebook(SOLVED, "print(area(6, 7))"))
    for cell in exercise.cells:
        assert cell.outputs == []
        assert cell.execution_count is None
        assert "execution" not in cell.metadata
    assert exercise.metadata == {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                 "language_info": {"name": "python"}}
    assert [cell.id for cell in exercise.cells] == ["cell-0", "cell-1"]


def test_exercise_leaves_solution_unchanged():
    solution = _notebook(SOLVED)
    make_exercise(solution)
    assert "product" in solution.cells[0].source
    assert solution.cells[0].outputs


def test_make_exercises_deterministic(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(_notebook(SOLVED), solutions / "01_area.ipynb")
    first = make_exercises(solutions, tmp_path / "a")
    make_exercises(solutions, tmp_path / "b")
    assert first == [tmp_path / "a" / "01_area.ipynb"]
    assert (tmp_path / "a" / "01_area.ipynb").read_bytes() == (tmp_path / "b" / "01_area.ipynb").read_bytes()
    assert make_exercises(solutions, tmp_path / "a") == []  # nothing to rewrite


def test_make_exercises_matches_nbformat_write(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(_notebook(SOLVED), solutions / "01_area.ipynb")
    make_exercises(solutions, tmp_path / "out")
    reference = tmp_path / "reference.ipynb"
    nbformat.write(make_exercise(nbformat.read(solutions / "01_area.ipynb", as_version=4)), reference)
    assert (tmp_path / "out" / "01_area.ipynb").read_bytes() == reference.read_bytes()


def test_make_exercises_check_reports_stale(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(_notebook(SOLVED), solutions / "01_area.ipynb")
    out = tmp_path / "out"
    assert make_exercises(solutions, out, check=True) == [out / "01_area.ipynb"]
    assert not out.exists()
    make_exercises(solutions, out)
    assert make_exercises(solutions, out, check=True) == []


def test_make_exercises_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .ipynb files"):
        make_exercises(tmp_path, tmp_path / "out")


def test_make_exercises_names_bad_notebook(tmp_path):
    nbformat.write(_notebook(f"def f():\n    {BEGIN_MARKER}\n    return 1\n"), tmp_path / "broken.ipynb")
    with pytest.raises(SolutionMarkerError, match=r"broken\.ipynb: cell 0 \(cell-0\)"):
        make_exercises(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- the committed notebooks


def test_committed_exercises_current():
    stale = make_exercises(SOLUTIONS, EXERCISE_DIR, check=True)
    assert stale == [], "exercises/ is stale: run `python -m dclab.course make-exercises`"


def test_no_extra_exercise_notebooks():
    assert sorted(p.name for p in EXERCISE_DIR.glob("*.ipynb")) == sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_check_cells_match_registry(notebook):
    nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    found = [name for names in check_cells(nb).values() for name in names]
    assert found == list(EXERCISES[notebook])


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_solutions_structure(notebook):
    nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    checks = check_cells(nb)
    for index in checks:
        source = nb.cells[index].source
        assert source.startswith("# NBVAL_CHECK_OUTPUT\n"), f"cell {index} should compare its output under nbval"
        # The solution is stored with the passing line, so it reads well unexecuted.
        text = "".join(output.get("text", "") for output in nb.cells[index].outputs)
        assert re.fullmatch(r"\w+: (\d+)/\1 checks passed\n", text), text
    defining = [cell for cell in nb.cells if cell.cell_type == "code" and BEGIN_MARKER in cell.source]
    assert len(defining) == len(checks)


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_exercise_hides_solution(notebook):
    solution = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
    exercise = nbformat.read(EXERCISE_DIR / f"{notebook}.ipynb", as_version=4)
    for solved, unsolved in zip(solution.cells, exercise.cells):
        assert BEGIN_MARKER not in unsolved.source
        if BEGIN_MARKER in solved.source:
            body = solved.source.split(BEGIN_MARKER)[1].split(END_MARKER)[0].strip()
            assert body not in unsolved.source
        if unsolved.cell_type == "code":
            assert unsolved.outputs == []
            assert unsolved.execution_count is None


@pytest.mark.parametrize("notebook", sorted(EXERCISES))
def test_notebooks_have_no_addresses(notebook):
    text = (SOLUTIONS / f"{notebook}.ipynb").read_text(encoding="utf-8")
    assert not re.search(r"0x[0-9a-f]{6,}", text)
    assert "/work/" not in text
    assert "/home/" not in text


# ---------------------------------------------------------------- command line


def test_module_command(tmp_path):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(_notebook(SOLVED), solutions / "01_area.ipynb")
    command = [sys.executable, "-m", "dclab.course", "make-exercises", "--solutions", str(solutions),
               "--out", str(tmp_path / "out")]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "1 exercise notebook(s) written" in completed.stdout
    checked = subprocess.run(command + ["--check"], capture_output=True, text=True, cwd=ROOT)
    assert checked.returncode == 0
    assert "up to date" in checked.stdout


def test_cli_command_check_stale(tmp_path, capsys):
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    nbformat.write(_notebook(SOLVED), solutions / "01_area.ipynb")
    status = cli.main(["make-exercises", "--solutions", str(solutions), "--out", str(tmp_path / "out"), "--check"])
    assert status == 1
    assert "stale:" in capsys.readouterr().out


def test_cli_command_missing_folder(tmp_path, capsys):
    status = cli.main(["make-exercises", "--solutions", str(tmp_path / "none"), "--out", str(tmp_path / "out")])
    assert status == 1
    assert "no .ipynb files" in capsys.readouterr().err
