"""Typed options: every ``--set`` is checked when parsed (name, type, range), with a
"did you mean"; stored configurations (old dict forms included) load when valid and
resolve to the values they had; every option is declared once (``config_schema``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from moduseg.config import (SECTIONS, BackboneOptions, EntitySegOptions,
                            ModuSegConfig, ProposerOptions, SamOptions, config_schema, preset,
                            preset_names, proposer_classes)
from moduseg.errors import InputError, ModuSegError
from moduseg.settings import parse_overrides, resolve_config  # noqa: F401
from fuzz_fixtures import FUZZ, apply_json, attempt, json_mutations, report  # noqa: E402,F401

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
    assert cfg.proposer_options()["encoder_crop"] is False
    assert cfg.proposer_options() == {**SamOptions().options(), "encoder_crop": False}
    assert cfg.backbone_options() == {"layers": (8, 11)}
    assert cfg.preset == "paper+custom"


def test_round_trip_through_json_and_the_old_stored_form():
    cfg = resolve_config("default", ["backbone.short_side=224", "proposer.refine_points=4"])
    back = ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    # banks written before the typed options stored free dicts of the set keys only,
    # and banks before this form stored every proposer's options, None when unset
    old = {"bank": dataclasses.asdict(cfg.bank), "runtime": dataclasses.asdict(cfg.runtime),
           "backbone": {"short_side": 224}, "proposer": {"refine_points": 4},
           "preset": "default"}
    assert ModuSegConfig.from_dict(old).proposer == SamOptions(refine_points=4)
    old_nones = {**old, "proposer": {"name": "sam", "model": None, "points_per_side": None,
                                     "refine_points": 4, "top_k": None, "chunk": None}}
    assert ModuSegConfig.from_dict(old_nones).proposer == SamOptions(refine_points=4)
    assert ModuSegConfig.from_dict({"backbone": {}, "proposer": {}}).backbone == BackboneOptions()
    # a stored form naming an unknown or ill-typed option is refused
    with pytest.raises(InputError, match="did you mean backbone.short_side"):
        ModuSegConfig.from_dict({**old, "backbone": {"shortside": 224}})
    with pytest.raises(InputError, match="backbone.layers"):
        ModuSegConfig.from_dict({**old, "backbone": {"layers": "8,11"}})
    with pytest.raises(InputError, match="proposer.top_k is an entityseg option"):
        ModuSegConfig.from_dict({**old, "proposer": {"name": "sam", "top_k": 5}})
    # the constructor's dict form is gone: it names the way that remains
    with pytest.raises(InputError, match="ModuSegConfig.from_dict"):
        ModuSegConfig(proposer={"refine_points": 4})


# ---- property: nothing but ModuSegError escapes the --set parser -------------------

NAMES = sorted({row["path"] for row in config_schema()})
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
@pytest.mark.slow
def test_only_moduseg_errors_escape_the_set_parser(items, base, proposer):
    try:
        cfg = resolve_config(base, items, proposer=proposer)
    except ModuSegError as e:
        assert "\n" not in str(e)
        return
    # whatever was accepted is a valid, fully typed configuration that round-trips
    assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.dictionaries(st.sampled_from(list(SECTIONS) + ["proposer", "preset", "x"]),
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
    assert preset_names() == ["accurate", "default", "fast", "paper"]
    for name in preset_names():
        cfg = preset(name)
        assert cfg.preset == name
        assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(InputError, match="did you mean fast"):
        preset("fsat")


def test_default_normalises_each_image_and_old_banks_keep_the_fixed_normalisation():
    """The default (and fast) backbone standardises each frame; paper keeps the published
    fixed ImageNet normalisation; a bank stored before the option existed (no
    ``normalize`` key) resolves to the model's own fixed normalisation, not the new default."""
    assert preset("default").backbone_options()["normalize"] == "image"
    assert preset("fast").backbone_options()["normalize"] == "image"
    assert "normalize" not in preset("paper").backbone_options()
    assert not preset("fast").needs_proposer and preset("fast").proposer == SamOptions()
    assert preset("default").proposer_options()["points_per_side"] == (6, 7)
    stored = preset("default").to_dict()
    del stored["backbone"]["normalize"]
    assert "normalize" not in resolve_config(None, [], stored).backbone_options()
    with pytest.raises(InputError, match="normalize"):
        resolve_config("default", ["backbone.normalize='frame'"])


# ---- stored configurations resolve to exactly the values they had ---------------------

BEFORE = json.loads((Path(__file__).parent / "data" / "resolved_configs_before_26.json")
                    .read_text())


def _plain(cfg) -> dict:
    return json.loads(json.dumps(cfg.to_dict()))


def _same_values(cfg, before: dict) -> bool:
    """``cfg`` gives every recorded option its recorded value; options added since
    (not in the record) hold their declared default, which keeps the old behaviour."""
    got = _plain(cfg)
    if got["preset"] != before["preset"]:
        return False
    for section in ("bank", "runtime", "backbone", "proposer"):
        part = getattr(cfg, section)
        defaults = {f.name: f.default for f in dataclasses.fields(part)}
        for key, value in got[section].items():
            want = before[section].get(key, defaults[key])
            if isinstance(want, tuple):
                want = list(want)
            if value != want:
                return False
        if set(before[section]) - set(got[section]):
            return False
    return True


def test_presets_and_stored_banks_resolve_to_the_values_they_had():
    """Recorded with the code before #26 (proposer options then stored as None = the
    proposer's default, here written out): the preset files, the embedded bank's stored
    configuration and an old bank without the newer keys resolve to the same values."""
    from moduseg.bank.embedded import embedded_bank_path
    from moduseg.bank.store import load_bank

    # measured preset changes since the record: fast's bank went to 16 patches a region
    # (issue 27, docs/results.md)
    changed = {"fast": {"bank": {"patches_per_region": 16}}}
    for name in ("paper", "default", "fast"):
        before = json.loads(json.dumps(BEFORE[f"preset:{name}"]))
        for section, values in changed.get(name, {}).items():
            before[section].update(values)
        assert _same_values(preset(name), before), name
    embedded = load_bank(embedded_bank_path())
    assert _same_values(resolve_config(None, [], embedded.config), BEFORE["embedded"])
    old = BEFORE["old-default-without-newer-keys"]
    assert "normalize" not in old["stored"]["backbone"]
    assert _same_values(resolve_config(None, [], old["stored"]), old["resolved"])
    es = resolve_config("paper", ["proposer.model=/x/e.onnx", "proposer.top_k=50"],
                        proposer="entityseg")
    assert _same_values(es, BEFORE["paper+entityseg"])
    assert not _same_values(dataclasses.replace(es, runtime=dataclasses.replace(
        es.runtime, top_k=3)), BEFORE["paper+entityseg"])


# ---- one declaration per option -------------------------------------------------------

def test_every_proposer_option_is_declared_once():
    """Each proposer's options class is the one its implementation reads: SAM's
    generator takes ``SamOptions``; EntitySeg's constructor defaults are its options'."""
    import inspect

    from moduseg.runtime.proposers import sam
    from moduseg.runtime.proposers.entityseg import EntitySegProposer

    assert sam.SamOptions is SamOptions
    shared = {f.name for f in dataclasses.fields(ProposerOptions)}
    assert sam.OPTION_NAMES - {"grid_rc"} == {f.name for f in dataclasses.fields(SamOptions)
                                               } - shared
    params = inspect.signature(EntitySegProposer).parameters
    es = {f.name: f.default for f in dataclasses.fields(EntitySegOptions)
          if f.name not in shared}
    assert {k: params[k].default for k in es} == es
    assert set(proposer_classes()) >= {"sam", "entityseg"}


def test_schema_lists_every_option_once_with_help():
    rows = config_schema()
    paths = [(r["proposer"], r["path"]) for r in rows]
    assert len(paths) == len(set(paths))
    for section, cls in SECTIONS.items():
        assert {f"{section}.{f.name}" for f in dataclasses.fields(cls)} <= {r["path"] for r in rows}
    for name, cls in proposer_classes().items():
        assert {f"proposer.{f.name}" for f in dataclasses.fields(cls)} <= {r["path"] for r in rows}
    for r in rows:
        assert r["help"] and "\n" not in r["help"], r["path"]
        assert set(r) == {"path", "section", "proposer", "type", "default", "range", "choices",
                          "help"}
    json.dumps(rows)     # the docs build writes it out
    top_k = next(r for r in rows if r["path"] == "runtime.top_k")
    assert (top_k["type"], top_k["default"], top_k["range"]) == ("int", 25, "[1, 1024]")
    frac = next(r for r in rows if r["path"] == "bank.outlier_fraction")
    assert frac["range"] == "[0.0, 1.0)"
    assert next(r for r in rows if r["path"] == "proposer.name")["choices"] == list(
        proposer_classes())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.sampled_from([r for r in config_schema() if r["range"]]),
       base=st.sampled_from(["paper", "default"]))
def test_each_stated_range_is_the_one_enforced(row, base):
    """Each bound of the schema is refused just outside and accepted on it (closed) or
    just inside (open): the range is stated once and enforced as stated."""
    import math
    key = row["path"]
    proposer = row["proposer"] or None
    extra = {"proposer.model": "/m.onnx"} if proposer == "entityseg" else {}
    lo, hi = (p.strip() for p in row["range"][1:-1].split(","))
    is_int = row["type"].startswith("int")
    for text, closed, direction in ((lo, row["range"][0] == "[", -1),
                                    (hi, row["range"][-1] == "]", +1)):
        bound = float(text)
        step = 1 if is_int else max(abs(bound) * 1e-9, 1e-12)
        outside = bound + direction * step if closed else bound
        inside = bound if closed else bound - direction * step
        if is_int:
            outside, inside = int(outside), int(math.ceil(inside) if direction < 0 else inside)
        wrap = (lambda v: [v]) if row["type"].startswith("list") else (lambda v: v)
        with pytest.raises(InputError, match=key.replace(".", "[.]")):
            resolve_config(base, {key: wrap(outside), **extra}, proposer=proposer)
        cfg = resolve_config(base, {key: wrap(inside), **extra}, proposer=proposer)
        got = getattr(cfg.proposer if key.startswith("proposer.") else
                      getattr(cfg, key.split(".")[0]), key.split(".")[1])
        assert got == inside or got == (inside, inside) or got == (inside,)


def test_options_are_frozen_and_checked_when_built():
    from moduseg.config import RuntimeConfig
    cfg = preset("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runtime.top_k = 3
    with pytest.raises(InputError, match="runtime.top_k must be in"):
        RuntimeConfig(top_k=0)
    with pytest.raises(InputError, match="did you mean nearest"):
        dataclasses.replace(cfg.runtime, unassigned="nearst")


def test_typed_overrides_need_no_string_round_trip():
    """``load_segmenter(runtime__top_k=np.int64(10))`` once became the string
    ``"np.int64(10)"`` for ``ast.literal_eval``; typed values now go straight in."""
    import numpy as np
    cfg = resolve_config("default", {"runtime.top_k": np.int64(10), "proposer.model": None,
                                     "backbone.layers": [8, 11]})
    assert cfg.runtime.top_k == 10 and type(cfg.runtime.top_k) is int
    assert cfg.backbone.layers == (8, 11)
    assert cfg == resolve_config("default", ["runtime.top_k=10", "backbone.layers=[8, 11]"])


def test_proposer_name_switches_the_options_class():
    cfg = resolve_config("default", ["proposer.name=entityseg", "proposer.model=/e.onnx",
                                     "proposer.chunk=4"])
    assert cfg.proposer == EntitySegOptions(model="/e.onnx", chunk=4)
    assert resolve_config(None, [], cfg.to_dict()) == cfg
    # --proposer applies before --set, to a stored configuration as to a preset
    back = resolve_config(None, ["proposer.points_per_side=4"], cfg.to_dict(), proposer="sam")
    assert back.proposer == SamOptions(points_per_side=4)
    with pytest.raises(InputError, match="did you mean sam"):
        resolve_config("default", ["proposer.name=sma"])


def test_a_new_proposer_is_one_options_class_and_one_registry_line():
    """A ``ProposerOptions`` subclass named by a ``registry.PROPOSERS`` entry is
    selectable by ``proposer.name``, in the schema and in ``--set``; unregistered, it
    is not."""
    from dataclasses import dataclass

    from moduseg.config import option
    from moduseg.registry import PROPOSERS, ProposerEntry

    @dataclass(frozen=True)
    class ToyOptions(ProposerOptions):
        name: str = "toy"
        cells: int = option(4, ge=1, le=16, help="Cells a side.")

    with pytest.raises(InputError, match="proposer.name must be one of"):
        resolve_config("default", [], proposer="toy")
    with PROPOSERS.registered("toy", ProposerEntry("toy", None, "a grid", options=ToyOptions)):
        cfg = resolve_config("default", ["runtime.top_k=5"], proposer="toy")
        assert cfg.proposer == ToyOptions() and cfg.proposer_options() == {"cells": 4}
        assert resolve_config("paper", ["proposer.cells=8"], proposer="toy").proposer.cells == 8
        with pytest.raises(InputError, match="proposer.cells must be in"):
            resolve_config("paper", ["proposer.cells=99"], proposer="toy")
        with pytest.raises(InputError, match="is a toy option"):
            resolve_config("paper", ["proposer.cells=8"])
        assert any(r["path"] == "proposer.cells" and r["proposer"] == "toy"
                   for r in config_schema())
        assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert not any(r["proposer"] == "toy" for r in config_schema())


# ---- property: typed overrides (the Python API) -----------------------------------------

TYPED = st.one_of(st.integers(-10**12, 10**12), st.floats(), st.booleans(), st.none(),
                  st.text(max_size=8), st.lists(st.integers(-3, 70), max_size=5),
                  st.tuples(st.integers(-3, 70), st.integers(-3, 70)),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sets=st.dictionaries(KEYS, TYPED, max_size=4), base=st.sampled_from(preset_names()),
       proposer=st.sampled_from([None, "sam", "entityseg"]))
def test_only_moduseg_errors_escape_typed_overrides(sets, base, proposer):
    try:
        cfg = resolve_config(base, sets, proposer=proposer)
    except ModuSegError as e:
        assert "\n" not in str(e)
        return
    assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_huge_numbers_are_one_line_errors():
    """An integer beyond float range for a float option was an OverflowError."""
    with pytest.raises(InputError, match="bank.eps must be a finite number"):
        resolve_config("paper", ["bank.eps=" + "9" * 400])
    with pytest.raises(InputError, match="runtime.top_k must be in"):
        resolve_config("paper", {"runtime.top_k": 10 ** 400})


@pytest.mark.parametrize("name", [["sam"], {"a": 1}, 3, None])
def test_a_stored_proposer_name_of_any_type_is_a_one_line_error(name):
    d = {"proposer": {"name": name}}
    if name is None:                        # an old bank's "unset": the default proposer
        assert ModuSegConfig.from_dict(d).proposer == SamOptions()
        return
    with pytest.raises(InputError, match="proposer.name must be one of"):
        ModuSegConfig.from_dict(d)


# ---- the temporal section (issue 25) ---------------------------------------------------

def test_temporal_section_is_declared_once_and_settable():
    from moduseg.config import TemporalOptions
    from moduseg.temporal import TemporalConfig
    assert SECTIONS["temporal"] is TemporalOptions
    cfg = resolve_config("default", ["temporal.max_interval=6", "temporal.flow_preset=fast"])
    assert (cfg.temporal.max_interval, cfg.temporal.flow_preset) == (6, "fast")
    assert TemporalConfig.from_config(cfg).max_interval == 6
    with pytest.raises(InputError, match="did you mean temporal.max_interval"):
        resolve_config("default", ["temporal.max_intervl=6"])
    with pytest.raises(InputError, match="temporal.decay must be in"):
        resolve_config("default", ["temporal.decay=1.0"])
    with pytest.raises(InputError, match="temporal.flow_preset must be one of"):
        resolve_config("default", ["temporal.flow_preset=slow"])
    # the schema (configuration reference) lists every temporal option with its help
    rows = {r["path"]: r for r in config_schema() if r["section"] == "temporal"}
    assert set(rows) == {f"temporal.{f.name}" for f in dataclasses.fields(TemporalOptions)}
    assert rows["temporal.max_interval"]["default"] == 8
    # TemporalConfig holds no defaults of its own: they are TemporalOptions'
    assert TemporalConfig().options == TemporalOptions()


def test_presets_state_the_temporal_section_and_old_banks_get_its_defaults():
    from moduseg.config import PRESET_DIR, TemporalOptions
    names = {f.name for f in dataclasses.fields(TemporalOptions)}
    for name in preset_names():
        stated = json.loads((PRESET_DIR / f"{name}.json").read_text())["temporal"]
        assert set(stated) == names, name
        assert preset(name).temporal == TemporalOptions(**stated)
    old = BEFORE["old-default-without-newer-keys"]["stored"]
    assert "temporal" not in old
    assert resolve_config(None, [], old).temporal == TemporalOptions()
    stored = preset("default").with_overrides({"temporal.max_interval": 5}).to_dict()
    assert ModuSegConfig.from_dict(stored).temporal.max_interval == 5


def _stored_configs() -> list[dict]:
    """The embedded bank's stored configuration and each preset file, as written."""
    from moduseg.bank.embedded import embedded_bank_path
    from moduseg.bank.store import load_bank
    from moduseg.config import PRESET_DIR, preset_names
    out = [load_bank(embedded_bank_path()).config]
    for name in preset_names():
        d = json.loads((PRESET_DIR / f"{name}.json").read_text())
        d.pop("description", None)
        out.append(d)
    return out


STORED_CONFIGS = _stored_configs()


@FUZZ
@given(st.sampled_from(range(len(STORED_CONFIGS))).flatmap(
    lambda i: json_mutations(STORED_CONFIGS[i]).map(lambda m: apply_json(STORED_CONFIGS[i], m))),
    st.sampled_from([None, "sam", "entityseg"]))
def test_fuzz_stored_configuration(stored, proposer):
    """What ``segment``/``eval`` do with a bank's configuration: resolve it (with
    ``--proposer``); only a ModuSegError (one line) escapes, and what is accepted
    round-trips through JSON."""
    from moduseg.config import ModuSegConfig
    from moduseg.settings import resolve_config

    def run():
        cfg = resolve_config(None, [], stored if isinstance(stored, dict) else {"x": stored},
                             proposer=proposer)
        assert ModuSegConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    attempt("stored config", run)
