"""End to end: export a tiny CLIP, generate pseudo masks, read them as a dataset."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("open_clip")

from pseudo_tiny_clip import VOC, export_tiny

from moduseg.bank.pseudo.cli import load_proposer, pseudo
from moduseg.errors import InputError, ModuSegError
from moduseg.io import read_label_map, write_image


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    export_tiny(d, crop=48)
    return d


@pytest.fixture()
def folder(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for i, hw in enumerate([(60, 90), (50, 50), (40, 70)]):
        write_image(images / f"im{i}.jpg", rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("\n".join(VOC) + "\n")
    (tmp_path / "labels.txt").write_text("im0: cat, dog\nim1:\nghost: cat\n")
    return tmp_path


def _run(args):
    r = CliRunner().invoke(pseudo, args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def _generate(clip_dir, folder, out, *extra):
    return _run(["generate", "--clip", str(clip_dir), "--images", str(folder / "images"),
                 "--classes", str(folder / "classes.txt"), "--labels",
                 str(folder / "labels.txt"), "--out", str(out), "--cache-dir",
                 str(folder / "cache"), "--stride", "24", "--threads", "1", *extra])


@pytest.mark.slow
def test_generate_writes_a_folder_dataset(clip_dir, folder):
    out = folder / "out"
    r = _generate(clip_dir, folder, out)
    assert "wrote 2 label maps" in r.output and "skipped 1 images" in r.output
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png"]
    im0, im1 = read_label_map(out / "im0.png"), read_label_map(out / "im1.png")
    assert im0.shape == (60, 90) and im1.shape == (50, 50)
    assert set(np.unique(im0)) <= {0, VOC.index("cat"), VOC.index("dog")}
    assert (im1 == 0).all()                      # no labels: background only
    meta = json.loads((out / "pseudo.json").read_text())
    assert meta["summary"]["written"] == 2 and meta["summary"]["skipped_no_labels"] == ["im2"]
    assert meta["summary"]["labels_without_image"] == ["ghost"]
    assert meta["window"]["crop"] == 48 and meta["window"]["stride"] == 24
    assert meta["text_cache_hit"] is False

    # the output is a 'folder' dataset: images + labels matched by stem + class names
    from moduseg.bank.datasets import open_dataset
    ds = open_dataset("folder", folder / "images", labels=out, classes=out / "classes.txt",
                      background=0)
    assert [s.image_id for s in ds] == ["im0", "im1"]
    assert ds.class_names == VOC

    # the second run hits the text-embedding cache and gives the same maps
    _generate(clip_dir, folder, folder / "out2")
    assert json.loads((folder / "out2" / "pseudo.json").read_text())["text_cache_hit"]
    np.testing.assert_array_equal(read_label_map(folder / "out2" / "im0.png"), im0)


def test_no_filter_and_proposal_correction(clip_dir, folder):
    raw, out = folder / "raw", folder / "corr"
    _generate(clip_dir, folder, raw, "--no-filter")
    _generate(clip_dir, folder, out, "--no-filter", "--proposer",
              "pseudo_tiny_clip:halves_proposer")
    mixed = 0
    for name in ("im0", "im1", "im2"):          # --no-filter: images without labels too
        before, lm = read_label_map(raw / f"{name}.png"), read_label_map(out / f"{name}.png")
        W = lm.shape[1]
        for half in (np.s_[:, : W // 2], np.s_[:, W // 2:]):
            # each confident half carries one label: the majority of the raw map there
            assert np.unique(lm[half]).tolist() == [np.bincount(before[half].ravel()).argmax()]
            mixed += len(np.unique(before[half])) > 1
    assert mixed > 0                            # the raw maps were not uniform already
    assert json.loads((out / "pseudo.json").read_text())["summary"][
        "corrected_pixel_fraction"] > 0


def test_generate_refuses_bad_input(clip_dir, folder):
    r = CliRunner().invoke(pseudo, ["generate", "--clip", str(clip_dir), "--images",
                                    str(folder / "images"), "--classes",
                                    str(folder / "classes.txt"), "--out", str(folder / "o")])
    assert r.exit_code != 0 and "--no-filter" in r.output
    r = CliRunner().invoke(pseudo, ["generate", "--clip", str(folder), "--images",
                                    str(folder / "images"), "--classes",
                                    str(folder / "classes.txt"), "--no-filter", "--out",
                                    str(folder / "o")])
    assert "moduseg export clip" in str(r.exception)
    r = CliRunner().invoke(pseudo, ["generate", "--clip", str(clip_dir), "--images",
                                    str(folder / "images"), "--classes",
                                    str(folder / "classes.txt"), "--no-filter",
                                    "--background", "sky", "--out", str(folder / "o")])
    assert "no class named 'sky'" in str(r.exception)
    r = CliRunner().invoke(pseudo, ["generate", "--clip", str(clip_dir), "--images",
                                    str(folder / "images"), "--classes",
                                    str(folder / "classes.txt"), "--no-filter",
                                    "--backend", "cpux", "--out", str(folder / "o")])
    assert "unknown backend 'cpux'" in str(r.exception) and "\n" not in str(r.exception)
    assert not (folder / "o").exists()
    with pytest.raises(InputError, match="module:factory"):
        load_proposer("nonsense", None, "cpu")
    assert load_proposer("pseudo_tiny_clip:halves_proposer", None, "cpu").name == "halves"
    with pytest.raises(ModuSegError):        # no SAM files in an empty model home
        load_proposer("default", folder / "empty-home", "cpu")


def test_voc_sample_pipeline(clip_dir, shared_data, tmp_path):
    """labels-from-masks -> generate on real photos; every map only uses allowed classes."""
    voc = shared_data / "voc-sample"
    (tmp_path / "classes.txt").write_text("\n".join(VOC) + "\n")
    _run(["labels-from-masks", "--masks", str(voc / "SegmentationClass"), "--classes",
          str(tmp_path / "classes.txt"), "--out", str(tmp_path / "labels.jsonl")])
    _run(["generate", "--clip", str(clip_dir), "--images", str(voc / "JPEGImages"),
          "--classes", str(tmp_path / "classes.txt"), "--labels",
          str(tmp_path / "labels.jsonl"), "--out", str(tmp_path / "out"), "--cache-dir",
          str(tmp_path / "cache"), "--threads", "1"])
    labels = {json.loads(x)["image"]: json.loads(x)["labels"]
              for x in (tmp_path / "labels.jsonl").read_text().splitlines()}
    for stem, names in labels.items():
        lm = read_label_map(tmp_path / "out" / f"{stem}.png")
        gt = read_label_map(voc / "SegmentationClass" / f"{stem}.png")
        assert lm.shape == gt.shape
        assert set(np.unique(lm)) <= {0} | {VOC.index(n) for n in names}
