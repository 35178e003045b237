"""Perceptual colour difference (CIEDE2000) and class palettes whose colours can be
told apart.

Two class colours that look alike make an overlay lie (CamVid's own pedestrian
and tree are both olive). ``distinct_colours`` keeps each wanted colour when it
is far enough from every colour already chosen, and otherwise moves it to the
nearest colour that is, so familiar colours survive where they can.
Pure numpy; sRGB with the D65 white point.
"""

from __future__ import annotations

import numpy as np

# D65 reference white (CIE 1931 2 degree observer), XYZ scaled to Y = 1
_WHITE = np.array([0.95047, 1.0, 1.08883])
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_POW25_7 = 25.0 ** 7


def srgb_to_lab(rgb) -> np.ndarray:
    """CIE L*a*b* of 8-bit sRGB colours ``[..., 3]`` (D65)."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / _WHITE
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1, lab2) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1) of L*a*b* colours, broadcast
    over the leading axes.

    Follows Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations":
    hue angles in degrees in [0, 360), zero chroma gives hue 0, and the mean hue of
    two colours more than 180 degrees apart wraps round.
    """
    lab1, lab2 = np.asarray(lab1, np.float64), np.asarray(lab2, np.float64)
    L1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    L2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean ** 7 / (c_mean ** 7 + _POW25_7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    h1p = np.where((a1p == 0) & (b1 == 0), 0.0, h1p)
    h2p = np.where((a2p == 0) & (b2 == 0), 0.0, h2p)
    chroma0 = (c1p * c2p) == 0

    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma0, 0.0, dh)
    dH = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)

    L_mean = (L1 + L2) / 2
    cp_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2,
                      np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(chroma0, h_sum, h_mean)
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean ** 7 / (cp_mean ** 7 + _POW25_7))
    l50 = (L_mean - 50) ** 2
    s_l = 1 + 0.015 * l50 / np.sqrt(20 + l50)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    tl, tc, th = dL / s_l, dC / s_c, dH / s_h
    return np.sqrt(np.maximum(tl ** 2 + tc ** 2 + th ** 2 + r_t * tc * th, 0.0))


def pairwise_delta_e(rgb) -> np.ndarray:
    """``[C, C]`` CIEDE2000 differences between the 8-bit sRGB colours ``rgb``."""
    lab = srgb_to_lab(np.asarray(rgb).reshape(-1, 3))
    return ciede2000(lab[:, None], lab[None, :])


def min_delta_e(rgb) -> float:
    """The smallest CIEDE2000 difference between two of ``rgb`` (inf for < 2 colours)."""
    d = pairwise_delta_e(rgb)
    if len(d) < 2:
        return float("inf")
    return float(d[~np.eye(len(d), dtype=bool)].min())


def required_delta_e(n: int) -> float:
    """How far apart (CIEDE2000) the colours of an ``n``-class palette are kept.

    20 up to 12 classes: different at a glance, also as thin borders. Light,
    chromatic colours cannot all be that far apart when there are more of them
    (a greedy farthest-point choice reaches 19.6 for 21 classes, 10.3 for 80),
    so the bar falls as ``20 * sqrt(12 / n)``: 15.1 for VOC's 21 classes, 7.7 for
    COCO's 80, never below 5 (still told apart side by side).
    """
    if n <= 12:
        return 20.0
    return float(max(5.0, 20.0 * np.sqrt(12.0 / n)))


def _luma(rgb) -> np.ndarray:
    c = np.asarray(rgb, np.float64)
    return c[..., 0] * 0.2126 + c[..., 1] * 0.7152 + c[..., 2] * 0.0722


def _candidates(min_luma: float) -> tuple[np.ndarray, np.ndarray]:
    """The colours a class may get (and their L*a*b*): a 17-level-per-channel sRGB grid
    without near-greys (chroma < 15: they read as "not coloured") and near-white
    (L* > 92: washes a frame out), none darker than ``min_luma``."""
    key = float(min_luma)
    if key not in _CANDIDATES:
        levels = np.round(np.linspace(0, 255, 17)).astype(np.int64)
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
        lab = srgb_to_lab(grid)
        keep = ((_luma(grid) >= min_luma) & (np.hypot(lab[:, 1], lab[:, 2]) >= 15)
                & (lab[:, 0] <= 92))
        _CANDIDATES[key] = (grid[keep], lab[keep])
    return _CANDIDATES[key]


_CANDIDATES: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def distinct_colours(wanted, min_delta: float | None = None,
                     min_luma: float = 0.0) -> np.ndarray:
    """``[C, 3]`` uint8 class colours, at least ``min_delta`` apart (CIEDE2000; default
    ``required_delta_e(C)``), chosen in order.

    ``wanted[i]`` is a colour the class should keep (CamVid's own, say) or ``None``.
    A wanted colour is kept when it is far enough from every colour chosen before
    it, else replaced by the candidate colour nearest to it (CIEDE2000) that is and
    is about as colourful (chroma up to 30), so its hue survives where it can. A class with no wanted colour takes the candidate
    farthest from all chosen ones (the best spread a greedy choice gives). When no
    candidate is far enough, the farthest one is taken. Candidates: see
    ``_candidates`` (no darker than ``min_luma``).
    """
    rows = [None if w is None else np.asarray(w, np.int64).reshape(3) for w in wanted]
    if min_delta is None:
        min_delta = required_delta_e(len(rows))
    cand, cand_lab = _candidates(min_luma)
    chosen: list[np.ndarray] = []
    # distance of every candidate to its nearest chosen colour so far
    nearest = np.full(len(cand), np.inf)
    chosen_lab = np.zeros((0, 3))
    for rgb in rows:
        if rgb is not None:
            lab = srgb_to_lab(rgb)
            if len(chosen_lab) and float(ciede2000(lab[None], chosen_lab).min()) < min_delta:
                # as colourful as the wanted colour (up to C* 30): a moved class gets a
                # clear colour, not the dull grey-green nearest to it
                vivid = np.hypot(cand_lab[:, 1], cand_lab[:, 2]) >= min(
                    30.0, float(np.hypot(lab[1], lab[2])))
                far = (nearest >= min_delta) & vivid
                if not far.any():
                    far = nearest >= min_delta
                if far.any():
                    pick = np.flatnonzero(far)[int(np.argmin(ciede2000(lab[None], cand_lab[far])))]
                else:
                    pick = int(np.argmax(nearest))
                rgb, lab = cand[pick], cand_lab[pick]
        else:
            pick = int(np.argmax(nearest)) if len(chosen_lab) else _first_pick(cand_lab)
            rgb, lab = cand[pick], cand_lab[pick]
        chosen.append(rgb)
        chosen_lab = np.vstack([chosen_lab, lab[None]])
        nearest = np.minimum(nearest, ciede2000(lab[None], cand_lab))
    return np.array(chosen, np.uint8).reshape(-1, 3)


def _first_pick(cand_lab: np.ndarray) -> int:
    """With nothing chosen yet: the most chromatic candidate (a clear, saturated colour)."""
    return int(np.argmax(np.hypot(cand_lab[:, 1], cand_lab[:, 2])))
