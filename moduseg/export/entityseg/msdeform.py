"""Multi-scale deformable attention written with ``grid_sample``.

Mask2Former's pixel decoder calls a custom CUDA kernel (``MSDeformAttnFunction``)
that neither ONNX nor TensorRT knows. The kernel samples each level bilinearly
at ``loc * size - 0.5`` with zeros outside, which is exactly
``grid_sample(align_corners=False, padding_mode="zeros")`` on ``2 * loc - 1``;
so the same numbers come out of a standard op (ONNX GridSample, opset >= 16;
TensorRT IGridSampleLayer) with no plugin.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_sample(value: torch.Tensor, shapes: list[tuple[int, int]],
                          locations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted bilinear samples of every level.

    value ``[N, S, M, Dh]`` (``S = sum(H*W)``, levels concatenated in ``shapes``
    order), locations ``[N, Lq, M, L, P, 2]`` as (x, y) in [0, 1] of the level,
    weights ``[N, Lq, M, L, P]`` -> ``[N, Lq, M * Dh]``.
    Levels are accumulated one at a time, so peak memory is one level's samples.
    """
    N, _, M, Dh = value.shape
    _, Lq, _, L, P, _ = locations.shape
    grids = locations * 2.0 - 1.0
    out = None
    start = 0
    for lvl, (H, W) in enumerate(shapes):
        v = value[:, start:start + H * W].permute(0, 2, 3, 1).reshape(N * M, Dh, H, W)
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(N * M, Lq, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                align_corners=False)                     # [N*M, Dh, Lq, P]
        w = weights[:, :, :, lvl].permute(0, 2, 1, 3).reshape(N * M, 1, Lq, P)
        term = (sampled * w).sum(-1)                                     # [N*M, Dh, Lq]
        out = term if out is None else out + term
        start += H * W
    return out.reshape(N, M * Dh, Lq).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable attention with Deformable-DETR's parameter names.

    ``reference_points`` ``[N, Lq, L, 2]`` (x, y) in [0, 1]; offsets are in
    pixels of each level, as in the reference implementation.
    """

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8,
                 n_points: int = 4):
        super().__init__()
        self.d_model, self.n_levels, self.n_heads, self.n_points = (
            d_model, n_levels, n_heads, n_points)
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def forward(self, query, reference_points, input_flatten,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        N, Lq, _ = query.shape
        S = input_flatten.shape[1]
        M, L, P = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(input_flatten).view(N, S, M, self.d_model // M)
        offsets = self.sampling_offsets(query).view(N, Lq, M, L, P, 2)
        attn = self.attention_weights(query).view(N, Lq, M, L * P).softmax(-1)
        attn = attn.view(N, Lq, M, L, P)
        normalizer = torch.from_numpy(np.array([[w, h] for h, w in shapes], np.float32)).to(
            dtype=query.dtype, device=query.device)                      # [L, 2] (x, y)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        out = ms_deform_attn_sample(value, shapes, locations, attn)
        return self.output_proj(out)
