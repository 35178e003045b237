"""grid_sample multi-scale deformable attention vs a direct bilinear-sampling loop."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moduseg.export.entityseg.msdeform import MSDeformAttn, ms_deform_attn_sample  # noqa: E402


def _bilinear_zero_pad(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Value of ``img [D, H, W]`` at pixel coords (x, y), corners outside count as 0."""
    D, H, W = img.shape
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    out = np.zeros(D)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * img[:, yy, xx]
    return out


def reference_ms_deform_attn(value, shapes, locations, weights):
    """The CUDA kernel's definition, one sample at a time (float64).

    A location (lx, ly) in [0, 1] of level (H, W) is the pixel coordinate
    (lx * W - 0.5, ly * H - 0.5); samples are bilinear with zero padding.
    """
    value, locations, weights = (np.asarray(t, np.float64) for t in (value, locations, weights))
    N, S, M, Dh = value.shape
    _, Lq, _, L, P, _ = locations.shape
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = np.zeros((N, Lq, M, Dh))
    for n in range(N):
        for lvl, (H, W) in enumerate(shapes):
            img = value[n, starts[lvl]:starts[lvl + 1]].reshape(H, W, M, Dh).transpose(2, 3, 0, 1)
            for q in range(Lq):
                for m in range(M):
                    for p in range(P):
                        lx, ly = locations[n, q, m, lvl, p]
                        out[n, q, m] += weights[n, q, m, lvl, p] * _bilinear_zero_pad(
                            img[m], lx * W - 0.5, ly * H - 0.5)
    return out.reshape(N, Lq, M * Dh)


def test_grid_sample_matches_direct_bilinear_loop():
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (2, 2)]
    N, M, Dh, Lq, P = 2, 2, 3, 6, 3
    S = sum(h * w for h, w in shapes)
    value = torch.randn(N, S, M, Dh, generator=g)
    # include locations outside [0, 1] and exactly on borders
    loc = torch.rand(N, Lq, M, len(shapes), P, 2, generator=g) * 1.4 - 0.2
    loc[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0])
    w = torch.rand(N, Lq, M, len(shapes), P, generator=g)
    got = ms_deform_attn_sample(value, shapes, loc, w).numpy()
    ref = reference_ms_deform_attn(value, shapes, loc, w)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_sampling_at_pixel_centres_reads_the_pixel():
    """A location at a pixel centre returns that pixel exactly (no half-pixel shift)."""
    H, W = 4, 6
    value = torch.arange(H * W, dtype=torch.float32).view(1, H * W, 1, 1)
    ys, xs = 2, 5
    loc = torch.tensor([(xs + 0.5) / W, (ys + 0.5) / H]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn_sample(value, [(H, W)], loc, torch.ones(1, 1, 1, 1, 1))
    assert out.item() == pytest.approx(ys * W + xs)


def test_module_matches_reference_with_its_own_projections():
    torch.manual_seed(1)
    shapes = [(4, 6), (2, 3)]
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2).eval()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    S = sum(h * w for h, w in shapes)
    query, src = torch.randn(1, 5, 8), torch.randn(1, S, 8)
    ref_pts = torch.rand(1, 5, 2, 2)
    with torch.no_grad():
        got = attn(query, ref_pts, src, shapes).numpy()
        value = attn.value_proj(src).view(1, S, 2, 4)
        off = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
        wts = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)
        loc = ref_pts[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        ref = reference_ms_deform_attn(value, shapes, loc, wts)
        ref = attn.output_proj(torch.from_numpy(ref).float()).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
