"""Small layers shared by the backbones and heads, named like detectron2's."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Conv2d(nn.Conv2d):
    """detectron2's ``Conv2d``: a conv with optional ``norm`` child and activation,
    so checkpoint names are ``<name>.weight`` and ``<name>.norm.weight``."""

    def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x):
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class FrozenBatchNorm2d(nn.Module):
    """Inference batch norm with detectron2's buffer names."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, H, W]`` (ConvNeXt/HorNet style)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        # one fused LayerNormalization op in ONNX (FP16-safe in TensorRT), unlike
        # the mean/pow/sqrt decomposition of the reference code (same values)
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def sine_position_embedding(h: int, w: int, num_pos_feats: int,
                            temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine embedding for an unpadded ``h x w`` map -> ``[1, 2F, h, w]``.

    Depends only on the size, so it is computed in numpy and enters a
    fixed-size graph as one constant.
    """
    eps, scale = 1e-6, 2 * math.pi
    y = np.arange(1, h + 1, dtype=np.float32)[:, None].repeat(w, 1)
    x = np.arange(1, w + 1, dtype=np.float32)[None, :].repeat(h, 0)
    y = y / np.float32(h + eps) * np.float32(scale)
    x = x / np.float32(w + eps) * np.float32(scale)
    dim_t = np.arange(num_pos_feats, dtype=np.float32)
    dim_t = np.float32(temperature) ** (2 * (dim_t // 2) / np.float32(num_pos_feats))
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = np.stack((np.sin(px[..., 0::2]), np.cos(px[..., 1::2])), -1).reshape(h, w, -1)
    py = np.stack((np.sin(py[..., 0::2]), np.cos(py[..., 1::2])), -1).reshape(h, w, -1)
    pos = np.concatenate((py, px), -1).transpose(2, 0, 1)[None]
    return torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float32))


class MLP(nn.Module):
    """``layers.{i}`` linears with ReLU between, as Mask2Former's mask_embed."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
