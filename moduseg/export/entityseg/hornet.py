"""HorNet backbone (EntitySeg's ``D2HorNet``, HorNet-L GF) with an exportable global filter.

The blocker: HorNet's ``GlobalLocalFilter`` runs ``torch.fft.rfft2`` /
``irfft2``. The ONNX exporter has no complex dtype (``DFT`` exists in opset
17 but the exporter does not lower ``fft_rfft2``/``fft_irfft2`` with
``norm="ortho"`` and complex multiplies, and TensorRT has no DFT layer).

The fix: at a fixed feature size ``a x b`` the 2-D real FFT, the per-frequency
complex product with the learned filter, and the inverse are all linear maps,
so they become real matrix products with constant cosine / sine matrices:

    rfft along W:   Xr = x @ Cw,  Xi = x @ Sw          (b -> b//2+1 bins)
    fft along H:    Yr = Ch Xr - Sh Xi,  Yi = Ch Xi + Sh Xr
    filter:         Zr = Yr Wr - Yi Wi,  Zi = Yr Wi + Yi Wr
    ifft along H:   Ur = Ch Zr + Sh Zi,  Ui = Ch Zi - Sh Zr
    irfft along W:  out = Ur @ Cw' + Ui @ Sw'   (transposed, bins weighted 1 or 2)

with ``C = cos(2 pi j k / n) / sqrt(n)``, ``S = -sin(...) / sqrt(n)`` (ortho
norm). ``dft_global_filter`` is checked against ``torch.fft`` in the tests.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import ChannelsFirstLayerNorm
from .config import HorNetConfig


def _dft(n: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Ortho-normalised cos and -sin matrices ``[n, bins]`` (computed in float64)."""
    jk = (np.arange(n)[:, None] * np.arange(bins)[None, :]) % n
    ang = 2 * np.pi * jk / n
    return np.cos(ang) / np.sqrt(n), -np.sin(ang) / np.sqrt(n)


def dft_matrices(a: int, b: int):
    """Constant matrices of the 2-D real DFT at ``a x b``: (Cw, Sw, Ch, Sh, iCw, iSw)."""
    nb = b // 2 + 1
    cw, sw = _dft(b, nb)
    ch, sh = _dft(a, a)
    herm = np.full(nb, 2.0)
    herm[0] = 1.0
    if b % 2 == 0:
        herm[-1] = 1.0
    return cw, sw, ch, sh, cw.T * herm[:, None], sw.T * herm[:, None]


def dft_global_filter(x: torch.Tensor, weight_re: torch.Tensor,
                      weight_im: torch.Tensor) -> torch.Tensor:
    """``irfft2(rfft2(x, ortho) * (wr + i wi), s=(a, b), ortho)`` with real matmuls.

    x ``[B, C, a, b]``; weights ``[C, a, b//2+1]``.
    """
    a, b = int(x.shape[2]), int(x.shape[3])
    cw, sw, ch, sh, icw, isw = (torch.from_numpy(m.astype(np.float32)).to(x.dtype).to(x.device)
                                for m in dft_matrices(a, b))
    xr, xi = x @ cw, x @ sw                                         # [B, C, a, nb]
    yr = torch.matmul(ch, xr) - torch.matmul(sh, xi)
    yi = torch.matmul(ch, xi) + torch.matmul(sh, xr)
    zr = yr * weight_re - yi * weight_im
    zi = yr * weight_im + yi * weight_re
    ur = torch.matmul(ch, zr) + torch.matmul(sh, zi)                # conj(F_h) Z
    ui = torch.matmul(ch, zi) - torch.matmul(sh, zr)
    return ur @ icw + ui @ isw


class GlobalLocalFilter(nn.Module):
    def __init__(self, dim: int, h: int = 14, w: int = 8):
        super().__init__()
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False,
                            groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.randn(dim // 2, h, w, 2) * 0.02)
        self.pre_norm = ChannelsFirstLayerNorm(dim)
        self.post_norm = ChannelsFirstLayerNorm(dim)

    def forward(self, x):
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        B, C, a, b = x2.shape
        weight = self.complex_weight
        if tuple(weight.shape[1:3]) != (a, b // 2 + 1):
            weight = F.interpolate(weight.permute(3, 0, 1, 2), size=(a, b // 2 + 1),
                                   mode="bilinear", align_corners=True).permute(1, 2, 3, 0)
        x2 = dft_global_filter(x2, weight[..., 0], weight[..., 1])
        x = torch.stack([x1, x2], dim=2).reshape(B, 2 * C, a, b)
        return self.post_norm(x)


class gnconv(nn.Module):  # noqa: N801 - checkpoint name
    """Recursive gated convolution of order ``order``."""

    def __init__(self, dim: int, order: int, gf_size=None, scale: float = 1.0):
        super().__init__()
        self.order = order
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        if gf_size is None:
            self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), 7, padding=3,
                                    groups=sum(self.dims))
        else:
            self.dwconv = GlobalLocalFilter(sum(self.dims), h=gf_size[0], w=gf_size[1])
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList(nn.Conv2d(self.dims[i], self.dims[i + 1], 1)
                                 for i in range(order - 1))
        self.scale = scale

    def forward(self, x):
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw[0]
        for i in range(self.order - 1):
            x = self.pws[i](x) * dw[i + 1]
        return self.proj_out(x)


class Block(nn.Module):
    def __init__(self, dim: int, order: int, gf_size, scale: float):
        super().__init__()
        self.norm1 = ChannelsFirstLayerNorm(dim)
        self.gnconv = gnconv(dim, order, gf_size, scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma1 = nn.Parameter(torch.full((dim,), 1e-6))
        self.gamma2 = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x):
        x = x + self.gamma1.view(-1, 1, 1) * self.gnconv(self.norm1(x))
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + (self.gamma2 * y).permute(0, 3, 1, 2)


class HorNet(nn.Module):
    """Image ``[B, 3, H, W]`` (normalised) -> {res2..res5}."""

    def __init__(self, cfg: HorNetConfig):
        super().__init__()
        dims = [cfg.base_dim * 2 ** i for i in range(4)]
        self.num_features = dims
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(3, dims[0], kernel_size=4, stride=4), ChannelsFirstLayerNorm(dims[0]))])
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2)))
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], cfg.orders[i], cfg.gf_sizes[i], cfg.scale)
                            for _ in range(cfg.depths[i])])
            for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", ChannelsFirstLayerNorm(dims[i]))

    def forward(self, x) -> dict[str, torch.Tensor]:
        outs = {}
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            outs[f"res{i + 2}"] = getattr(self, f"norm{i}")(x)
        return outs
