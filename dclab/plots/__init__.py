"""Figures for the notebooks; every function returns a matplotlib Figure.

Modules by topic: ``prune`` (sensitivity, weight histograms), ``quantize``
(centroid initializations, codebook shift), ``sharing`` (the 4x4
weight-sharing example), ``storage`` (relative index), ``huffman`` (code
tree, code lengths, entropy) and ``course`` (layer sizes, stages,
trade-offs, bit widths, per-layer rates). The functions are re-exported here.
"""

from dclab.plots.course import (
    plot_accuracy_vs_bits,
    plot_bits_panels,
    plot_fine_tune_curves,
    plot_layer_rates,
    plot_layer_sizes,
    plot_prune_history,
    plot_stage_sizes,
    plot_tradeoff,
    plot_weight_stages,
)
from dclab.plots.huffman import (
    code_tree,
    entropy_bits,
    plot_bits_vs_entropy,
    plot_code_lengths,
    plot_huffman_tree,
    plot_symbol_distributions,
)
from dclab.plots.prune import plot_sensitivity, plot_weight_distributions, plot_weight_histogram
from dclab.plots.quantize import plot_centroid_inits, plot_codebook_shift
from dclab.plots.sharing import plot_weight_sharing_example
from dclab.plots.storage import plot_index_bits_sweep, plot_index_histogram, plot_relative_index_example

__all__ = [
    "plot_accuracy_vs_bits",
    "plot_bits_panels",
    "plot_bits_vs_entropy",
    "plot_centroid_inits",
    "plot_code_lengths",
    "plot_codebook_shift",
    "plot_fine_tune_curves",
    "plot_huffman_tree",
    "plot_index_bits_sweep",
    "plot_index_histogram",
    "plot_layer_rates",
    "plot_layer_sizes",
    "plot_prune_history",
    "plot_relative_index_example",
    "plot_sensitivity",
    "plot_stage_sizes",
    "plot_symbol_distributions",
    "plot_tradeoff",
    "plot_weight_distributions",
    "plot_weight_histogram",
    "plot_weight_sharing_example",
    "plot_weight_stages",
    "code_tree",
    "entropy_bits",
]
