import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.evaluate import Evaluator, confusion, gt_proposals
import dataclasses  # noqa: E402
from moduseg.config import preset  # noqa: E402
from moduseg.runtime.pipeline import assign  # noqa: E402
from moduseg.types import IGNORE  # noqa: E402
from synthetic import ColourBackbone  # noqa: E402
from reliability_fixtures import _run, _write_png, patch_bank  # noqa: E402,F401
from app_fixtures import _cli, _fill, _one_line_error, no_models, tiny_tmpfs  # noqa: E402,F401


def test_miou_with_ignore_and_missed_pixels():
    gt = np.array([[0, 0, 1, 1], [0, 255, 1, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [255, 0, 1, 1]], np.uint8)
    ev = Evaluator(["a", "b"])
    ev.add(pred, gt)
    s = ev.scores()
    # class a: tp 1 (0,0); gt a = 3 pixels; predicted a also at (1,1) which is ignore -> skipped
    # a: tp1, fn 2 (one predicted b, one predicted 255), fp 0 -> IoU 1/3
    # b: tp 4, fp 1 -> IoU 4/5
    np.testing.assert_allclose(s.iou, [1 / 3, 4 / 5])
    assert s.miou == pytest.approx((1 / 3 + 4 / 5) / 2 * 100)
    assert s.pixel_acc == pytest.approx(5 / 7)


def test_absent_classes_do_not_count():
    gt = np.zeros((4, 4), np.uint8)
    ev = Evaluator(["a", "b", "c"])
    ev.add(gt.copy(), gt)
    s = ev.scores()
    assert s.miou == pytest.approx(100) and np.isnan(s.iou[1])
    assert "n/a" in s.table()
    assert s.to_json()["per_class_iou"]["b"] is None


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError):
        confusion(np.zeros((2, 2)), np.zeros((3, 2)), 2)


def test_gt_proposals_cover_every_labelled_pixel():
    gt = np.array([[0, 0, 2], [255, 2, 2]], np.uint8)
    p = gt_proposals(gt)
    assert len(p) == 2 and p.masks.sum() == 5 and (p.scores == 1).all()
    comp = gt_proposals(np.array([[1, 0, 1]], np.uint8), "components")
    assert len(comp) == 3


def test_ground_truth_outside_the_classes_is_refused_not_ignored():
    """#29 item 6: a label value >= the class count was skipped, so a wrong class list
    scored mIoU 100; it is now one line naming the image and the fix."""
    from moduseg.errors import InputError
    gt = np.array([[0, 1], [7, 255]], np.uint8)
    with pytest.raises(InputError, match=r"img3 holds class values 7 outside the 2 classes"):
        Evaluator(["a", "b"]).add(gt.copy(), gt, "img3")
    ev = Evaluator(["a", "b"])
    ev.add(np.array([[0, 1], [1, 0]]), np.array([[0, 1], [255, 255]]))   # ignore still skipped
    assert ev.scores().miou == 100.0


def test_eval_cli_with_labels_outside_the_class_list(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from moduseg.cli import cli
    for d in ("img", "gt", "pred"):
        (tmp_path / d).mkdir()
    lab = np.zeros((6, 8), np.uint8)
    lab[3:] = 2                                        # class 2 of a 2-class list
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(lab, mode="L").save(tmp_path / "gt" / "a.png")
    Image.fromarray(lab, mode="L").save(tmp_path / "pred" / "a.png")
    (tmp_path / "classes.txt").write_text("x\ny\n")
    r = CliRunner().invoke(cli, ["eval", "--dataset", "folder", "--root", str(tmp_path / "img"),
                                 "--labels", str(tmp_path / "gt"), "--classes",
                                 str(tmp_path / "classes.txt"), "--pred", str(tmp_path / "pred")])
    assert r.exit_code == 2, r.output
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and "class values 2 outside the 2 classes" in err[0], r.output
    assert "mIoU" not in r.output


@pytest.mark.parametrize("name", ["paper", "default"])
def test_gt_proposals_of_an_all_ignore_label_are_empty_and_assign_runs(patch_bank, name):
    rcfg = dataclasses.replace(preset(name).runtime, index="flat", top_k=3)
    label = np.full((16, 24), IGNORE, np.uint8)
    props = gt_proposals(label)
    assert len(props) == 0
    image = np.zeros((16, 24, 3), np.uint8)
    from moduseg.runtime.index import build_index
    res = assign(ColourBackbone()(image), props, patch_bank,
                 build_index(patch_bank.vectors), rcfg)
    assert res.label_map.shape == (16, 24) and res.segments == []


def _folder_dataset(tmp_path):
    import cv2
    for d in ("img", "lab", "pred"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((6, 7, 3), np.uint8))
    _write_png(tmp_path / "lab" / "a.png", np.ones((6, 7), np.uint8))
    (tmp_path / "classes.txt").write_text("bg\nthing\n")
    return ["--dataset", "folder", "--root", str(tmp_path / "img"),
            "--labels", str(tmp_path / "lab"), "--classes", str(tmp_path / "classes.txt")]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data))


def _broken_pngs():
    import io
    import struct
    import zlib

    from PIL import Image
    b = io.BytesIO()
    Image.fromarray(np.ones((6, 7), np.uint8)).save(b, format="PNG")
    good = b.getvalue()
    sig = b"\x89PNG\r\n\x1a\n"
    # a header declaring 100000 x 100000 pixels (PIL: DecompressionBombError)
    bomb = sig + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)) \
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    return {"truncated": good[: len(good) // 2], "bomb": bomb,
            "zeros": sig + b"\x00" * 40}


@pytest.mark.parametrize("kind", ["truncated", "bomb", "zeros"])
def test_a_broken_png_under_eval_pred_is_one_line(tmp_path, kind):
    args = _folder_dataset(tmp_path)
    (tmp_path / "pred" / "a.png").write_bytes(_broken_pngs()[kind])
    r = _run(["eval", *args, "--pred", str(tmp_path / "pred")])
    assert r.exit_code == 2, r.output
    assert "a.png" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_eval_out_checked_first(tmp_path, tiny_tmpfs, no_models):
    _one_line_error(_cli(["eval", "--dataset", "camvid", "--root", str(tmp_path / "none"),
                          "--bank", "b.npz", "--out", str(tmp_path)]), "--out", "is a folder")
    full = tiny_tmpfs("256k")
    _fill(full)
    _one_line_error(_cli(["eval", "--dataset", "camvid", "--root", str(tmp_path / "none"),
                          "--bank", "b.npz", "--out", str(full / "s.json")]), "--out")
