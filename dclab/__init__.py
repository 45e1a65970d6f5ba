"""dclab: Deep Compression (pruning, trained quantization, Huffman coding) for teaching.

Modules, one concept each: ``data``, ``models``, ``train``, ``presets``,
``prune``, ``quantize``, ``sparse``, ``huffman``, ``container``, ``report``,
``pipeline``, ``plots``, ``widgets``, ``grading``, ``cli``.
"""

__version__ = "0.1.0"
