"""Generate the student notebooks (``exercises/``) from the solved ones (``solutions/``).

In a solution notebook, the lines from ``### BEGIN SOLUTION`` to
``### END SOLUTION`` (both included) are the solution. The exercise notebook
replaces them with one line, at the indentation of the ``BEGIN`` marker::

    raise NotImplementedError("implement NAME: write your code here, then run the check cell below")

where NAME is the function that encloses the markers. Outputs, execution
counts and execution metadata are cleared, and the notebook metadata is
reduced to the kernel and language, so the output depends only on the
solutions and the same solutions always give byte-identical files.

Run ``python -m dclab.course make-exercises`` (or ``dclab make-exercises``);
``--check`` reports stale exercises instead of writing them. After editing a
solution, ``python -m dclab.course run-solutions`` executes the solutions in
place, so that they are stored with fresh outputs.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "SolutionMarkerError",
    "strip_solution",
    "make_exercise",
    "make_exercises",
    "run_solutions",
    "add_make_exercises_parser",
    "add_run_solutions_parser",
    "main",
]

log = logging.getLogger(__name__)

BEGIN_MARKER = "### BEGIN SOLUTION"
END_MARKER = "### END SOLUTION"
STUB_MESSAGE = "implement {name}: write your code here, then run the check cell below"

_DEF = re.compile(r"^\s*(?:async\s+)?def\s+(\w+)\s*\(")
# Notebook metadata kept in exercises; everything else (versions, widget state) is dropped.
_KEPT_NOTEBOOK_METADATA = ("kernelspec",)


class SolutionMarkerError(ValueError):
    """A solution notebook has unbalanced or nested solution markers."""


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace every marked solution block of one cell's source with a ``NotImplementedError`` stub.

    Args:
        source: the cell's source code.
        where: names the cell in error messages.

    Returns:
        The source with each block replaced by one ``raise`` line.

    Raises:
        SolutionMarkerError: a ``BEGIN`` without ``END``, an ``END`` without
            ``BEGIN``, or nested blocks.
    """
    lines = source.split("\n")
    out: list[str] = []
    function = None
    inside = False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        match = _DEF.match(line)
        if match and not inside:
            function = match.group(1)
        if stripped == BEGIN_MARKER:
            if inside:
                raise SolutionMarkerError(f"{where}, line {number}: {BEGIN_MARKER} inside another solution block")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            message = STUB_MESSAGE.format(name=function or "this cell")
            out.append(f'{indent}raise NotImplementedError("{message}")')
            continue
        if stripped == END_MARKER:
            if not inside:
                raise SolutionMarkerError(f"{where}, line {number}: {END_MARKER} without {BEGIN_MARKER}")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise SolutionMarkerError(f"{where}: {BEGIN_MARKER} without {END_MARKER}")
    return "\n".join(out)


def make_exercise(solution):
    """Return the exercise version of a solution notebook (an ``nbformat`` node; the input is not changed).

    Raises:
        SolutionMarkerError: see :func:`strip_solution`.
    """
    import copy

    exercise = copy.deepcopy(solution)
    exercise.metadata = {key: exercise.metadata[key] for key in _KEPT_NOTEBOOK_METADATA if key in exercise.metadata}
    exercise.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(exercise.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        cell.source = strip_solution(cell.source, where=f"cell {index} ({cell.get('id', 'no id')})")
        cell.outputs = []
        cell.execution_count = None
    return exercise


def _render(notebook) -> str:
    import nbformat

    # The text nbformat.write produces: sorted keys, indent 1, a final newline.
    text = nbformat.writes(notebook, version=4)
    return text if text.endswith("\n") else text + "\n"


def make_exercises(solutions: Path, out: Path, *, check: bool = False) -> list[Path]:
    """Write (or with ``check``, compare) the exercise version of every ``*.ipynb`` in ``solutions``.

    Args:
        solutions: folder of solved notebooks.
        out: folder for the exercise notebooks (created when missing).
        check: write nothing; return the exercise files that are missing or differ.

    Returns:
        The files written, or with ``check`` the stale ones.

    Raises:
        FileNotFoundError: ``solutions`` contains no notebook.
        SolutionMarkerError: a notebook has unbalanced markers.
    """
    import nbformat

    sources = sorted(Path(solutions).glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no .ipynb files in {solutions}; give the folder of solved notebooks with --solutions")
    if not check:
        Path(out).mkdir(parents=True, exist_ok=True)
    touched = []
    for source in sources:
        notebook = nbformat.read(source, as_version=4)
        try:
            text = _render(make_exercise(notebook))
        except SolutionMarkerError as error:
            raise SolutionMarkerError(f"{source}: {error}") from None
        target = Path(out) / source.name
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        touched.append(target)
        if not check:
            target.write_text(text, encoding="utf-8")
            log.info("wrote %s", target)
    return touched


def run_solutions(solutions: Path, timeout: float = 300.0) -> list[Path]:
    """Execute every solution notebook in a fresh kernel and save it with its outputs.

    Returns:
        The notebooks executed.

    Raises:
        FileNotFoundError: ``solutions`` contains no notebook.
        RuntimeError: a cell raised, the time limit was reached or the kernel
            died; the notebook is not saved.
    """
    import nbformat

    from dclab.grading.notebooks import run_notebook

    sources = sorted(Path(solutions).glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no .ipynb files in {solutions}; give the folder of solved notebooks with --solutions")
    for source in sources:
        notebook = nbformat.read(source, as_version=4)
        run = run_notebook(notebook, source.resolve().parent, timeout)
        if run.problem or run.errors:
            failures = [f"cell {e.cell}: {e.ename}: {e.evalue}" for e in run.errors.values()]
            raise RuntimeError(f"{source}: {run.problem or '; '.join(failures)}; the notebook was not saved")
        nbformat.write(notebook, source)
        log.info("executed %s", source)
    return sources


def _cmd_make_exercises(args: argparse.Namespace) -> int:
    changed = make_exercises(Path(args.solutions), Path(args.out), check=args.check)
    if args.check:
        for path in changed:
            print(f"stale: {path} differs from what make-exercises generates")
        if changed:
            print(f"run `python -m dclab.course make-exercises --solutions {args.solutions} --out {args.out}`")
            return 1
        print(f"{args.out}: up to date")
        return 0
    print(f"{len(changed)} exercise notebook(s) written to {args.out}" if changed else f"{args.out}: up to date")
    return 0


def add_make_exercises_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``make-exercises`` subcommand to a subparsers object."""
    parser = commands.add_parser(
        "make-exercises", help="generate the exercise notebooks from the solution notebooks"
    )
    parser.add_argument("--solutions", default="solutions", help="folder of solved notebooks (default: solutions)")
    parser.add_argument("--out", default="exercises", help="folder to write the exercises to (default: exercises)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit with status 1 when an exercise notebook is missing or stale")
    parser.set_defaults(func=_cmd_make_exercises)


def _cmd_run_solutions(args: argparse.Namespace) -> int:
    for path in run_solutions(Path(args.solutions), args.timeout):
        print(f"executed {path}")
    return 0


def add_run_solutions_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``run-solutions`` subcommand to a subparsers object."""
    parser = commands.add_parser("run-solutions", help="execute the solution notebooks in place, storing their outputs")
    parser.add_argument("--solutions", default="solutions", help="folder of solved notebooks (default: solutions)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per notebook (default: 300)")
    parser.set_defaults(func=_cmd_run_solutions)


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m dclab.course COMMAND``; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m dclab.course", description="Course notebook tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_make_exercises_parser(commands)
    add_run_solutions_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, SolutionMarkerError, RuntimeError) as error:
        print(f"{args.command}: error: {error}", file=sys.stderr)
        return 1


def _register() -> None:
    from dclab.cli import register_command

    register_command(add_make_exercises_parser)
    register_command(add_run_solutions_parser)


if __name__ == "__main__":
    sys.exit(main())
else:
    _register()
