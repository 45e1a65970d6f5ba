"""Graded checks for the exercise notebooks.

Each ``check_<name>(function)`` runs the student's function on several
inputs, compares it with dclab's own implementation, prints one line
(``name: P/N checks passed``) and raises ``AssertionError`` with the input,
the expected and received values and a hint on the first failing input. A
check cell that raises fails under ``pytest --nbval-lax``, and ``dclab grade``
turns passing check cells into points.

``EXERCISES`` lists the exercises of every notebook in teaching order;
:func:`get_check` returns an exercise's check. The check functions are
attributes of this package, imported on first use: the pruning checks need
torch, which takes seconds to import, and the numpy-only notebooks never do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = [
    "EXERCISES",
    "CHECK_MODULES",
    "exercise_names",
    "get_check",
    "notebook_of",
    "check_magnitude_mask",
    "check_std_threshold",
    "check_sparsity",
    "check_masked_sgd_step",
    "check_linear_init",
    "check_density_init",
    "check_kmeans_step",
    "check_centroid_gradient",
    "check_relative_index_encode",
    "check_relative_index_decode",
    "check_compression_ratio",
    "check_huffman_code_lengths",
    "check_canonical_codes",
    "check_huffman_decode",
]

# Notebook (file name without .ipynb) -> its exercises, in the order they appear.
EXERCISES: dict[str, tuple[str, ...]] = {
    "01_pruning": ("magnitude_mask", "std_threshold", "sparsity", "masked_sgd_step"),
    "02_weight_sharing": ("linear_init", "density_init", "kmeans_step", "centroid_gradient"),
    "03_sparse_storage": ("relative_index_encode", "relative_index_decode", "compression_ratio"),
    "04_huffman": ("huffman_code_lengths", "canonical_codes", "huffman_decode"),
}

# Notebook -> the module of dclab.grading that contains its checks.
CHECK_MODULES: dict[str, str] = {
    "01_pruning": "dclab.grading.pruning",
    "02_weight_sharing": "dclab.grading.weight_sharing",
    "03_sparse_storage": "dclab.grading.sparse_storage",
    "04_huffman": "dclab.grading.huffman_coding",
}


def exercise_names() -> list[str]:
    """Return every exercise name, in teaching order."""
    return [name for names in EXERCISES.values() for name in names]


def notebook_of(exercise: str) -> str:
    """Return the notebook that contains ``exercise``.

    Raises:
        KeyError: an unknown exercise name; the message lists the known ones.
    """
    for notebook, names in EXERCISES.items():
        if exercise in names:
            return notebook
    raise KeyError(f"unknown exercise {exercise!r}; known exercises: {', '.join(exercise_names())}")


def get_check(exercise: str) -> Callable[[Callable], None]:
    """Return the check function of ``exercise`` (importing its module on first use).

    Raises:
        KeyError: an unknown exercise name.
    """
    module = importlib.import_module(CHECK_MODULES[notebook_of(exercise)])
    return getattr(module, f"check_{exercise}")


def __getattr__(name: str):
    # PEP 562: check_<exercise> attributes are resolved on first access.
    if name.startswith("check_"):
        try:
            return get_check(name[len("check_"):])
        except KeyError:
            pass
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {f"check_{name}" for name in exercise_names()})
