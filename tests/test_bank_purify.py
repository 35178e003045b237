import numpy as np

from moduseg.bank.purify import erode, erode_adaptive, purify
from moduseg.config import BankConfig


def test_erosion_shrinks_by_one_pixel_per_iteration():
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    assert erode(m, 3, 1).sum() == 18 * 18
    assert erode(m, 3, 5).sum() == 10 * 10


def test_thin_region_vanishes_after_twenty_iterations():
    m = np.zeros((100, 100), bool)
    m[10:90, 45:55] = True     # 10 px wide
    assert erode(m, 3, 20).sum() == 0


def test_image_border_does_not_erode():
    m = np.zeros((30, 30), bool)
    m[:, :15] = True           # touches top, bottom and left borders
    e = erode(m, 3, 5)
    assert e[0, 0] and e[29, 0] and e[:, :10].all() and not e[:, 10:].any()


def test_zero_iterations_and_none_policy_keep_the_mask():
    m = np.zeros((10, 10), bool)
    m[2:5, 2:5] = True
    assert (erode(m, 3, 0) == m).all()
    assert (purify(m, BankConfig(purification="none")) == m).all()


def test_adaptive_stops_before_losing_more_than_allowed():
    m = np.zeros((50, 50), bool)
    m[10:40, 10:40] = True     # 30x30; n erosions leave (30-2n)^2
    e = erode_adaptive(m, 3, 20, keep=0.5)
    assert e.sum() == 22 * 22  # n = 4 is the deepest keeping >= 450 px
    thin = np.zeros((50, 50), bool)
    thin[10:40, 20:23] = True  # 3 px wide: one erosion keeps 1/3 < 0.5
    assert (erode_adaptive(thin, 3, 20, keep=0.5) == thin).all()


def test_adaptive_matches_fixed_when_region_is_large():
    m = np.zeros((200, 200), bool)
    m[20:180, 20:180] = True
    cfg = BankConfig(purification="adaptive", adaptive_keep=0.1)
    assert (purify(m, cfg) == erode(m, 3, 20)).all()
