"""--shard i/N and bank merge: a merged bank is the single-process bank, byte for byte."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from moduseg.bank.parts import merge_parts
from moduseg.bank.store import load_bank
from moduseg.cli import cli
from moduseg.errors import BankError, InputError
from moduseg.scale.shard import Shard

from scale_fixtures import bank_args, fake_assemble, write_folder_dataset


@pytest.fixture
def fake_models(monkeypatch):
    import moduseg.bank.segmenter as recipes
    monkeypatch.setattr(recipes, "build_for", fake_assemble)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_folder_dataset(tmp_path_factory.mktemp("scale"), n=9)


def run(args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, r.output
    return r.output


# --- shard parsing -----------------------------------------------------------------

@given(st.integers(1, 500), st.data())
def test_shard_parse_round_trip_and_positions_partition(count, data):
    index = data.draw(st.integers(0, count - 1))
    s = Shard.parse(f"{index}/{count}")
    assert (s.index, s.count) == (index, count) and Shard.parse(str(s)) == s
    n = data.draw(st.integers(0, 60))
    shares = [list(Shard(i, count).positions(n)) for i in range(count)]
    assert sorted(p for sh in shares for p in sh) == list(range(n))     # each image once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1           # balanced


@given(st.text(max_size=12))
def test_shard_parse_refuses_anything_else_with_one_line(text):
    try:
        s = Shard.parse(text)
    except InputError as e:
        assert "\n" not in str(e) and "--shard" in str(e)
    else:
        assert 0 <= s.index < s.count


@pytest.mark.parametrize("bad", ["3/3", "-1/2", "1/0", "1", "a/b", "1/2/3", ""])
def test_bad_shards_are_refused(bad):
    with pytest.raises(InputError, match="--shard"):
        Shard.parse(bad)


# --- merge equals single process ---------------------------------------------------

@pytest.mark.parametrize("preset", ["paper", "default"])
@pytest.mark.parametrize("n_shards", [2, 3])
def test_merged_shards_equal_the_single_process_bank_byte_for_byte(
        tmp_path, data, fake_models, preset, n_shards):
    run(bank_args(data, tmp_path / "single.npz", "--preset", preset))
    parts = []
    for i in range(n_shards):
        parts.append(tmp_path / f"part{i}.npz")
        run(bank_args(data, parts[-1], "--preset", preset, "--shard", f"{i}/{n_shards}"))
    merged = tmp_path / "merged.npz"
    run(["bank", "merge", *reversed(parts), "--out", merged])     # order of PARTS is free
    single = load_bank(tmp_path / "single.npz")
    m = load_bank(merged)
    assert len(single) > 10
    if preset == "paper":
        assert single.stats["dropped_outliers"] > 0       # the global step did real work
    np.testing.assert_array_equal(m.vectors, single.vectors)
    np.testing.assert_array_equal(m.labels, single.labels)
    np.testing.assert_array_equal(m.image_ids, single.image_ids)
    assert (m.config, m.stats) == (single.config, single.stats)
    assert merged.read_bytes() == (tmp_path / "single.npz").read_bytes()


def test_bank_files_are_byte_reproducible(tmp_path, data, fake_models):
    run(bank_args(data, tmp_path / "a.npz"))
    run(bank_args(data, tmp_path / "b.npz"))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_a_shard_only_processes_its_share(tmp_path, data, fake_models):
    out = run(bank_args(data, tmp_path / "p.npz", "--shard", "1/4"))
    assert "shard 1/4, 2 of 9 images" in out
    from moduseg.bank.parts import load_part
    meta, entries = load_part(tmp_path / "p.npz")
    assert [p for p, _ in entries] == [1, 5]
    assert [e.image_id for _, e in entries] == ["img01", "img05"]
    assert meta["shard"] == [1, 4] and meta["selection"]["count"] == 9


# --- merge refuses parts that do not belong together -------------------------------

@pytest.fixture(scope="module")
def parts(tmp_path_factory, data):
    import moduseg.bank.segmenter as recipes
    mp = pytest.MonkeyPatch()
    mp.setattr(recipes, "build_for", fake_assemble)
    d = tmp_path_factory.mktemp("parts")
    out = {}
    for name, extra in {"a0": ["--shard", "0/2"], "a1": ["--shard", "1/2"],
                        "b1": ["--shard", "1/2", "--preset", "paper"],
                        "c1": ["--shard", "1/2", "--limit", "7"],
                        "t1": ["--shard", "1/3"]}.items():
        out[name] = d / f"{name}.npz"
        run(bank_args(data, out[name], *extra))
    run(bank_args(data, d / "bank.npz"))
    out["bank"] = d / "bank.npz"
    mp.undo()
    return out


@pytest.mark.parametrize("names, message", [
    (["a0"], "missing shard\\(s\\) 1/2"),
    (["a0", "a0", "a1"], "shard 0/2 given twice"),
    (["a0", "b1"], "different configuration"),
    (["a0", "c1"], "different image selection"),
    (["a0", "t1"], "is shard 1/3"),
    (["a0", "bank"], "not a bank part"),
])
def test_merge_refuses_parts_that_do_not_match_with_one_line(tmp_path, parts, names, message):
    out = run(["bank", "merge", *[parts[n] for n in names], "--out", tmp_path / "m.npz"], code=2)
    assert out.count("\n") == 1 and out.startswith("Error: ")
    import re
    assert re.search(message, out), out
    assert not (tmp_path / "m.npz").exists()


def test_merge_refuses_another_backbone(tmp_path, parts):
    import zipfile
    from moduseg.bank.store import write_npz
    with np.load(parts["a1"]) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["backbone"]["weights_sha256"] = "f" * 64
    arrays["meta"] = np.array(json.dumps(meta))
    other = tmp_path / "other.npz"
    with open(other, "wb") as f:
        write_npz(f, arrays)
    assert zipfile.is_zipfile(other)
    with pytest.raises(BankError, match="different backbone"):
        merge_parts([parts["a0"], other])


def test_truncated_part_is_refused(tmp_path, parts):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(parts["a0"].read_bytes()[:200])
    with pytest.raises(BankError, match="unreadable"):
        merge_parts([cut, parts["a1"]])


def test_an_empty_shard_is_refused(tmp_path, data, fake_models):
    out = run(bank_args(data, tmp_path / "p.npz", "--shard", "9/10"), code=2)
    assert "shard is empty" in out


# --- a bad image fails that image, not the build ----------------------------------

def test_a_bad_image_is_listed_and_left_out_in_both_paths(tmp_path, fake_models):
    d = write_folder_dataset(tmp_path / "ds", n=6, bad=2)
    r = CliRunner().invoke(cli, bank_args(d, tmp_path / "single.npz"))
    assert r.exit_code == 0, r.output
    assert "1 image(s) failed" in r.output and "img02:" in r.output
    single = load_bank(tmp_path / "single.npz")
    assert single.stats["images"] == 5
    assert [f["image"] for f in single.stats["failed"]] == ["img02"]
    assert "img02" not in set(single.image_ids.tolist())
    for i in range(2):
        run(bank_args(d, tmp_path / f"p{i}.npz", "--shard", f"{i}/2"))
    run(["bank", "merge", tmp_path / "p0.npz", tmp_path / "p1.npz", "--out", tmp_path / "m.npz"])
    assert (tmp_path / "m.npz").read_bytes() == (tmp_path / "single.npz").read_bytes()


# --- segment --shard ---------------------------------------------------------------

@pytest.mark.slow
def test_segment_shards_cover_the_folder_and_match_one_run(tmp_path, data, fake_models):
    bank = tmp_path / "bank.npz"
    run(bank_args(data, bank))
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(data["images"].iterdir()):
        (frames / p.name).write_bytes(p.read_bytes())
    (frames / "img99.png").write_bytes(b"not an image")
    run(["segment", frames, "--bank", bank, "--out", tmp_path / "one"])
    for i in range(3):
        run(["segment", frames, "--bank", bank, "--out", tmp_path / f"s{i}", "--shard", f"{i}/3"])
    names = sorted(p.name for p in (tmp_path / "one" / "labels").iterdir())
    assert len(names) == 9
    got = {}
    for i in range(3):
        for p in (tmp_path / f"s{i}" / "labels").iterdir():
            assert p.name not in got
            got[p.name] = p.read_bytes()
    assert sorted(got) == names
    for n in names:
        assert got[n] == (tmp_path / "one" / "labels" / n).read_bytes()
    errs = [json.loads((tmp_path / d / "segments.json").read_text())["skipped"]
            for d in ("one", "s0", "s1", "s2")]
    assert [Path(e["file"]).stem for e in errs[0]] == ["img99"]
    assert "cannot read image" in errs[0][0]["error"]
    assert sum(len(e) for e in errs[1:]) == 1      # the bad frame belongs to exactly one shard


def test_segment_shard_refuses_videos(tmp_path, data, fake_models):
    bank = tmp_path / "bank.npz"
    run(bank_args(data, bank))
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    out = run(["segment", video, "--bank", bank, "--out", tmp_path / "o", "--shard", "0/2"],
              code=2)
    assert "take an image folder" in out


def test_engine_ray_without_ray_says_how_to_install(tmp_path, data, fake_models, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)
    out = run(bank_args(data, tmp_path / "b.npz", "--engine", "ray"), code=2)
    assert "pip install 'moduseg[ray]'" in out
