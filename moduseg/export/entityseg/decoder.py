"""Mask2Former's ``MultiScaleMaskedTransformerDecoder`` (post-norm, names as checkpoints).

Attention is written out (``in_proj_weight``/``out_proj`` like
``nn.MultiheadAttention``) so the masked attention exports as plain MatMul /
Where / Softmax, and the mask is applied by replacement rather than by adding
``-inf`` so FP16 engines cannot overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLP, sine_position_embedding

MASKED = -1e4  # replaces logits of masked keys; exp() underflows to exactly 0


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query, key, value, mask=None):
        """query ``[B, Lq, C]``, key/value ``[B, Lk, C]``, mask ``[B, Lq, Lk]`` (True = blocked)."""
        B, Lq, C = query.shape
        Lk = key.shape[1]
        h, d = self.heads, C // self.heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(B, Lq, h, d).transpose(1, 2)
        k = F.linear(key, wk, bk).view(B, Lk, h, d).transpose(1, 2)
        v = F.linear(value, wv, bv).view(B, Lk, h, d).transpose(1, 2)
        logits = (q * d ** -0.5) @ k.transpose(-2, -1)                 # [B, h, Lq, Lk]
        if mask is not None:
            logits = logits.masked_fill(mask[:, None], MASKED)   # scalar, not a folded tensor
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, Lq, C)
        return self.out_proj(out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.self_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos):
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt))


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.multihead_attn = Attention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, mask, pos, query_pos):
        return self.norm(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory, mask))


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Queries attend to one pixel-decoder level per layer, masked by the previous masks."""

    num_feature_levels = 3

    def __init__(self, hidden_dim: int, num_queries: int, nheads: int, dim_feedforward: int,
                 dec_layers: int, mask_dim: int, num_classes: int = 1):
        super().__init__()
        self.num_layers = dec_layers
        self.hidden_dim = hidden_dim
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, x: list[torch.Tensor], mask_features: torch.Tensor):
        """x: three ``[B, C, h, w]`` maps (coarse to fine) -> (class logits, mask logits)."""
        B = mask_features.shape[0]
        srcs, pos, sizes = [], [], []
        for i, f in enumerate(x):
            h, w = int(f.shape[2]), int(f.shape[3])
            sizes.append((h, w))
            pe = sine_position_embedding(h, w, self.hidden_dim // 2).to(f.dtype).to(f.device)
            pos.append(pe.flatten(2).transpose(1, 2))
            srcs.append(f.flatten(2).transpose(1, 2) + self.level_embed.weight[i][None, None])
        query_pos = self.query_embed.weight[None].expand(B, -1, -1)
        output = self.query_feat.weight[None].expand(B, -1, -1)
        cls, masks, attn_mask = self._heads(output, mask_features, sizes[0])
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            # a query whose mask is empty at this level attends everywhere
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, srcs[lvl], attn_mask, pos[lvl], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            cls, masks, attn_mask = self._heads(output, mask_features,
                                                sizes[(i + 1) % self.num_feature_levels])
        return cls, masks

    def _heads(self, output, mask_features, size):
        out = self.decoder_norm(output)
        cls = self.class_embed(out)
        emb = self.mask_embed(out)
        B, C, h, w = mask_features.shape
        masks = torch.matmul(emb, mask_features.reshape(B, C, h * w)).reshape(B, -1, h, w)
        small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        attn_mask = small.sigmoid().flatten(2) < 0.5                      # [B, Q, h*w]
        return cls, masks, attn_mask
