"""ONNX graph rewriting, in one place, on one set of helpers (``helpers``).

* ``dinov2``: the DINOv2 graph -> a patch-feature extractor (chosen blocks, LayerNorm-ed).
* ``layernorm``: decomposed LayerNorm subgraphs -> one ``LayerNormalization`` node.
* ``sam_decoder``: SAM's decoder batched over prompts, subsampled mask head, fast cross
  attention, cell-list input; INT8 quantisation; the cached rewritten files.
* ``sam_encoder``: SAM's encoder rewritten for the content size of a non-square frame.
"""
