"""Pseudo label maps from image-level labels (ModuSeg's offline first stage).

A training-free dense CLIP segmenter (CorrCLIP-style: self-self attention in
the last image block, sliding windows, prompt-ensembled text embeddings)
scores every pixel against the class prompts; classes absent from the
image's labels are set to ``-inf`` before the argmax (background always
stays); class-agnostic proposals can then smooth the map by majority vote.
The output is a folder of ``<stem>.png`` label maps in the VOC palette that
``moduseg bank build --dataset folder`` and ``moduseg eval --pred`` read.

Modules: ``labels`` (image-level labels files), ``text`` (prompts and the
text-embedding cache), ``dense`` (ONNX CLIP and sliding windows),
``filtering``, ``correction``, ``generate`` (a folder in, PNGs out), ``cli``.
"""
