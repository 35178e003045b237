"""Synthetic scenes with separable features, shared by the core tests."""

from __future__ import annotations

import cv2
import numpy as np

from moduseg.bank.datasets import Dataset, Sample
from moduseg.types import BackboneIdentity, FeatureMap, GridGeometry, Proposals

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)


class ColourBackbone:
    """Patch feature = fraction of each palette colour in the patch (one-hot, area-pooled).

    Features are separable by construction, so retrieval is exact on pure regions.
    """

    def __init__(self, patch: int = 8, n_classes: int = 5, pad_to: int | None = None):
        self.patch, self.n = patch, n_classes
        self.identity = BackboneIdentity("colour-test", "native", patch, n_classes, "0" * 64)

    def __call__(self, image: np.ndarray) -> FeatureMap:
        H, W = image.shape[:2]
        p = self.patch
        h, w = -(-H // p), -(-W // p)
        onehot = (image[:, :, None, :] == PALETTE[None, None, : self.n]).all(-1)
        canvas = np.zeros((h * p, w * p, self.n), np.float32)
        canvas[:H, :W] = onehot
        feats = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
        if feats.ndim == 2:
            feats = feats[:, :, None]
        geom = GridGeometry((H, W), (H, W), (h, w), p)
        return FeatureMap(np.ascontiguousarray(feats.transpose(2, 0, 1)) + 1e-3, geom)


def scene(seed: int, H: int = 96, W: int = 128, n_classes: int = 5):
    """Non-overlapping rectangles of palette colours, one per quadrant, on background 0."""
    rng = np.random.default_rng(seed)
    label = np.zeros((H, W), np.uint8)
    qh, qw = H // 2, W // 2
    order = rng.permutation(4)[: n_classes - 1]
    for c, q in enumerate(order, start=1):
        y0, x0 = (q // 2) * qh, (q % 2) * qw
        dy, dx = rng.integers(2, qh - 32), rng.integers(2, qw - 40)
        label[y0 + dy:y0 + dy + 30, x0 + dx:x0 + dx + 38] = c
    return PALETTE[label], label


def dataset(n: int = 6, n_classes: int = 5) -> Dataset:
    samples = []
    for i in range(n):
        img, lab = scene(i, n_classes=n_classes)
        samples.append(Sample(f"img{i}", None, lambda l=lab: l))
        samples[-1].image = (lambda im=img: im)
    names = ["background"] + [f"class{c}" for c in range(1, n_classes)]
    return Dataset("synthetic", names, 0, samples)


def gt_proposals(label: np.ndarray) -> Proposals:
    cs = [c for c in np.unique(label)]
    return Proposals(np.stack([label == c for c in cs]), np.ones(len(cs)), label.shape)


class RaisingProposer:
    """A proposer that must not run (the proposer-free patch mode)."""

    name = "never"

    def __call__(self, image):
        raise AssertionError("the patch mode must not run a proposer")


def patch_conv_model(path, weights: np.ndarray, hw=("h", "w"), name: str = "m"):
    """A tiny ONNX "backbone": a Conv with kernel = stride = the patch (``weights``
    [3, 3, P, P]) from ``input_image`` [1, 3, *hw] to ``features`` [1, 3, H/P, W/P],
    with the patch size in its metadata, saved at ``path``. Its features are known
    functions of the pixels, so geometry and views can be checked exactly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    patch = int(weights.shape[-1])
    x = helper.make_tensor_value_info("input_image", TensorProto.FLOAT, [1, 3, *hw])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 3, "gh", "gw"])
    node = helper.make_node("Conv", ["input_image", "W"], ["features"],
                            kernel_shape=[patch, patch], strides=[patch, patch])
    g = helper.make_graph([node], name, [x], [y],
                          [numpy_helper.from_array(weights.astype(np.float32), "W")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    m.metadata_props.add(key="moduseg.patch_size", value=str(patch))
    onnx.save(m, str(path))
    return path
