"""Mask2Former's ``MSDeformAttnPixelDecoder`` (module names as in the checkpoints).

Three deformable-attention encoder levels (res5, res4, res3 at strides 32/16/8),
one FPN step onto res2, and a 1x1 ``mask_features`` conv. The input has no
padding mask (the exported graph is fixed-size and the runtime pads with the
pixel mean, i.e. zero after normalisation, as detectron2 does), so the valid
ratios are 1 and reference points depend only on the level sizes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2d, sine_position_embedding
from .msdeform import MSDeformAttn


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnTransformerEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(
            MSDeformAttnTransformerEncoderLayer(**layer_kwargs) for _ in range(num_layers))

    def forward(self, src, pos, reference_points, shapes):
        for layer in self.layers:
            src = layer(src, pos, reference_points, shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    def __init__(self, d_model: int, nhead: int, num_encoder_layers: int,
                 dim_feedforward: int, num_feature_levels: int, enc_n_points: int):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, d_model))
        self.encoder = MSDeformAttnTransformerEncoder(
            num_encoder_layers, d_model=d_model, d_ffn=dim_feedforward,
            n_levels=num_feature_levels, n_heads=nhead, n_points=enc_n_points)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                         for i, p in enumerate(pos_embeds)], 1)
        ref = reference_points(shapes, flat.dtype, flat.device)
        return self.encoder(flat, pos, ref, shapes), shapes


def reference_points(shapes, dtype=torch.float32, device=None) -> torch.Tensor:
    """Pixel centres of every level in [0, 1] -> ``[1, sum(H*W), L, 2]`` (x, y), a constant."""
    pts = []
    for h, w in shapes:
        gy, gx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        pts.append(np.stack((gx.reshape(-1), gy.reshape(-1)), -1))
    ref = np.concatenate(pts, 0)[None, :, None, :].repeat(len(shapes), 2)
    return torch.from_numpy(ref.astype(np.float32)).to(dtype=dtype, device=device)


class MSDeformAttnPixelDecoder(nn.Module):
    """Backbone features {res2..res5} -> (mask_features, three multi-scale maps)."""

    def __init__(self, in_channels: tuple[int, int, int, int], conv_dim: int, mask_dim: int,
                 enc_layers: int, enc_heads: int, enc_ffn: int, enc_points: int,
                 gn_groups: int = 32):
        super().__init__()
        self.in_features = ["res2", "res3", "res4", "res5"]
        self.transformer_in_features = ["res3", "res4", "res5"]
        trans_channels = in_channels[1:]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(gn_groups, conv_dim))
            for c in trans_channels[::-1])
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, nhead=enc_heads, num_encoder_layers=enc_layers,
            dim_feedforward=enc_ffn, num_feature_levels=3, enc_n_points=enc_points)
        self.conv_dim = conv_dim
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        # one FPN level (res2): log2(8) - log2(common_stride 4)
        self.adapter_1 = Conv2d(in_channels[0], conv_dim, kernel_size=1, bias=False,
                                norm=nn.GroupNorm(gn_groups, conv_dim))
        self.layer_1 = Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
                              norm=nn.GroupNorm(gn_groups, conv_dim), activation=F.relu)

    def forward(self, features: dict[str, torch.Tensor]):
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name]
            srcs.append(self.input_proj[idx](x))
            pe = sine_position_embedding(x.shape[2], x.shape[3], self.conv_dim // 2)
            pos.append(pe.to(dtype=x.dtype, device=x.device))
        y, shapes = self.transformer(srcs, pos)
        B = y.shape[0]
        outs, start = [], 0
        for h, w in shapes:
            outs.append(y[:, start:start + h * w].transpose(1, 2).reshape(B, -1, h, w))
            start += h * w
        lateral = self.adapter_1(features["res2"])
        fpn = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear",
                                      align_corners=False)
        outs.append(self.layer_1(fpn))
        return self.mask_features(outs[-1]), outs[:3]
