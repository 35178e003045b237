"""Typed options: every ``--set`` is checked when parsed (name, type, range), with a
"did you mean"; stored configurations (old dict form included) load when valid."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from moduseg.config import (SECTIONS, BackboneOptions, ModuSegConfig, ProposerOptions,
                            preset)
from moduseg.errors import InputError, ModuSegError
from moduseg.settings import parse_overrides, resolve_config  # noqa: F401

# issue #18 item 6: each was a traceback (often after the models loaded) or accepted
BAD = [
    ("runtime.min_area=abc", "runtime.min_area must be an integer"),
    ("runtime.nprobe=1.5", "runtime.nprobe must be an integer"),
    ("runtime.top_k=True", "runtime.top_k must be an integer"),
    ("bank.erosion_kernel=2.5", "bank.erosion_kernel must be an integer"),
    ("backbone.pixels=abc", "backbone.pixels must be an integer"),
    ("proposer.points_per_side=abc", "proposer.points_per_side must be"),
    ("runtime.refine_radius=100000000", "runtime.refine_radius must be in"),
    ("runtime.eps=abc", "runtime.eps must be a number"),
    ("runtime.eps=nan", "runtime.eps must be a number"),
    ("runtime.nms_iou=inf", "must be"),
    ("runtime.unassigned=nearst", "did you mean nearest"),
    ("proposer.pointz_per_side=4", "did you mean proposer.points_per_side"),
    ("runtime.topk=4", "did you mean runtime.top_k"),
    ("runtim.top_k=4", "did you mean runtime"),
    ("backbone.layers=[3, 1]", "increasing block indices"),
    ("backbone.layers=[12]", "0..11"),
    ("proposer.mask_stride=3", "proposer.mask_stride must be one of"),
    ("proposer.top_k=5", "entityseg option"),
    ("runtime.top_k=", "runtime.top_k must be an integer"),
    ("=3", "KEY=VALUE"),
    ("runtime.top_k", "KEY=VALUE"),
]


@pytest.mark.parametrize("item,message", BAD)
def test_bad_settings_are_one_line_input_errors(item, message):
    for base in ("paper", "default"):
        with pytest.raises(InputError) as e:
            resolve_config(base, [item])
        text = str(e.value)
        assert message in text and "\n" not in text and "not supported" not in text


def test_bad_settings_fail_on_the_command_line_before_any_model(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from moduseg.cli import cli
    from moduseg import build as assemble

    def boom(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(assemble, "build_backbone", boom)
    monkeypatch.setattr(assemble, "build_proposer", boom)
    (tmp_path / "img").mkdir()
    for item, message in BAD[:8]:
        r = CliRunner().invoke(cli, ["bank", "build", "--dataset", "folder", "--root",
                                     str(tmp_path / "img"), "--labels", str(tmp_path),
                                     "--classes", str(tmp_path / "c.txt"), "--out",
                                     str(tmp_path / "b.npz"), "--set", item])
        assert r.exit_code == 2 and message in r.output, r.output


def test_good_settings_are_typed():
    cfg = resolve_config("paper", ["runtime.min_objectness=1", "proposer.points_per_side=[6, 8]",
                                   "backbone.layers=(8, 11)", "runtime.top_k=10",
                                   "proposer.encoder_crop=False"])
    assert cfg.runtime.min_objectness == 1.0 and isinstance(cfg.runtime.min_objectness, float)
    assert cfg.proposer.points_per_side == (6, 8) and cfg.backbone.layers == (8, 11)
    assert cfg.proposer_options() == {"points_per_side": (6, 8), "encoder_crop": False}
    assert cfg.backbone_options() == {"layers": (8, 11)}
    assert cfg.preset == "paper+custom"


def test_round_trip_through_json_and_the_old_dict_form():
    cfg = resolve_config("default", ["backbone.short_side=224", "proposer.refine_points=4"])
    back = ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    # banks written before the typed options stored free dicts of the set keys only
    old = {"bank": dataclasses.asdict(cfg.bank), "runtime": dataclasses.asdict(cfg.runtime),
           "backbone": {"short_side": 224}, "proposer": {"refine_points": 4},
           "preset": "default"}
    assert ModuSegConfig.from_dict(old).proposer == ProposerOptions(refine_points=4)
    assert ModuSegConfig.from_dict({"backbone": {}, "proposer": {}}).backbone == BackboneOptions()
    # an old dict form naming an unknown or ill-typed option is refused
    with pytest.raises(InputError, match="did you mean backbone.short_side"):
        ModuSegConfig.from_dict({**old, "backbone": {"shortside": 224}})
    with pytest.raises(InputError, match="backbone.layers"):
        ModuSegConfig.from_dict({**old, "backbone": {"layers": "8,11"}})
    # the constructor still takes the dict form other code writes
    assert ModuSegConfig(proposer={"refine_points": 4}).proposer.refine_points == 4


# ---- property: nothing but ModuSegError escapes the --set parser -------------------

NAMES = sorted({f"{s}.{f.name}" for s, cls in SECTIONS.items()
                for f in dataclasses.fields(cls)})
VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["True", "False", "None", "abc", "[1, 2]", "(8, 11)", "[]", "{}",
                     "{'a': 1}", "1e400", "-0", "'x'", "[[1]]", "((", "b'x'", "1j",
                     "[1, 'a']", "sam", "entityseg", "nearest", "ivf", "9" * 400]),
    st.text(max_size=30))
KEYS = st.one_of(st.sampled_from(NAMES), st.text(max_size=25),
                 st.sampled_from(NAMES).map(lambda k: k[:-1]),
                 st.sampled_from(NAMES).map(lambda k: k.upper()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
                      | st.text(max_size=40), max_size=4),
       base=st.sampled_from(["paper", "default"]),
       proposer=st.sampled_from([None, "sam", "entityseg"]))
def test_only_moduseg_errors_escape_the_set_parser(items, base, proposer):
    try:
        cfg = resolve_config(base, items, proposer=proposer)
    except ModuSegError as e:
        assert "\n" not in str(e)
        return
    # whatever was accepted is a valid, fully typed configuration that round-trips
    assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@settings(max_examples=150, deadline=None)
@given(d=st.dictionaries(st.sampled_from(list(SECTIONS) + ["preset", "x"]),
                         st.one_of(st.dictionaries(st.sampled_from(NAMES).map(
                             lambda k: k.split(".", 1)[1]), st.one_of(
                             st.integers(-5, 10**9), st.floats(), st.text(max_size=5),
                             st.booleans(), st.none(), st.lists(st.integers(-2, 20), max_size=5))),
                             st.text(max_size=5), st.integers()), max_size=5))
def test_only_moduseg_errors_escape_stored_configs(d):
    try:
        ModuSegConfig.from_dict(d)
    except ModuSegError:
        pass


def test_parse_overrides_keeps_strings_that_are_not_literals():
    assert parse_overrides(["runtime.unassigned=nearest", "runtime.top_k= 10 ",
                            "proposer.model=/a/b=c.onnx"]) == {
        "runtime.unassigned": "nearest", "runtime.top_k": 10, "proposer.model": "/a/b=c.onnx"}


def test_presets_are_valid_and_typed():
    for name in ("paper", "default", "fast"):
        cfg = preset(name)
        assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_default_normalises_each_image_and_old_banks_keep_the_fixed_normalisation():
    """The default (and fast) backbone standardises each frame; paper keeps the published
    fixed ImageNet normalisation; a bank stored before the option existed (no
    ``normalize`` key) resolves to the model's own fixed normalisation, not the new default."""
    assert preset("default").backbone_options()["normalize"] == "image"
    assert preset("fast").backbone_options()["normalize"] == "image"
    assert "normalize" not in preset("paper").backbone_options()
    assert preset("fast").proposer_options() == {}          # no proposer runs
    assert preset("default").proposer_options()["points_per_side"] == (6, 7)
    stored = preset("default").to_dict()
    del stored["backbone"]["normalize"]
    assert "normalize" not in resolve_config(None, [], stored).backbone_options()
    with pytest.raises(InputError, match="normalize"):
        resolve_config("default", ["backbone.normalize='frame'"])


def test_every_proposer_option_has_a_typed_setting():
    import inspect

    from moduseg.config import PROPOSER_ONLY
    from moduseg.runtime.proposers.entityseg import EntitySegProposer
    from moduseg.runtime.proposers.sam_options import SamOptions

    sam = {f.name for f in dataclasses.fields(SamOptions)}
    assert set(PROPOSER_ONLY["sam"]) == sam
    es = set(inspect.signature(EntitySegProposer).parameters) - {"model_path", "providers",
                                                                   "threads", "device"}
    assert set(PROPOSER_ONLY["entityseg"]) == es
    names = {f.name for f in dataclasses.fields(ProposerOptions)}
    assert sam | es | {"name", "model", "threads"} == names
