import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.errors import BankError, InputError
from moduseg.evaluate import Evaluator
from moduseg.runtime.index import build_index
from moduseg.runtime.pipeline import Segmenter, assign
from moduseg.types import IGNORE, BackboneIdentity, FeatureMap, Proposals

from synthetic import ColourBackbone, dataset, gt_proposals, scene
import dataclasses  # noqa: E402
from moduseg.config import preset  # noqa: E402
from reliability_fixtures import patch_bank  # noqa: E402,F401
from synthetic import RaisingProposer  # noqa: E402
from moduseg.runtime.pipeline import assign_patches, class_filter  # noqa: E402

BANK_CFG = BankConfig(erosion_iterations=3, min_area=50, outlier_fraction=0.25)


@pytest.fixture(scope="module")
def bank():
    return build_bank(dataset(8), ColourBackbone(), BANK_CFG)


class GTProposer:
    name = "gt"

    def __init__(self):
        self.label = None

    def __call__(self, image):
        return gt_proposals(self.label)


def segment_scenes(bank, cfg: RuntimeConfig, seeds):
    """Segment synthetic scenes with ground-truth proposals: (mIoU, results)."""
    proposer = GTProposer()
    seg = Segmenter(ColourBackbone(), proposer, bank, cfg)
    ev = Evaluator(bank.class_names)
    results = []
    for seed in seeds:
        image, label = scene(seed)
        proposer.label = label
        results.append(seg(image))
        ev.add(results[-1].label_map, label)
    return ev.scores().miou, results


def test_end_to_end_synthetic_scene_reaches_100_miou(bank):
    miou, results = segment_scenes(
        bank, RuntimeConfig(min_area=50, top_k=5, unassigned="background"), range(100, 105))
    for res in results:
        assert set(res.timings_ms) >= {"backbone", "proposer", "pool", "search", "vote", "nms",
                                       "raster", "fill"}
    assert miou == pytest.approx(100.0)


def test_background_votes_are_not_painted_and_policies_fill_them(bank):
    image, label = scene(7)
    fmap = ColourBackbone()(image)
    index = build_index(bank.vectors)
    props = gt_proposals(label)
    bg_pixels = label == 0
    for policy, expect in (("ignore", IGNORE), ("background", 0), ("nearest", 0)):
        cfg = RuntimeConfig(min_area=50, top_k=5, unassigned=policy)
        res = assign(fmap, props, bank, index, cfg)
        seg_bg = [s for s in res.segments if s.label == 0][0]
        assert seg_bg.painted_pixels == 0
        inner = bg_pixels.copy()
        inner[:8] = inner[-8:] = False
        assert (res.label_map[bg_pixels & (res.label_map != expect)].size
                <= 0.1 * bg_pixels.sum()), policy


def test_nearest_fills_unproposed_objects(bank):
    image, label = scene(3)
    fmap = ColourBackbone()(image)
    empty = Proposals.empty(label.shape)
    res = assign(fmap, empty, bank, build_index(bank.vectors),
                 RuntimeConfig(top_k=5, unassigned="nearest"))
    agree = (res.label_map == label).mean()
    assert agree > 0.85


def test_low_objectness_and_small_proposals_are_dropped(bank):
    image, label = scene(3)
    fmap = ColourBackbone()(image)
    props = gt_proposals(label)
    props.scores[:] = 0.5
    res = assign(fmap, props, bank, build_index(bank.vectors),
                 RuntimeConfig(top_k=5, unassigned="ignore"))
    assert res.segments == [] and (res.label_map == IGNORE).all()


def test_bad_inputs_are_refused(bank):
    image, label = scene(3)
    fmap = ColourBackbone()(image)
    index = build_index(bank.vectors)
    with pytest.raises(InputError, match="top_k"):
        RuntimeConfig(top_k=0)
    with pytest.raises(InputError, match="image"):
        assign(fmap, Proposals.empty((10, 10)), bank, index, RuntimeConfig())
    with pytest.raises(InputError, match="\\[P, H, W\\]"):
        Proposals(np.zeros((5, 5), bool), np.ones(1), (5, 5))
    with pytest.raises(InputError, match="one score per mask"):
        Proposals(np.zeros((2, 5, 5), bool), np.ones(3), (5, 5))
    wrong_dim = FeatureMap(np.ones((7,) + fmap.features.shape[1:], np.float32), fmap.geometry)
    with pytest.raises(InputError, match="feature dim"):
        assign(wrong_dim, gt_proposals(label), bank, index, RuntimeConfig())
    seg = Segmenter(ColourBackbone(), GTProposer(), bank, RuntimeConfig(top_k=5))
    with pytest.raises(InputError, match="grayscale"):
        seg(np.zeros((10, 10), np.float32))
    with pytest.raises(InputError, match="uint8"):
        seg(np.zeros((10, 10, 3), np.float32))


def test_segmenter_refuses_a_bank_from_another_backbone(bank):
    class Other(ColourBackbone):
        def __init__(self):
            super().__init__()
            self.identity = BackboneIdentity("other", "native", 8, 5, "1" * 64)
    with pytest.raises(BankError, match="different backbone"):
        Segmenter(Other(), GTProposer(), bank)


def test_nan_features_at_runtime_are_refused(bank):
    class NaNBackbone(ColourBackbone):
        def __call__(self, image):
            f = super().__call__(image)
            f.features[:] = np.inf
            return f
    image, label = scene(1)
    p = GTProposer(); p.label = label
    with pytest.raises(InputError, match="NaN or infinite"):
        Segmenter(NaNBackbone(), p, bank, RuntimeConfig(top_k=5))(image)


def test_result_json_is_serialisable(bank):
    import json
    image, label = scene(2)
    p = GTProposer(); p.label = label
    res = Segmenter(ColourBackbone(), p, bank, RuntimeConfig(min_area=50, top_k=5))(image)
    rec = json.loads(json.dumps(res.to_json()))
    assert rec["segments"] and {"label", "confidence", "class_name"} <= set(rec["segments"][0])


def test_patch_vote_takes_the_weighted_majority_of_patch_labels():
    from moduseg.runtime.pipeline import patch_vote
    weights = np.array([[1.0, 1.0, 0.5, 0.0], [0.2, 0.0, 0.0, 1.0]], np.float32)
    cell_labels = np.array([2, 2, 1, -1])
    winner, conf = patch_vote(weights, cell_labels, 3)
    assert winner[0] == 2 and np.isclose(conf[0], 2 / 2.5)
    assert winner[1] == 2 and np.isclose(conf[1], 0.2 / 1.2)   # the unlabelled cell counts for none


def test_patch_bank_and_patch_vote_segment_the_synthetic_scene():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0, outlier_fraction=0,
                     patch_purity=1.0, patches_per_region=6)
    bank = build_bank(dataset(6), ColourBackbone(), cfg)
    assert len(bank) <= 6 * 5 * 6
    for v, l in zip(bank.vectors.astype(np.float32), bank.labels):
        assert np.argmax(v) == l
    miou, _ = segment_scenes(bank, RuntimeConfig(min_area=50, top_k=5, assignment="patch_vote",
                                                 unassigned="background"), range(200, 204))
    assert miou == pytest.approx(100.0)


def test_classes_with_fewer_vectors_than_k_are_reported(bank, caplog):
    from moduseg.runtime.pipeline import warn_small_classes
    counts = bank.class_counts()
    k = max(counts.values()) + 1
    with caplog.at_level("WARNING"):
        small = warn_small_classes(bank, k)
    assert len(small) == sum(1 for c in counts.values() if 0 < c < k)
    assert "lower runtime.top_k" in caplog.text


def test_video_reuses_proposals_of_an_unchanged_frame_once(bank):
    calls = []

    class Counting(GTProposer):
        def __call__(self, image):
            calls.append(1)
            return super().__call__(image)

    image, label = scene(4)
    proposer = Counting()
    proposer.label = label
    cfg = RuntimeConfig(min_area=50, top_k=5, reuse_proposals_below=2.0, reuse_max_age=1)
    seg = Segmenter(ColourBackbone(), proposer, bank, cfg)
    first = seg(image)
    second = seg(image)                      # unchanged: reused
    third = seg(image)                       # reused once already: proposer runs again
    assert len(calls) == 2
    np.testing.assert_array_equal(first.label_map, second.label_map)
    other, other_label = scene(5)
    proposer.label = other_label
    seg(other)                               # a different frame is never reused
    assert len(calls) == 3
    del third


class _FixedProposer:
    name = "fixed"

    def __init__(self, make):
        self.make = make

    def __call__(self, image):
        return self.make(image)


def _tiny_masks(image):
    # one-pixel masks: all fall below any min_area and are filtered out
    H, W = image.shape[:2]
    m = np.zeros((2, H, W), bool)
    m[:, 0, 0] = True
    return Proposals(m, np.array([0.99, 0.5], np.float32), (H, W))


@pytest.mark.parametrize("name", ["paper", "default"])
@pytest.mark.parametrize("hw", [(1, 1), (8, 8), (40, 56)])
@pytest.mark.parametrize("make", [lambda im: Proposals.empty(im.shape[:2]), _tiny_masks],
                         ids=["none", "all-filtered"])
def test_a_frame_without_proposals_is_a_normal_frame(patch_bank, name, hw, make):
    rcfg = dataclasses.replace(preset(name).runtime, index="flat", min_area=4, top_k=3)
    seg = Segmenter(ColourBackbone(), _FixedProposer(make), patch_bank, rcfg, parallel=False)
    image = np.zeros(hw + (3,), np.uint8)
    res = seg(image)
    assert res.label_map.shape == hw and res.label_map.dtype == np.uint8
    assert all(s.painted_pixels == 0 for s in res.segments)
    if rcfg.unassigned == "nearest":   # default: every pixel takes its patch's label
        assert (res.label_map != IGNORE).all()


def test_frames_above_the_work_limit_are_segmented_downscaled(patch_bank, monkeypatch):
    from moduseg.evaluate import Evaluator
    from moduseg.runtime import pipeline
    from synthetic import gt_proposals, scene
    image, label = scene(3)                              # 96 x 128
    seen = []

    def propose(im):
        seen.append(im.shape[:2])
        small = cv2_resize_nearest(label, im.shape[:2])
        return gt_proposals(small)

    monkeypatch.setattr(pipeline, "MAX_WORK_PIXELS", 48 * 64)
    rcfg = dataclasses.replace(preset("paper").runtime, index="flat", min_area=10, top_k=3,
                               unassigned="background")
    seg = Segmenter(ColourBackbone(), _FixedProposer(propose), patch_bank, rcfg,
                    parallel=False)
    res = seg(image)
    assert seen == [(48, 64)] and res.label_map.shape == (96, 128)
    ev = Evaluator(patch_bank.class_names)
    ev.add(res.label_map, label)
    assert ev.scores().pixel_acc > 0.95
    assert max(s.area for s in res.segments) > 48 * 64 / 4   # areas in the frame's pixels


def cv2_resize_nearest(a, hw):
    import cv2
    return cv2.resize(a, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def test_patch_mode_labels_every_pixel_without_a_proposer():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0.0, patch_purity=0.75)
    bank = build_bank(dataset(8), ColourBackbone(), cfg)
    rt = RuntimeConfig(assignment="patch", top_k=5, refine_radius=4)
    seg = Segmenter(ColourBackbone(), RaisingProposer(), bank, rt)
    ev = Evaluator(bank.class_names)
    for seed in range(100, 104):
        image, label = scene(seed)
        res = seg(image)
        assert res.segments == [] and "proposer" not in res.timings_ms
        ev.add(res.label_map, label)
    # 8-px patches on 30x38 rectangles: edges are where the error is
    assert ev.scores().miou > 80


@pytest.fixture(scope="module")
def options_bank():
    return build_bank(dataset(6), ColourBackbone(), BankConfig(erosion_iterations=3, min_area=50))


def _mixed(label):
    """One mask per class region, plus one mask spanning two regions (a split vote)."""
    cs = [int(c) for c in np.unique(label) if c != 0]
    masks = [label == 0] + [label == c for c in cs[:2]] + [(label == cs[2]) | (label == cs[3])]
    return Proposals(np.stack(masks), np.ones(len(masks)), label.shape), cs


def _run(bank, label, image, props, **kw):
    cfg = RuntimeConfig(min_area=50, top_k=5, unassigned="nearest", **kw)
    return assign(ColourBackbone()(image), props, bank, build_index(bank.vectors), cfg)


def test_segments_below_the_confidence_threshold_are_left_unassigned(options_bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    base = _run(options_bank, label, image, props)
    conf = {s.proposal: s.confidence for s in base.segments}
    assert conf[3] < conf[1] and conf[3] < conf[2]          # the split vote is the unsure one
    thr = (conf[3] + min(conf[1], conf[2])) / 2
    res = _run(options_bank, label, image, props, min_confidence=thr)
    seg = {s.proposal: s for s in res.segments}
    assert seg[3].label == -1 and seg[3].class_name == "" and seg[3].painted_pixels == 0
    assert seg[1].label == cs[0] and seg[1].painted_pixels > 0
    # its pixels stay unassigned although runtime.unassigned=nearest would fill them
    assert (res.label_map[props.masks[3]] == IGNORE).all()
    assert (base.label_map[props.masks[3]] != IGNORE).all()
    assert (res.label_map[props.masks[1]] == cs[0]).all()


def test_class_filter_paints_only_the_named_classes(options_bank):
    image, label = scene(5)
    props, cs = _mixed(label)
    name = options_bank.class_names[cs[0]]
    res = _run(options_bank, label, image, props, classes=(name,))
    assert set(np.unique(res.label_map)) == {cs[0], IGNORE}
    assert (res.label_map[label == cs[0]] == cs[0]).all()
    assert res.segments and all(s.class_name in (name, "") for s in res.segments)
    # names are matched case-insensitively
    res2 = _run(options_bank, label, image, props, classes=(name.upper(),))
    assert (res2.label_map == res.label_map).all()


def test_class_filter_on_the_patch_path(options_bank):
    image, label = scene(5)
    name = options_bank.class_names[int(label.max())]
    cfg = RuntimeConfig(assignment="patch", top_k=5, classes=(name,))
    res = assign_patches(ColourBackbone()(image), options_bank, build_index(options_bank.vectors), cfg)
    assert set(np.unique(res.label_map)) <= {int(label.max()), IGNORE}
    assert (res.label_map == int(label.max())).any()


def test_unknown_class_names_one_line(options_bank):
    with pytest.raises(InputError, match=r"no class 'clas1' \(did you mean 'class1'\?\); its "
                                         r"classes: background, class1"):
        class_filter(("clas1",), options_bank.class_names)
    assert class_filter((), options_bank.class_names) is None


def test_confidence_threshold_needs_segments():
    with pytest.raises(InputError, match="min_confidence applies to segments"):
        RuntimeConfig(assignment="patch", min_confidence=0.5)
    RuntimeConfig(assignment="patch_vote", min_confidence=0.5)


@pytest.mark.parametrize("name", ["paper", "default"])
def test_relabel_labels_given_proposals_without_the_proposer(patch_bank, bank, name):
    """``Segmenter.relabel`` (the temporal path's vote frames): the frame's own features
    vote on proposals it is given; the proposer never runs. Given the proposals the
    proposer would make it gives the full pipeline's labels; given proposals translated
    with the image it gives the translated labels."""
    use = bank if name == "paper" else patch_bank
    rcfg = dataclasses.replace(preset(name).runtime, index="flat", min_area=50, top_k=5,
                               refine_radius=0)
    image, label = scene(7)
    full = Segmenter(ColourBackbone(), _FixedProposer(lambda im: gt_proposals(label)), use,
                     rcfg, parallel=False)(image)
    seg = Segmenter(ColourBackbone(), RaisingProposer(), use, rcfg, parallel=False)
    same = seg.relabel(image, gt_proposals(label))
    np.testing.assert_array_equal(same.label_map, full.label_map)
    assert "proposer" not in same.timings_ms and "backbone" in same.timings_ms
    # the camera moved: content 16 px left and 8 px up (a patch multiple: same features)
    moved_img = np.roll(image, (-8, -16), axis=(0, 1))
    moved_lab = np.roll(label, (-8, -16), axis=(0, 1))
    moved = seg.relabel(moved_img, gt_proposals(moved_lab))
    np.testing.assert_array_equal(moved.label_map, np.roll(full.label_map, (-8, -16),
                                                           axis=(0, 1)))
    assert (moved.label_map == moved_lab).mean() > 0.99
