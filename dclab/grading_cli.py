"""The ``dclab grade`` command: run exercise notebooks and print points per exercise.

Usage::

    dclab grade submissions/ --timeout 120 --format table|csv|json

Every notebook runs in its own kernel (see :mod:`dclab.grading.notebooks`).
The table and CSV list one row per exercise and one ``total`` row per
notebook; the table ends with the points of every student (the folder that
contains the notebooks). Importing this module registers the command with
:mod:`dclab.cli`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from dclab.cli import register_command

__all__ = ["format_table", "format_csv", "format_json", "student_totals", "add_grade_parser"]

FORMATS = ("table", "csv", "json")


def _shown_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def student_totals(results: Sequence) -> dict[str, tuple[int, int]]:
    """Return student -> (points, max points) over all of that student's notebooks, in first-seen order."""
    totals: dict[str, tuple[int, int]] = {}
    for result in results:
        points, maximum = totals.get(result.student, (0, 0))
        totals[result.student] = (points + result.points, maximum + result.max_points)
    return totals


def format_table(results: Sequence) -> str:
    """Return a plain-text table: one row per exercise, a total per notebook, a total per student."""
    rows = [("student", "notebook", "exercise", "points", "status")]
    for result in results:
        notebook = _shown_path(result.path)
        for exercise in result.exercises:
            status = exercise.status if not exercise.detail else f"{exercise.status}: {exercise.detail}"
            rows.append((result.student, notebook, exercise.exercise, f"{exercise.points}/1", status))
        rows.append((result.student, notebook, "total", f"{result.points}/{result.max_points}", result.problem or ""))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = []
    for row in rows:
        cells = [value.ljust(width) for value, width in zip(row[:4], widths)]
        lines.append("  ".join(cells + [_shorten(row[4], 100)]).rstrip())
    lines.append("")
    for student, (points, maximum) in student_totals(results).items():
        lines.append(f"{student}: {points}/{maximum} points")
    return "\n".join(lines)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_csv(results: Sequence) -> str:
    """Return CSV with one row per exercise and a ``total`` row per notebook."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["student", "notebook", "exercise", "points", "max_points", "status", "detail"])
    for result in results:
        notebook = _shown_path(result.path)
        for exercise in result.exercises:
            writer.writerow([result.student, notebook, exercise.exercise, exercise.points, 1, exercise.status,
                             exercise.detail])
        writer.writerow([result.student, notebook, "total", result.points, result.max_points,
                         "incomplete" if result.problem else "complete", result.problem or ""])
    return buffer.getvalue().rstrip("\n")


def format_json(results: Sequence) -> str:
    """Return JSON: every notebook with its exercises and cell errors, and the totals per student."""
    notebooks = []
    for result in results:
        notebooks.append({
            "notebook": _shown_path(result.path),
            "student": result.student,
            "points": result.points,
            "max_points": result.max_points,
            "problem": result.problem,
            "seconds": round(result.seconds, 2),
            "exercises": [
                {"exercise": e.exercise, "points": e.points, "status": e.status, "detail": e.detail}
                for e in result.exercises
            ],
            "cell_errors": [{"cell": e.cell, "ename": e.ename, "evalue": e.evalue} for e in result.cell_errors],
        })
    students = {name: {"points": points, "max_points": maximum}
                for name, (points, maximum) in student_totals(results).items()}
    return json.dumps({"notebooks": notebooks, "students": students}, indent=2)


_FORMATTERS = {"table": format_table, "csv": format_csv, "json": format_json}


def _cmd_grade(args: argparse.Namespace) -> int:
    from dclab.grading.notebooks import find_notebooks, grade_notebook

    if args.timeout <= 0:
        raise ValueError(f"--timeout {args.timeout} must be a positive number of seconds")
    paths = find_notebooks(args.paths)
    results = [grade_notebook(path, timeout=args.timeout) for path in paths]
    print(_FORMATTERS[args.format](results))
    return 0


def add_grade_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``grade`` subcommand."""
    parser = commands.add_parser(
        "grade", help="run exercise notebooks, each in its own kernel, and print points per exercise"
    )
    parser.add_argument("paths", nargs="+", metavar="FOLDER_OR_NOTEBOOK",
                        help="notebooks, or folders searched recursively for *.ipynb (one subfolder per student)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds allowed per notebook, kernel start included (default: 120); "
                             "exercises not reached get 0")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.set_defaults(func=_cmd_grade)


register_command(add_grade_parser)
