"""Static checks of the lecture notebooks: they use dclab instead of copying it, and are committed from a full run.

These checks read the committed files; running every cell is the job of
``pytest --nbval-lax notebooks/`` (the Makefile's ``test`` target).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = (
    "01_overview",
    "02_pruning",
    "03_weight_sharing",
    "04_sparse_storage",
    "05_huffman",
    "06_pipeline",
    "07_full_scale",
)
# Committed notebooks stay small enough to review and to clone quickly.
MAX_NOTEBOOK_BYTES = 1_500_000
CHECK_MARKER = "# NBVAL_CHECK_OUTPUT"
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def _notebook(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _code_cells(notebook: nbformat.NotebookNode) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _output_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(str(output.data.get("text/plain", "")))
    return "".join(parts)


def test_notebook_set_complete():
    present = sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb"))
    assert present == list(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_imports_dclab(name):
    sources = "\n".join(cell.source for cell in _code_cells(_notebook(name)))
    assert re.search(r"^from dclab import|^import dclab", sources, re.MULTILINE)


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_defines_no_functions(name):
    for cell in _code_cells(_notebook(name)):
        assert not re.search(r"^\s*(def|class)\s", cell.source, re.MULTILINE), cell.source[:200]


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_builds_no_raw_sliders(name):
    # Sliders come from dclab.widgets, whose sliders all set continuous_update=False.
    for cell in _code_cells(_notebook(name)):
        assert "Slider(" not in cell.source, cell.source[:200]
        assert "ipywidgets" not in cell.source, cell.source[:200]


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_states_run_time(name):
    first = _notebook(name).cells[0]
    assert first.cell_type == "markdown"
    match = re.search(r"\*\*Run time:\*\* (.+)", first.source)
    assert match, "the first cell must state the expected run time"
    line = match.group(1)
    assert "DCLAB_QUICK=1" in line
    assert "full run" in line
    assert re.search(r"\d+ (s|min)", line), line
    assert "TBD" not in line


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_ends_with_summary(name):
    last = _notebook(name).cells[-1]
    assert last.cell_type == "markdown"
    assert last.source.startswith("## What to remember")


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_committed_from_full_run(name):
    notebook = _notebook(name)
    cells = _code_cells(notebook)
    assert "quick mode: off" in _output_text(cells[0]), "commit the outputs of a run without DCLAB_QUICK"
    for cell in cells:
        assert cell.execution_count is not None, cell.source[:200]
        assert not [o for o in cell.get("outputs", []) if o.output_type == "error"], cell.source[:200]
    figures = sum(1 for cell in cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))
    assert figures >= 2


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_size_limit(name):
    assert (NOTEBOOK_DIR / f"{name}.ipynb").stat().st_size < MAX_NOTEBOOK_BYTES


@pytest.mark.parametrize("name", EXPECTED)
def test_checked_cells_are_stable(name):
    checked = [cell for cell in _code_cells(_notebook(name)) if cell.source.startswith(CHECK_MARKER)]
    for cell in checked:
        text = _output_text(cell)
        assert text, "a compared cell needs a stored output"
        assert not ADDRESS.search(text), "memory addresses differ between runs"
        assert not [o for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
        assert "quick" not in cell.source.lower(), "a compared cell must not depend on quick mode"
        assert "widgets.lecture_setup" not in cell.source, "a compared cell must not depend on the data mode"


def test_some_cells_are_checked():
    checked = sum(
        1 for name in EXPECTED for cell in _code_cells(_notebook(name)) if cell.source.startswith(CHECK_MARKER)
    )
    assert checked >= 7


def test_course_map_lists_notebooks():
    course = (NOTEBOOK_DIR.parent / "docs" / "course.md").read_text()
    for name in EXPECTED:
        assert f"notebooks/{name}.ipynb" in course, name
