import json

import numpy as np
import pytest

from moduseg.bank.datasets import (CAMVID_CLASSES, VOC_CLASSES, camvid, coco_json, folder,
                                   open_dataset, read_class_names, voc, yolo_seg)
from moduseg.errors import InputError
from moduseg.io import read_label_map, write_label_png
import io  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from fuzz_fixtures import FUZZ, apply_json, attempt, json_mutations, mutated, report  # noqa: E402,F401
from moduseg.types import IGNORE  # noqa: E402
from synthetic import dataset  # noqa: E402
from reliability_fixtures import _write_png  # noqa: E402,F401


def test_camvid_reader_maps_void_to_ignore(shared_data):
    ds = camvid(shared_data / "camvid", "val")
    assert len(ds) == 101 and ds.class_names == CAMVID_CLASSES and ds.background_index is None
    s = ds.samples[0]
    img, lab = s.image(), s.label()
    assert img.shape == (360, 480, 3) and lab.shape == (360, 480)
    vals = set(np.unique(lab).tolist())
    assert vals <= set(range(11)) | {255} and 11 not in vals


def test_voc_reader_without_imagesets_uses_all_masks(shared_data):
    ds = voc(shared_data / "voc-sample")
    assert len(ds) == 4 and ds.class_names == VOC_CLASSES and ds.background_index == 0
    s = ds.samples[0]
    assert s.image().shape[:2] == s.label().shape


def test_yolo_polygons_become_semantic_maps(shared_data):
    ds = yolo_seg(shared_data / "coco128-seg", "train2017")
    assert len(ds) == 128 and ds.class_names[0] == "background" and len(ds.class_names) == 81
    s = ds.samples[0]
    lab = s.label()
    assert lab.shape == s.image().shape[:2] and lab.max() > 0


def test_yolo_bad_line_is_reported_with_file_and_line(tmp_path):
    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "labels" / "s").mkdir(parents=True)
    import cv2
    cv2.imwrite(str(tmp_path / "images" / "s" / "a.jpg"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "labels" / "s" / "a.txt").write_text("3 0.1 0.1 0.5 zz 0.5 0.5\n")
    ds = yolo_seg(tmp_path, "s")
    with pytest.raises(InputError, match="a.txt:1"):
        ds.samples[0].label()


def test_coco_json_instances_to_semantic(tmp_path):
    import cv2
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    ann = {"images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 40}],
           "categories": [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0, "area": 400,
                "bbox": [0, 0, 20, 20], "segmentation": [[0, 0, 20, 0, 20, 20, 0, 20]]},
               {"id": 2, "image_id": 1, "category_id": 9, "iscrowd": 0, "area": 100,
                "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]}]}
    (tmp_path / "a.json").write_text(json.dumps(ann))
    ds = coco_json(tmp_path / "a.json", tmp_path / "img")
    assert ds.class_names == ["background", "cat", "dog"]
    lab = ds.samples[0].label()
    assert lab[2, 2] == 1 and lab[10, 10] == 2 and lab[30, 30] == 0   # smaller on top


def test_folder_layout_round_trip(tmp_path):
    import cv2
    (tmp_path / "im").mkdir()
    cv2.imwrite(str(tmp_path / "im" / "x.jpg"), np.zeros((8, 8, 3), np.uint8))
    lab = np.zeros((8, 8), np.uint8)
    lab[2:5, 2:5] = 2
    write_label_png(tmp_path / "lab" / "x.png", lab)
    (tmp_path / "classes.txt").write_text("# comment\nbackground\nsky\nroad\n")
    ds = open_dataset("folder", tmp_path / "im", labels=tmp_path / "lab",
                      classes=tmp_path / "classes.txt", background=0)
    assert ds.class_names == ["background", "sky", "road"]
    np.testing.assert_array_equal(ds.samples[0].label(), lab)


def test_missing_and_empty_datasets_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        camvid(tmp_path / "nope")
    (tmp_path / "c").mkdir()
    with pytest.raises(InputError, match="no samples"):
        camvid(tmp_path / "c", "train")
    with pytest.raises(InputError, match="needs --labels"):
        open_dataset("folder", tmp_path)
    with pytest.raises(InputError, match="unknown dataset layout"):
        open_dataset("kitti", tmp_path)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputError, match="lists no classes"):
        read_class_names(tmp_path / "empty.txt")


TOKENS = st.sampled_from(["0", "1", "3", "-1", "255", "0.5", "0.25", "1.0", "1e30", "-0.5",
                          "nan", "inf", "-inf", "abc", "", "0x1f", "1_0", "\u00e9", "\x00",
                          "train/a.png", "trainannot/a.png", "/abs/x.png", "../up.png",
                          "a b", "#"])


TEXT_LINES = st.lists(st.lists(TOKENS, max_size=9).map(" ".join), max_size=6).map(
    lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


def png_bytes(arr: np.ndarray, mode=None) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(b, format="PNG")
    return b.getvalue()


LABEL_PNG = png_bytes(np.tile(np.arange(12, dtype=np.uint8), (9, 1))[:, :12])


IMAGE_PNG = png_bytes(np.full((9, 12, 3), 90, np.uint8))


def load_all(ds) -> None:
    for s in ds.samples[:3]:
        s.label()


def _camvid_root(d: Path) -> Path:
    for sub in ("train", "trainannot"):
        (d / sub).mkdir()
    (d / "train" / "a.png").write_bytes(IMAGE_PNG)
    (d / "trainannot" / "a.png").write_bytes(LABEL_PNG)
    return d


CAMVID_GOOD = b"train/a.png trainannot/a.png\n"


@FUZZ
@given(st.one_of(mutated(CAMVID_GOOD), TEXT_LINES, st.binary(max_size=64)),
       mutated(LABEL_PNG) | st.just(LABEL_PNG))
def test_fuzz_camvid_listing_and_label(listing, label):
    with tempfile.TemporaryDirectory() as d:
        root = _camvid_root(Path(d))
        (root / "train.txt").write_bytes(listing)
        (root / "trainannot" / "a.png").write_bytes(label)
        attempt("camvid", lambda: load_all(camvid(root, "train")))


@FUZZ
@given(st.one_of(TEXT_LINES, mutated(b"a\nb\n")), mutated(LABEL_PNG) | st.just(LABEL_PNG))
def test_fuzz_voc_listing_and_label(listing, label):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "SegmentationClass").mkdir()
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        (root / "SegmentationClass" / "a.png").write_bytes(label)
        (root / "ImageSets" / "Segmentation" / "train.txt").write_bytes(listing)
        attempt("voc", lambda: load_all(voc(root, "train")))


YOLO_GOOD = b"0 0.1 0.1 0.9 0.1 0.9 0.9\n3 0.2 0.2 0.4 0.2 0.3 0.5\n"


@FUZZ
@given(st.one_of(mutated(YOLO_GOOD), TEXT_LINES))
def test_fuzz_yolo_label_file(text):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "images" / "s").mkdir(parents=True)
        (root / "labels" / "s").mkdir(parents=True)
        (root / "images" / "s" / "a.png").write_bytes(IMAGE_PNG)
        (root / "labels" / "s" / "a.txt").write_bytes(text)
        attempt("yolo", lambda: load_all(yolo_seg(root, "s")))


COCO_GOOD = {
    "images": [{"id": 1, "file_name": "a.png", "height": 9, "width": 12}],
    "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
         "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]},
        {"id": 2, "image_id": 1, "category_id": 7, "iscrowd": 1,
         "segmentation": {"size": [9, 12], "counts": [20, 30, 58]}},
        {"id": 3, "image_id": 1, "category_id": 7, "iscrowd": 0,
         "segmentation": {"size": [9, 12], "counts": "m04500000000000`0"}}],
}


@FUZZ
@given(st.one_of(json_mutations(COCO_GOOD).map(lambda m: json.dumps(apply_json(COCO_GOOD, m))
                                                .encode()),
                 mutated(json.dumps(COCO_GOOD).encode())))
@pytest.mark.slow
def test_fuzz_coco_json(data):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "ann.json"
        p.write_bytes(data)
        attempt("coco", lambda: load_all(coco_json(p, d)))


@FUZZ
@given(mutated(LABEL_PNG), st.one_of(TEXT_LINES, mutated(b"bg\ncat\n# x\ndog\n"),
                                     st.binary(max_size=32)))
def test_fuzz_folder_labels_and_class_file(label, classes):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "img").mkdir()
        (root / "lab").mkdir()
        (root / "img" / "a.png").write_bytes(IMAGE_PNG)
        (root / "lab" / "a.png").write_bytes(label)
        (root / "classes.txt").write_bytes(classes)
        attempt("class-file", lambda: read_class_names(root / "classes.txt"))
        attempt("folder", lambda: load_all(folder(root / "img", root / "lab", ["bg", "x"])))


def test_a_negative_label_value_is_refused_not_wrapped(tmp_path):
    from moduseg.io import read_label_map
    lab = np.zeros((4, 5), np.int32)
    lab[0, 0] = -253                      # uint8(-253) == 3: a silent class 3 before
    # a 32-bit signed TIFF under a .png name: PIL opens it by content as mode I
    _write_png(tmp_path / "neg.png", lab, "I", fmt="TIFF")
    with pytest.raises(InputError, match="-253"):
        read_label_map(tmp_path / "neg.png")
    from moduseg.bank.datasets import check_label_map
    with pytest.raises(InputError, match="negative"):
        check_label_map("x", (4, 5), lab, 11)


def _yolo_root(tmp_path, line: str, size=(20, 30)):
    import cv2
    (tmp_path / "images" / "s").mkdir(parents=True)
    (tmp_path / "labels" / "s").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "s" / "a.png"), np.zeros(size + (3,), np.uint8))
    (tmp_path / "labels" / "s" / "a.txt").write_text(line + "\n")
    return yolo_seg(tmp_path, "s")


@pytest.mark.parametrize("line,match", [
    ("-1 0.1 0.1 0.5 0.1 0.5 0.5", "class -1"),
    ("0 nan 0.1 0.5 0.1 0.5 0.5", "finite"),
    ("0 inf 0.1 0.5 0.1 0.5 0.5", "finite"),
    ("0 1e30 0.1 0.5 0.1 0.5 0.5", r"\[0, 1\]"),
    ("0 -0.5 0.1 0.5 0.1 0.5 0.5", r"\[0, 1\]"),
    ("3", "coordinates"),                          # item 8: a line with only a class
    ("3 0.5 0.5 0.2 0.2", "box label"),
    ("3 0.5 0.5 0.2", "even"),
])
def test_bad_yolo_lines_are_refused_with_file_and_line(tmp_path, line, match):
    import time
    ds = _yolo_root(tmp_path, line)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=match) as e:
        ds.samples[0].label()
    assert "a.txt:1" in str(e.value)
    assert time.perf_counter() - t0 < 2.0       # NaN used to take 20 s in fillPoly


def test_a_good_yolo_line_still_paints(tmp_path):
    lab = _yolo_root(tmp_path, "2 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9").samples[0].label()
    assert (lab == 3).sum() > 200 and lab[0, 0] == 0


def _camvid_with_listing(tmp_path, listing: bytes):
    (tmp_path / "train.txt").write_bytes(listing)
    return tmp_path


@pytest.mark.parametrize("listing,match", [
    (b"train/a.png\n", r"train.txt:1: expected two columns"),
    (b"train/a.png trainannot/a.png extra\n", r"train.txt:1: expected two columns"),
    (b"ok/a.png ok/b.png\nonly-one\n", r"train.txt:2"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"caf\xe9 x\n", "not UTF-8"),
])
def test_malformed_camvid_listings(tmp_path, listing, match):
    with pytest.raises(InputError, match=match):
        camvid(_camvid_with_listing(tmp_path, listing), "train")


def _coco(tmp_path, data) -> object:
    p = tmp_path / "ann.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


GOOD_COCO = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 10}],
             "categories": [{"id": 5, "name": "cat"}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "iscrowd": 0,
                              "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]]}]}


@pytest.mark.parametrize("data,match", [
    ("{not json", "not valid JSON"),
    ([1, 2], "top level is a list"),
    ({"images": []}, "'annotations' is missing"),
    ({**GOOD_COCO, "annotations": [{**GOOD_COCO["annotations"][0], "category_id": 99}]},
     "category_id 99"),
    ({**GOOD_COCO, "annotations": [{**GOOD_COCO["annotations"][0], "image_id": 7}]},
     "image_id 7"),
    ({**GOOD_COCO, "annotations": [{**GOOD_COCO["annotations"][0],
                                    "segmentation": [[1, 1, "x", 1, 8, 6]]}]}, "segmentation"),
    ({**GOOD_COCO, "annotations": [{**GOOD_COCO["annotations"][0],
                                    "segmentation": {"size": [8, 10], "counts": "0"}}]},
     "segmentation"),
    ({**GOOD_COCO, "images": [{"id": 1, "file_name": "a.png", "height": -8, "width": 10}]},
     "height"),
])
def test_malformed_coco_json(tmp_path, data, match):
    with pytest.raises(InputError, match=match) as e:
        coco_json(_coco(tmp_path, data), tmp_path)
    assert "ann.json" in str(e.value)


def test_good_coco_json_with_rle_and_polygons(tmp_path):
    from pycocotools import mask as M
    m = np.zeros((8, 10), np.uint8, order="F")
    m[2:5, 3:9] = 1
    rle = M.encode(m)
    rle["counts"] = rle["counts"].decode()
    data = {**GOOD_COCO, "annotations": GOOD_COCO["annotations"] + [
        {"id": 2, "image_id": 1, "category_id": 5, "iscrowd": 1, "segmentation": rle}]}
    lab = coco_json(_coco(tmp_path, data), tmp_path).samples[0].label()
    assert (lab[2:5, 3:9] == IGNORE).all() and (lab == 1).any()


def test_non_utf8_and_binary_class_files(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"sky\nb\xffd\n")
    with pytest.raises(InputError, match="c.txt is not UTF-8"):
        read_class_names(tmp_path / "c.txt")
    (tmp_path / "d.txt").write_bytes(b"sky\x00\x01")
    with pytest.raises(InputError, match="binary"):
        read_class_names(tmp_path / "d.txt")


@pytest.mark.parametrize("n", [0, -1])
def test_dataset_subset_refuses_non_positive_limits(n):
    with pytest.raises(InputError, match="positive integer"):
        dataset(3).subset(n)
    assert len(dataset(3).subset(2)) == 2 and len(dataset(3).subset(None)) == 3
