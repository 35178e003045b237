"""Architecture hyper-parameters of the EntitySeg Mask2Former entity model.

One dataclass describes every size the modules need, so the same code builds
the published Swin-T / Swin-L / HorNet-L models, a ResNet-50 one, and the tiny
random models the tests use. ``infer_config`` reads the sizes back from a
checkpoint, so loading never depends on a YAML file.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from ...errors import InputError

BACKBONES = ("swin", "hornet", "resnet")
# detectron2 defaults used by the EntitySeg configs (RGB order, 0..255 input)
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)


@dataclass
class SwinConfig:
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0


@dataclass
class HorNetConfig:
    base_dim: int = 192
    depths: tuple[int, ...] = (2, 3, 18, 2)
    orders: tuple[int, ...] = (2, 3, 4, 5)
    # global filter (h, w) per stage; None = 7x7 depth-wise conv stage
    gf_sizes: tuple = (None, None, (24, 13), (12, 7))
    scale: float = 1.0 / 3.0


@dataclass
class ResNetConfig:
    depths: tuple[int, ...] = (3, 4, 6, 3)
    stem_out: int = 64
    res2_out: int = 256
    stride_in_1x1: bool = False


@dataclass
class EntitySegConfig:
    """Sizes of one EntitySeg Mask2Former (defaults: the Swin-T entity model)."""

    backbone: str = "swin"
    swin: SwinConfig = field(default_factory=SwinConfig)
    hornet: HorNetConfig = field(default_factory=HorNetConfig)
    resnet: ResNetConfig = field(default_factory=ResNetConfig)
    conv_dim: int = 256          # SEM_SEG_HEAD.CONVS_DIM
    mask_dim: int = 256          # SEM_SEG_HEAD.MASK_DIM
    enc_layers: int = 6          # SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
    enc_heads: int = 8
    enc_points: int = 4
    enc_ffn: int = 1024          # fixed to 1024 in Mask2Former's pixel decoder
    gn_groups: int = 32
    hidden_dim: int = 256        # MASK_FORMER.HIDDEN_DIM
    num_queries: int = 200       # MASK_FORMER.NUM_OBJECT_QUERIES
    dec_layers: int = 9          # MASK_FORMER.DEC_LAYERS - 1
    dec_heads: int = 8
    dec_ffn: int = 2048
    num_classes: int = 1         # one "entity" class (+ no-object logit)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    def validate(self) -> "EntitySegConfig":
        if self.backbone not in BACKBONES:
            raise InputError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.conv_dim % self.gn_groups:
            raise InputError(f"conv_dim {self.conv_dim} must be divisible by gn_groups "
                             f"{self.gn_groups}")
        for dim, heads, what in ((self.conv_dim, self.enc_heads, "enc"),
                                 (self.hidden_dim, self.dec_heads, "dec")):
            if dim % heads:
                raise InputError(f"{what}: dim {dim} not divisible by {heads} heads")
        if self.num_queries < 1 or self.dec_layers < 1:
            raise InputError("num_queries and dec_layers must be >= 1")
        return self

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Channels of res2..res5 from the backbone."""
        if self.backbone == "swin":
            return tuple(self.swin.embed_dim * 2 ** i for i in range(4))
        if self.backbone == "hornet":
            return tuple(self.hornet.base_dim * 2 ** i for i in range(4))
        return tuple(self.resnet.res2_out * 2 ** i for i in range(4))

    def to_dict(self) -> dict:
        return asdict(self)

    def arch_dict(self) -> dict:
        """``to_dict`` without the sub-configs of the backbones not in use."""
        d = self.to_dict()
        for other in BACKBONES:
            if other != self.backbone:
                d.pop(other)
        return d


def swin_tiny(num_queries: int = 100) -> EntitySegConfig:
    """EntitySeg ``mask2former_swin_tiny_3x`` (100 queries in the published config)."""
    return EntitySegConfig(num_queries=num_queries).validate()


def swin_large(num_queries: int = 100) -> EntitySegConfig:
    """EntitySeg ``mask2former_swin_large_3x`` (window 7, 100 queries)."""
    return EntitySegConfig(
        swin=SwinConfig(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
        num_queries=num_queries).validate()


def hornet_large(num_queries: int = 200) -> EntitySegConfig:
    """EntitySeg ``mask2former_hornet_3x`` (HorNet-L GF, 200 queries)."""
    return EntitySegConfig(backbone="hornet", num_queries=num_queries).validate()


def resnet50(num_queries: int = 100) -> EntitySegConfig:
    return EntitySegConfig(backbone="resnet", num_queries=num_queries).validate()


PRESETS = {"swin_t": swin_tiny, "swin_l": swin_large, "hornet_l": hornet_large,
           "r50": resnet50}


def tiny_test_config(backbone: str = "swin", **overrides) -> EntitySegConfig:
    """A few-thousand-parameter model for tests (random weights only)."""
    cfg = EntitySegConfig(
        backbone=backbone,
        swin=SwinConfig(embed_dim=16, depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4),
                        window_size=4),
        hornet=HorNetConfig(base_dim=16, depths=(1, 1, 1, 1), orders=(2, 2, 3, 3),
                            gf_sizes=(None, None, (4, 3), (2, 2))),
        resnet=ResNetConfig(depths=(1, 1, 1, 1), stem_out=8, res2_out=16),
        conv_dim=32, mask_dim=16, enc_layers=1, enc_heads=4, enc_ffn=32, gn_groups=8,
        hidden_dim=32, num_queries=6, dec_layers=3, dec_heads=4, dec_ffn=32)
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise InputError(f"unknown EntitySegConfig field {k!r}")
        setattr(cfg, k, v)
    return cfg.validate()


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in keys if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def infer_config(state: dict, enc_heads: int = 8, dec_heads: int = 8,
                 gn_groups: int = 32) -> EntitySegConfig:
    """Read every size from a detectron2-named state dict (``{name: array}``).

    Head counts and GroupNorm groups leave no trace in the weights; the
    published models use ``MASK_FORMER.NHEADS = 8`` and 32 groups.

    Raises ``InputError`` naming the missing key when the dict is not an
    EntitySeg / Mask2Former model.
    """
    keys = list(state)

    def shape(name):
        if name not in state:
            raise InputError(
                f"checkpoint has no {name!r}; it is not a Mask2Former "
                f"(MSDeformAttnPixelDecoder + MultiScaleMaskedTransformerDecoder) model")
        return tuple(state[name].shape)

    P = "sem_seg_head.predictor."
    D = "sem_seg_head.pixel_decoder."
    cfg = EntitySegConfig(enc_heads=enc_heads, dec_heads=dec_heads, gn_groups=gn_groups)
    q, hidden = shape(P + "query_feat.weight")
    cfg.num_queries, cfg.hidden_dim = q, hidden
    cfg.num_classes = shape(P + "class_embed.weight")[0] - 1
    cfg.mask_dim = shape(P + "mask_embed.layers.2.weight")[0]
    cfg.dec_layers = _count(keys, re.escape(P) + r"transformer_cross_attention_layers\.(\d+)\.")
    cfg.dec_ffn = shape(P + "transformer_ffn_layers.0.linear1.weight")[0]
    cfg.conv_dim = shape(D + "mask_features.weight")[1]
    cfg.enc_layers = _count(keys, re.escape(D) + r"transformer\.encoder\.layers\.(\d+)\.")
    cfg.enc_ffn = shape(D + "transformer.encoder.layers.0.linear1.weight")[0]
    n_lp = shape(D + "transformer.encoder.layers.0.self_attn.attention_weights.weight")[0]
    levels = shape(D + "transformer.level_embed")[0]
    cfg.enc_points = n_lp // (cfg.enc_heads * levels)
    if cfg.enc_points * cfg.enc_heads * levels != n_lp:
        raise InputError(f"cannot split {n_lp} attention weights into {cfg.enc_heads} heads "
                         f"x {levels} levels")
    if any(k.startswith("backbone.layers.") for k in keys):
        cfg.backbone = "swin"
        embed = shape("backbone.patch_embed.proj.weight")
        depths = tuple(_count(keys, rf"backbone\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4))
        heads = tuple(shape(f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table")[1]
                      for i in range(4))
        table = shape("backbone.layers.0.blocks.0.attn.relative_position_bias_table")[0]
        window = int(round((table ** 0.5 + 1) / 2))
        cfg.swin = SwinConfig(embed_dim=embed[0], depths=depths, num_heads=heads,
                              window_size=window, patch_size=embed[2])
    elif any(k.startswith("backbone.stages.") for k in keys):
        cfg.backbone = "hornet"
        base = shape("backbone.downsample_layers.0.0.weight")[0]
        depths = tuple(_count(keys, rf"backbone\.stages\.{i}\.(\d+)\.") for i in range(4))
        orders, gfs = [], []
        for i in range(4):
            orders.append(_count(keys, rf"backbone\.stages\.{i}\.0\.gnconv\.pws\.(\d+)\.") + 1)
            cw = f"backbone.stages.{i}.0.gnconv.dwconv.complex_weight"
            gfs.append(tuple(state[cw].shape[1:3]) if cw in state else None)
        cfg.hornet = HorNetConfig(base_dim=base, depths=depths, orders=tuple(orders),
                                  gf_sizes=tuple(gfs))
    elif any(k.startswith("backbone.stem.") for k in keys):
        cfg.backbone = "resnet"
        depths = tuple(_count(keys, rf"backbone\.res{i + 2}\.(\d+)\.") for i in range(4))
        cfg.resnet = ResNetConfig(depths=depths, stem_out=shape("backbone.stem.conv1.weight")[0],
                                  res2_out=shape("backbone.res2.0.conv3.weight")[0])
    else:
        raise InputError("checkpoint backbone is not Swin (backbone.layers.*), HorNet "
                         "(backbone.stages.*) or ResNet (backbone.stem.*)")
    return cfg.validate()
