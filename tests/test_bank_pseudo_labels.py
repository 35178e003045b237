"""Image-level labels files and their derivation from masks."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from moduseg.bank.pseudo.cli import pseudo
from moduseg.bank.pseudo.labels import (
    find_background,
    labels_from_mask,
    labels_from_masks,
    presence_vector,
    read_image_labels,
    write_image_labels,
)
from moduseg.bank.datasets import read_class_names
from moduseg.errors import InputError
from moduseg.io import read_label_map, voc_palette, write_label_png
from moduseg.types import IGNORE

NAMES = ["background", "cat", "dog", "potted plant"]
LABELS = {"img1": ["cat", "potted plant"], "img2": [], "img3": ["dog"]}


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_round_trip(tmp_path, suffix):
    path = tmp_path / f"labels{suffix}"
    write_image_labels(path, LABELS)
    assert read_image_labels(path) == LABELS


def test_text_format_by_hand(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("# comment\n\nimg1: cat , potted plant,cat\nimg2:\n")
    assert read_image_labels(p) == {"img1": ["cat", "potted plant"], "img2": []}


def test_jsonl_format_by_hand(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('{"image": "a", "labels": ["dog"]}\n\n{"image": "b", "labels": []}\n')
    assert read_image_labels(p) == {"a": ["dog"], "b": []}


@pytest.mark.parametrize("name,text,match", [
    ("l.txt", "img1 cat\n", r"l.txt:1: expected"),
    ("l.txt", "a: cat\na: dog\n", r"listed twice"),
    ("l.jsonl", '{"image": "a"}\n', r"l.jsonl:1: expected"),
    ("l.jsonl", '{"image": "a", "labels": "cat"}\n', r"must be a list"),
])
def test_bad_files_name_the_line(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError, match=match):
        read_image_labels(p)


def test_missing_file_and_bad_names(tmp_path):
    with pytest.raises(InputError, match="labels-from-masks"):
        read_image_labels(tmp_path / "none.txt")
    with pytest.raises(InputError, match="jsonl"):
        write_image_labels(tmp_path / "x.txt", {"a": ["x, y"]})


def test_presence_vector():
    v = presence_vector(["dog"], NAMES, 0)
    assert v.tolist() == [True, False, True, False]
    assert presence_vector([], NAMES, None).tolist() == [False] * 4
    with pytest.raises(InputError, match=r"image img9: labels \['horse'\]"):
        presence_vector(["horse"], NAMES, 0, "img9")


def test_labels_from_mask_known_answer():
    m = np.zeros((5, 5), np.uint8)
    m[0, 0] = 2
    m[1:3, 1:3] = 3
    m[4, 4] = IGNORE
    assert labels_from_mask(m, NAMES, 0) == ["dog", "potted plant"]
    assert labels_from_mask(m, NAMES, 0, min_pixels=2) == ["potted plant"]
    assert labels_from_mask(m, NAMES, None) == ["background", "dog", "potted plant"]
    m[0, 1] = 9
    with pytest.raises(InputError, match="outside the 4 class names"):
        labels_from_mask(m, NAMES, 0)


def test_class_names_and_background(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# classes\nBackground\ncat\n\ndog\n")
    names = read_class_names(p)
    assert names == ["Background", "cat", "dog"]
    assert find_background(names) == 0 and find_background(names, "none") is None
    p.write_text("cat\ncat\n")
    with pytest.raises(InputError, match="'cat' is given twice"):
        read_class_names(p)


def test_png_is_palettised_voc(tmp_path):
    pal = voc_palette()
    assert pal[0].tolist() == [0, 0, 0] and pal[1].tolist() == [128, 0, 0]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    lm = np.array([[0, 1], [15, 255]], np.uint8)
    write_label_png(tmp_path / "a.png", lm)
    from PIL import Image
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.png"), lm)


def test_cli_labels_from_masks(tmp_path):
    masks = tmp_path / "masks"
    a = np.zeros((4, 4), np.uint8)
    a[0] = 1
    write_label_png(masks / "a.png", a)
    write_label_png(masks / "b.png", np.full((4, 4), IGNORE, np.uint8))
    (tmp_path / "c.txt").write_text("\n".join(NAMES) + "\n")
    out = tmp_path / "labels.jsonl"
    r = CliRunner().invoke(pseudo, ["labels-from-masks", "--masks", str(masks), "--classes",
                                    str(tmp_path / "c.txt"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert [json.loads(x) for x in out.read_text().splitlines()] == [
        {"image": "a", "labels": ["cat"]}, {"image": "b", "labels": []}]
    assert labels_from_masks(masks, NAMES, 0) == {"a": ["cat"], "b": []}


def test_voc_sample_labels(shared_data, tmp_path):
    from pseudo_tiny_clip import VOC

    labels = labels_from_masks(shared_data / "voc-sample" / "SegmentationClass", VOC, 0)
    assert labels["2007_000032"] == ["aeroplane", "person"]
    assert labels["2007_000039"] == ["tvmonitor"]
