"""The cross-sequence benchmark's cache of augmented bank views (bank.augment_*)."""

import numpy as np

from moduseg.bank.builder import build_bank
from moduseg.config import preset
from moduseg.settings import parse_overrides

from synthetic import ColourBackbone, dataset


class CountingBackbone(ColourBackbone):
    calls = 0

    def __call__(self, image):
        CountingBackbone.calls += 1
        return super().__call__(image)


def test_views_are_cached_per_tag_and_make_the_bank_build_makes(tmp_path, monkeypatch):
    from benchmarks import ablation
    import moduseg.build

    monkeypatch.setattr(moduseg.build, "load_default_backbone",
                        lambda home=None, **kw: CountingBackbone())
    cfg = preset("default").with_overrides(**parse_overrides(
        ["bank.augment_flip=True", "bank.augment_zoom=[2]", "bank.pca_dim=0",
         "bank.patch_purity=0.75"]))
    ds = dataset(3)
    assert [[] for _ in ds.samples] == ablation.cached_views(ds.samples, preset("default"),
                                                            tmp_path)
    views = ablation.cached_views(ds.samples, cfg, tmp_path)
    assert CountingBackbone.calls == 3 * 5 and [len(v) for v in views] == [5, 5, 5]
    assert len(list(tmp_path.glob("features-*"))) == 5          # one folder per view tag
    again = ablation.cached_views(ds.samples, cfg, tmp_path)
    assert CountingBackbone.calls == 3 * 5                       # read back, not recomputed
    for a, b in zip(views[0], again[0]):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])
    # the plain rows + the cached views give the bank 'bank build' makes with the views
    bb = ColourBackbone()
    rows = [(bb(s.image()).features.astype(np.float16), bb(s.image()).geometry, s.label(), None)
            for s in ds.samples]
    bank, _ = ablation.bank_from_rows(rows + [v for vs in views for v in vs], cfg,
                                      ds.class_names, 0, bb.identity)
    built = build_bank(ds, ColourBackbone(), cfg.bank)
    assert len(bank) == len(built)
    assert np.array_equal(np.sort(bank.labels), np.sort(built.labels))
