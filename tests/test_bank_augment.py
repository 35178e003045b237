"""Bank augmentation (bank.augment_flip / augment_gamma / augment_zoom): known answers."""

import dataclasses

import numpy as np
import pytest

from moduseg.bank.augment import augmented, bank_views, gamma_lut, view_tags, zoom_boxes
from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, preset
from moduseg.errors import InputError
from moduseg.settings import parse_overrides

from synthetic import ColourBackbone, dataset, scene

CFG = BankConfig(granularity="patch", purification="none", min_area=0, outlier_fraction=0.0,
                 patch_purity=0.75)


class CountingBackbone(ColourBackbone):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __call__(self, image):
        self.shapes.append(image.shape[:2])
        return super().__call__(image)


def test_options_are_off_by_default_and_checked():
    assert not augmented(BankConfig()) and not augmented(preset("default").bank)
    cfg = preset("default").with_overrides(**parse_overrides(
        ["bank.augment_flip=True", "bank.augment_gamma=[0.5,2]", "bank.augment_zoom=[2]"]))
    assert (cfg.bank.augment_flip, cfg.bank.augment_gamma, cfg.bank.augment_zoom) == \
        (True, (0.5, 2.0), (2.0,))
    assert augmented(cfg.bank)
    with pytest.raises(InputError, match="augment_zoom"):
        BankConfig(augment_zoom=(1.0,))          # a zoom must enlarge
    with pytest.raises(InputError, match="augment_gamma"):
        BankConfig(augment_gamma=(0.0,))


def test_gamma_table_known_values():
    assert np.array_equal(gamma_lut(1.0), np.arange(256, dtype=np.uint8))
    lut = gamma_lut(2.0)
    assert (lut[0], lut[128], lut[255]) == (0, 64, 255)        # 255 * (128/255)^2 = 64.25
    assert gamma_lut(0.5)[64] == 128                            # 255 * (64/255)^0.5 = 127.75


def test_zoom_boxes_tile_the_image_edge_to_edge():
    assert zoom_boxes((360, 480), 2.0) == [(0, 0, 180, 240), (0, 240, 180, 240),
                                           (180, 0, 180, 240), (180, 240, 180, 240)]
    boxes = zoom_boxes((360, 480), 1.5)
    assert boxes == [(0, 0, 240, 320), (0, 160, 240, 320), (120, 0, 240, 320),
                     (120, 160, 240, 320)]
    cover = np.zeros((360, 480), bool)
    for t, left, h, w in boxes:
        cover[t:t + h, left:left + w] = True
    assert cover.all()
    assert len(zoom_boxes((360, 480), 3.0)) == 9


def test_views_transform_image_and_label_alike():
    image, label = scene(3)
    cfg = dataclasses.replace(CFG, augment_flip=True, augment_gamma=(2.0,), augment_zoom=(2.0,))
    views = list(bank_views(image, label, cfg))
    assert [v.tag for v in views] == view_tags(cfg) == \
        ["", "flip", "gamma2", "zoom2-0", "zoom2-1", "zoom2-2", "zoom2-3"]
    assert views[0].image is image and views[0].label is label
    assert np.array_equal(views[1].image, image[:, ::-1])
    assert np.array_equal(views[1].label, label[:, ::-1])
    assert np.array_equal(views[2].image, gamma_lut(2.0)[image])
    assert views[2].label is label
    h, w = label.shape
    assert np.array_equal(views[6].label, label[h // 2:, w // 2:])
    assert np.array_equal(views[6].image, image[h // 2:, w // 2:])


def test_build_embeds_each_view_once_with_the_images_id():
    ds = dataset(3)
    plain = build_bank(ds, ColourBackbone(), CFG)
    bb = CountingBackbone()
    cfg = dataclasses.replace(CFG, augment_flip=True, augment_zoom=(2.0,))
    bank = build_bank(ds, bb, cfg)
    assert len(bb.shapes) == 3 * (1 + 1 + 4)
    assert bb.shapes[:6] == [(96, 128), (96, 128), (48, 64), (48, 64), (48, 64), (48, 64)]
    assert set(bank.image_ids) == set(plain.image_ids)
    # a mirrored scene has the same classes and as many pure patches of each
    flip = build_bank(ds, ColourBackbone(), dataclasses.replace(CFG, augment_flip=True))
    assert len(flip) == 2 * len(plain)
    assert np.array_equal(np.bincount(flip.labels), 2 * np.bincount(plain.labels))
    # separable features: every view's vector still points at its class
    for v, lab in zip(bank.vectors.astype(np.float32), bank.labels):
        assert np.argmax(v) == lab


def test_without_augmentation_the_bank_is_unchanged():
    ds = dataset(3)
    a = build_bank(ds, ColourBackbone(), CFG)
    b = build_bank(ds, ColourBackbone(), dataclasses.replace(CFG, augment_gamma=()))
    assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.labels, b.labels)
