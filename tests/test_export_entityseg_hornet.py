"""HorNet's FFT global filter rewritten as DFT matrix products: parity with torch.fft."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from moduseg.export.entityseg.config import HorNetConfig  # noqa: E402
from moduseg.export.entityseg.hornet import (GlobalLocalFilter, HorNet,  # noqa: E402
                                             dft_global_filter)


def fft_filter(x, w):
    X = torch.fft.rfft2(x, dim=(2, 3), norm="ortho")
    return torch.fft.irfft2(X * torch.view_as_complex(w.contiguous()), s=x.shape[2:],
                            dim=(2, 3), norm="ortho")


@pytest.mark.parametrize("a,b", [(6, 8), (5, 7), (1, 4), (25, 42), (12, 21)])
def test_dft_filter_matches_torch_fft(a, b):
    g = torch.Generator().manual_seed(a * 100 + b)
    x = torch.randn(2, 3, a, b, generator=g)
    w = torch.randn(3, a, b // 2 + 1, 2, generator=g)
    got = dft_global_filter(x, w[..., 0], w[..., 1])
    np.testing.assert_allclose(got.numpy(), fft_filter(x, w).numpy(), atol=2e-5)


def test_identity_filter_is_identity():
    x = torch.randn(1, 2, 6, 9)
    ones, zeros = torch.ones(2, 6, 5), torch.zeros(2, 6, 5)
    np.testing.assert_allclose(dft_global_filter(x, ones, zeros).numpy(), x.numpy(), atol=1e-5)


def test_global_local_filter_matches_fft_reference_with_resized_weight():
    """The learned weight (h, w) is resized to the feature's spectrum, as in HorNet."""
    torch.manual_seed(0)
    gf = GlobalLocalFilter(8, h=5, w=3).eval()
    x = torch.randn(1, 8, 7, 10)
    with torch.no_grad():
        got = gf(x)
        y = gf.pre_norm(x)
        x1, x2 = torch.chunk(y, 2, dim=1)
        x1 = gf.dw(x1)
        w = F.interpolate(gf.complex_weight.permute(3, 0, 1, 2), size=(7, 6), mode="bilinear",
                          align_corners=True).permute(1, 2, 3, 0)
        x2 = fft_filter(x2, w)
        ref = gf.post_norm(torch.cat([x1.unsqueeze(2), x2.unsqueeze(2)], 2).reshape(1, 8, 7, 10))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)


@pytest.mark.slow
def test_hornet_features_and_no_fft_in_trace():
    cfg = HorNetConfig(base_dim=8, depths=(1, 1, 1, 1), orders=(2, 2, 3, 3),
                       gf_sizes=(None, None, (4, 3), (2, 2)))
    net = HorNet(cfg).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res2": (1, 8, 16, 24), "res3": (1, 16, 8, 12), "res4": (1, 32, 4, 6),
        "res5": (1, 64, 2, 3)}
    graph = torch.jit.trace(net, torch.randn(1, 3, 64, 96), check_trace=False,
                            strict=False).inlined_graph
    assert "fft" not in str(graph)
