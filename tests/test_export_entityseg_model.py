"""Building blocks of the pure-PyTorch EntitySeg model against the semantics of the
modules its checkpoints were trained with (nn.MultiheadAttention, DETR's sine
embedding, Swin's relative positions, torchvision's ResNet v1.5)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from moduseg.export.entityseg.common import sine_position_embedding  # noqa: E402
from moduseg.export.entityseg.config import ResNetConfig, tiny_test_config  # noqa: E402
from moduseg.export.entityseg.decoder import Attention  # noqa: E402
from moduseg.export.entityseg.model import random_model  # noqa: E402
from moduseg.export.entityseg.swin import relative_position_index, shift_mask  # noqa: E402


def test_attention_equals_nn_multihead_attention_with_bool_mask():
    torch.manual_seed(0)
    dim, heads, B, Lq, Lk = 16, 4, 2, 5, 7
    ours = Attention(dim, heads)
    ref = nn.MultiheadAttention(dim, heads)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj_weight)
        ref.in_proj_bias.normal_()
        ours.in_proj_bias.copy_(ref.in_proj_bias)
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    q, k, v = torch.randn(B, Lq, dim), torch.randn(B, Lk, dim), torch.randn(B, Lk, dim)
    mask = torch.rand(B, Lq, Lk) < 0.5
    mask[:, :, 0] = False                                   # no fully blocked row
    with torch.no_grad():
        got = ours(q, k, v, mask)
        # Mask2Former: sequence-first tensors, the mask repeated per head
        want = ref(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                   attn_mask=mask.repeat_interleave(heads, 0))[0].transpose(0, 1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def _detr_sine(h, w, F_, temperature=10000):
    """DETR/Mask2Former PositionEmbeddingSine(normalize=True) on an unpadded map."""
    not_mask = torch.ones(1, h, w)
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    d = torch.arange(F_, dtype=torch.float32)
    d = temperature ** (2 * torch.div(d, 2, rounding_mode="floor") / F_)
    px, py = x[..., None] / d, y[..., None] / d
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), 4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), 4).flatten(3)
    return torch.cat((py, px), 3).permute(0, 3, 1, 2)


def test_sine_embedding_matches_detr():
    np.testing.assert_allclose(sine_position_embedding(5, 9, 16).numpy(),
                               _detr_sine(5, 9, 16).numpy(), atol=2e-6)


def test_relative_position_index_definition():
    ws = 3
    idx = relative_position_index(ws).numpy()
    coords = [(i, j) for i in range(ws) for j in range(ws)]
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            assert idx[a, b] == (ya - yb + ws - 1) * (2 * ws - 1) + (xa - xb + ws - 1)


def test_shift_mask_separates_wrapped_regions():
    m = shift_mask(8, 8, 4, 2).numpy()                     # 4 windows of 16 tokens
    assert m.shape == (4, 16, 16) and set(np.unique(m)) == {0.0, -100.0}
    assert (m[0] == 0).all()                               # top-left window: one region
    # bottom-right window mixes 4 regions of 4 tokens: each token sees 4 of 16
    assert ((m[3] == 0).sum(1) == 4).all()


@pytest.mark.slow
def test_resnet_matches_torchvision_bottleneck_v1_5():
    tv = pytest.importorskip("torchvision")
    from moduseg.export.entityseg.resnet import ResNet

    torch.manual_seed(0)
    ref = tv.models.resnet.ResNet(tv.models.resnet.Bottleneck, [1, 1, 1, 1]).eval()
    for mod in ref.modules():
        if isinstance(mod, nn.BatchNorm2d):
            for t in (mod.weight, mod.bias, mod.running_mean):
                t.data.normal_(0, 0.2)
            mod.running_var.data.uniform_(0.5, 2.0)
    ours = ResNet(ResNetConfig(depths=(1, 1, 1, 1))).eval()
    sd = {}
    tvsd = ref.state_dict()
    conv_map = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "downsample.0": "shortcut"}
    bn_map = {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3", "downsample.1": "shortcut"}
    for k, v in tvsd.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        if k.startswith("conv1."):
            sd["stem.conv1.weight"] = v
            continue
        if k.startswith("bn1."):
            sd["stem.conv1.norm." + k.split(".", 1)[1]] = v
            continue
        layer, blk, rest = k.split(".", 2)
        stage = f"res{int(layer[-1]) + 1}.{blk}"
        for src, dst in conv_map.items():
            if rest == f"{src}.weight":
                sd[f"{stage}.{dst}.weight"] = v
        for src, dst in bn_map.items():
            if rest.startswith(src + "."):
                sd[f"{stage}.{dst}.norm.{rest[len(src) + 1:]}"] = v
    assert set(sd) == set(ours.state_dict())
    ours.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = ours(x)
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        for i, layer in enumerate((ref.layer1, ref.layer2, ref.layer3, ref.layer4)):
            y = layer(y)
            np.testing.assert_allclose(feats[f"res{i + 2}"].numpy(), y.numpy(), atol=1e-4)


@pytest.mark.parametrize("backbone", ["swin", "hornet", "resnet"])
def test_forward_shapes(backbone):
    model = random_model(tiny_test_config(backbone))
    with torch.no_grad():
        cls, masks = model(torch.rand(1, 3, 64, 96) * 255)
    assert tuple(cls.shape) == (1, 6, 2) and tuple(masks.shape) == (1, 6, 16, 24)
    assert torch.isfinite(masks).all()


def test_empty_attention_mask_rows_attend_everywhere():
    """A query whose previous mask is empty must not produce NaN (Mask2Former unmasks it)."""
    model = random_model(tiny_test_config("swin"))
    pred = model.sem_seg_head.predictor
    with torch.no_grad():
        pred.mask_embed.layers[-1].bias.fill_(-1e3)         # every mask logit negative
        cls, masks = model(torch.rand(1, 3, 64, 96) * 255)
    assert torch.isfinite(cls).all() and torch.isfinite(masks).all()
