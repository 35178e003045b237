"""Export toolchain: PyTorch -> ONNX -> TensorRT for backbones and proposers.

Importing this package needs no torch; each exporter imports torch itself.
"""
