"""The EntitySeg Mask2Former entity model in plain PyTorch (no detectron2).

Top-level names mirror detectron2's ``MaskFormer`` meta-architecture
(``backbone.*``, ``sem_seg_head.pixel_decoder.*``, ``sem_seg_head.predictor.*``)
so a published checkpoint loads with a near-identity name map.

``forward`` takes an RGB image ``[B, 3, H, W]`` in 0..255 (H, W multiples of
32), normalises it with the pixel mean/std inside the graph, and returns the
final decoder layer's ``pred_logits [B, Q, K+1]`` and ``pred_masks
[B, Q, H/4, W/4]`` (mask logits). Post-processing is done outside the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import EntitySegConfig
from .decoder import MultiScaleMaskedTransformerDecoder
from .pixel_decoder import MSDeformAttnPixelDecoder

SIZE_DIVISIBILITY = 32


def build_entityseg_backbone(cfg: EntitySegConfig) -> nn.Module:
    if cfg.backbone == "swin":
        from .swin import SwinTransformer
        return SwinTransformer(cfg.swin)
    if cfg.backbone == "hornet":
        from .hornet import HorNet
        return HorNet(cfg.hornet)
    from .resnet import ResNet
    return ResNet(cfg.resnet)


class MaskFormerHead(nn.Module):
    def __init__(self, cfg: EntitySegConfig):
        super().__init__()
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            cfg.channels, cfg.conv_dim, cfg.mask_dim, cfg.enc_layers, cfg.enc_heads,
            cfg.enc_ffn, cfg.enc_points, cfg.gn_groups)
        self.predictor = MultiScaleMaskedTransformerDecoder(
            cfg.hidden_dim, cfg.num_queries, cfg.dec_heads, cfg.dec_ffn, cfg.dec_layers,
            cfg.mask_dim, cfg.num_classes)

    def forward(self, features):
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


class EntitySegModel(nn.Module):
    """Backbone + Mask2Former head; image in, (class logits, mask logits) out."""

    def __init__(self, cfg: EntitySegConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.backbone = build_entityseg_backbone(cfg)
        self.sem_seg_head = MaskFormerHead(cfg)
        # non-persistent, like detectron2: not part of checkpoints
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), False)

    def forward(self, image: torch.Tensor):
        x = (image - self.pixel_mean) / self.pixel_std
        return self.sem_seg_head(self.backbone(x))


def random_model(cfg: EntitySegConfig, seed: int = 0) -> EntitySegModel:
    """A randomly initialised model in eval mode (tests, smoke runs)."""
    torch.manual_seed(seed)
    model = EntitySegModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.3 / max(1, p.shape[-1]) ** 0.5)
            elif name.endswith("bias"):
                nn.init.normal_(p, std=0.05)
        # decisive mask logits, so thresholding at 0 is not dominated by noise
        model.sem_seg_head.predictor.mask_embed.layers[-1].weight.mul_(10.0)
    return model
