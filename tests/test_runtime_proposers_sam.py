"""SAM automatic mask generator: preprocessing, geometry, proposals on a real model."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from moduseg.config import SamOptions

from moduseg.models.defaults import default_model_paths

from moduseg.errors import InputError, ModelNotFoundError
from moduseg.runtime.proposers import sam as sam_mod
from moduseg.types import Proposals, Proposer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_preprocess_pads_bottom_right_with_zeros():
    img = np.full((300, 500, 3), 200, np.uint8)
    x, (rh, rw) = sam_mod.preprocess(img)
    assert x.shape == (1, 3, 1024, 1024) and (rh, rw) == (614, 1024)
    want = (200 - sam_mod.PIXEL_MEAN) / sam_mod.PIXEL_STD
    np.testing.assert_allclose(x[0, :, 100, 100], want, rtol=1e-5)
    assert not x[0, :, rh:, :].any()


@pytest.mark.parametrize("bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), "image"])
def test_bad_images_are_refused(bad):
    with pytest.raises(InputError):
        sam_mod.preprocess(bad)


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    try:
        enc, dec = default_model_paths()
    except ModelNotFoundError as e:
        pytest.skip(f"SAM models not installed: {e}")
    return sam_mod.SamAutomaticMaskGenerator(
        enc, dec, points_per_side=(2, 3), refine_points=2, mask_stride=2, threads=2,
        quantize_encoder=False,   # quantising the encoder takes ~15 s; tested on a tiny graph
        cache_dir=tmp_path_factory.mktemp("sam_cache"))


def _frame() -> np.ndarray:
    frames = sorted((DATA / "camvid" / "val").glob("*.png"))
    if frames:
        return cv2.cvtColor(cv2.imread(str(frames[0])), cv2.COLOR_BGR2RGB)
    # fallback: a synthetic non-square scene with a few flat shapes
    img = np.full((360, 480, 3), (90, 140, 200), np.uint8)
    img[200:] = (80, 80, 80)
    cv2.circle(img, (150, 150), 60, (200, 40, 40), -1)
    cv2.rectangle(img, (300, 220), (420, 330), (30, 160, 30), -1)
    return img


@pytest.mark.models
def test_generate_covers_exactly_the_image(generator):
    img = _frame()[:, :440]                      # 360 x 440: non-square, not a multiple of 8
    assert isinstance(generator, Proposer)
    props = generator(img)
    assert isinstance(props, Proposals)
    assert props.image_hw == img.shape[:2]
    # 1024/440 scale -> 838 x 1024 encoder pixels -> 8-pixel cells, padding cropped
    assert props.mask_hw == (round(360 * 1024 / 440 / 8), 128) == generator.grid_hw()
    assert len(props) > 0
    assert np.all((props.scores >= 0) & (props.scores <= 1))
    assert np.all(np.diff(props.scores) <= 0)      # best objectness first
    assert props.masks.reshape(len(props), -1).any(1).all()
    t = generator.last_stats["timings_ms"]
    assert {"encoder", "decoder", "postprocess"} <= set(t)


@pytest.mark.models
def test_upsampled_output_grid(generator, monkeypatch):
    import dataclasses
    monkeypatch.setattr(generator, "options",
                        dataclasses.replace(generator.options, output_upsample=2))
    img = _frame()
    props = generator(img)
    assert props.mask_hw == (192, 256) == generator.output_hw()   # 2 x the 96 x 128 grid
    assert len(props) > 0 and props.image_hw == (360, 480)


@pytest.mark.models
def test_predict_shapes_and_selection(generator):
    img = _frame()
    generator.set_image(img)
    pts = np.array([[100, 100], [300, 250]], np.float32)
    multi = generator.predict(pts)
    gh, gw = generator.grid_hw()
    assert (gh, gw) == (96, 128)                 # 480x360 -> 1024x768 -> 96x128 cells
    assert multi.logits.shape == (2, 3, gh, gw) and multi.iou.shape == (2, 3)
    single = generator.predict(pts, multimask=False)
    assert single.logits.shape == (2, 1, gh, gw)
    best = np.argmax(multi.iou, axis=1)
    np.testing.assert_allclose(single.iou[:, 0], multi.iou[np.arange(2), best], atol=1e-6)
    # two foreground points in one prompt -> the single-mask token
    two = generator.predict(pts[None], np.ones((1, 2)), multimask=False)
    assert two.logits.shape == (1, 1, gh, gw)


def test_predict_needs_an_image():
    g = sam_mod.SamAutomaticMaskGenerator.__new__(sam_mod.SamAutomaticMaskGenerator)
    g._image = None
    with pytest.raises(InputError, match="set_image"):
        g.predict(np.zeros((1, 2), np.float32))


def test_bad_settings_are_refused():
    with pytest.raises(InputError):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", mask_stride=3)
    with pytest.raises(InputError):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", pred_iou_thresh=1.5)
    with pytest.raises(InputError):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", output_upsample=3)
    with pytest.raises(InputError):
        sam_mod.SamAutomaticMaskGenerator("x.onnx", "y.onnx", point_sampler="random")
    with pytest.raises(ModelNotFoundError):
        sam_mod.SamAutomaticMaskGenerator("/nonexistent/encoder.onnx", "/nonexistent/sam.onnx")


def test_crop_masks_land_in_their_tile(monkeypatch):
    """Multi-crop: tile masks are resampled into the tile's box on the full grid."""
    g = sam_mod.SamAutomaticMaskGenerator.__new__(sam_mod.SamAutomaticMaskGenerator)
    g.options = SamOptions(mask_stride=4, crop_n_layers=1, nms_iou_thresh=0.7, output_upsample=1)
    g.timer, g.last_stats = g.timer_cls(), {}
    seen = []

    def fake_one(crop):
        _, resized = sam_mod.preprocess(crop)
        g._image = sam_mod.SamImage(None, crop.shape[:2], resized)
        gh, gw = g.grid_hw()
        m = np.zeros((1, gh, gw), bool)
        m[0, gh // 3: 2 * gh // 3, gw // 3: 2 * gw // 3] = True    # away from tile edges
        edge = np.zeros((1, gh, gw), bool)
        edge[0, gh // 3: 2 * gh // 3, : gw // 4] = True            # touches the left edge
        seen.append(crop.shape[:2])
        g.last_stats["prompts"] = 1
        return np.concatenate([m, edge]), np.array([0.9, 0.8], np.float32)

    monkeypatch.setattr(g, "_generate_one", fake_one)
    img = np.zeros((360, 480, 3), np.uint8)
    masks, scores, (gh, gw) = g._generate_crops(img)
    assert (gh, gw) == (48, 64) and len(seen) == 5 and g.last_stats["prompts"] == 5
    assert masks.shape[1:] == (48, 64)
    # full-image pass: 2 masks; each of 4 tiles: the centre mask (the left-edge
    # mask survives only in the two tiles whose left edge is the image border)
    assert len(masks) == 2 + 4 + 2
    tl = [m for m in masks if m[:24, :32].any() and not m[30:, 40:].any() and m.sum() < 200]
    assert tl, "a top-left tile mask should sit in the top-left quadrant"


@pytest.mark.models
@pytest.mark.parametrize("iou", [0.99, 0.0])   # empty masks / nothing passes the IoU filter
def test_no_mask_passing_gives_empty_proposals(generator, monkeypatch, iou):
    def nothing(pts, labels=None, multimask=None):
        gh, gw = generator.grid_hw()
        return sam_mod.SamPrediction(np.full((len(pts), 3, gh, gw), -10.0, np.float32),
                                     np.full((len(pts), 3), iou, np.float32))

    monkeypatch.setattr(generator, "predict", nothing)
    props = generator(_frame())
    assert len(props) == 0 and props.mask_hw == generator.grid_hw()


@pytest.mark.models
def test_settings_name_what_shapes_the_proposals(generator):
    s = generator.settings
    assert s["points_per_side"] == (2, 3) and s["mask_stride"] == 2
    assert s["padding_pool"] == 4 and s["encoder_crop"] is True
    assert s["decoder"].endswith("_cells.onnx") and "int8" not in s["encoder"]


@pytest.mark.models
def test_thin_points_are_prompted_beside_the_sampled_ones(generator, monkeypatch):
    import dataclasses

    from moduseg.runtime.proposers import mask_ops
    assert "thin_points" not in generator.settings      # unset: cache keys as before
    img = _frame()
    img[40:300, 200:203] = 20                           # a dark pole on whatever is there
    prompted = []

    def spy(pts, labels=None, multimask=None):
        prompted.append(np.asarray(pts)[:, 0].copy())
        gh, gw = generator.grid_hw()
        return sam_mod.SamPrediction(np.full((len(pts), 3, gh, gw), -10.0, np.float32),
                                     np.full((len(pts), 3), 0.9, np.float32))

    monkeypatch.setattr(generator, "predict", spy)
    monkeypatch.setattr(generator, "options",
                        dataclasses.replace(generator.options, thin_points=3))
    assert generator.settings["thin_points"] == 3
    generator(img)
    thin = mask_ops.thin_structure_points(img, 3) * np.array([480, 360], np.float32)
    assert 1 <= len(thin) <= 3
    assert len(prompted[0]) == 2 * 3 + len(thin)        # points_per_side (2, 3) + thin ones
    np.testing.assert_allclose(prompted[0][-len(thin):], thin)
    assert any(abs(x - 201.5) < 2 and 40 <= y <= 300 for x, y in thin)   # the pole is one


def test_thin_points_option_is_checked():
    assert SamOptions().thin_points == 0
    assert SamOptions(thin_points=8).thin_points == 8
    with pytest.raises(InputError):
        SamOptions(thin_points=-1)
