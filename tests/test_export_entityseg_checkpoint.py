"""Checkpoint loading with the official detectron2 / Mask2Former parameter names.

``official_names`` spells the names out from the public model code
(Mask2Former's ``D2SwinTransformer``, ``MSDeformAttnPixelDecoder``,
``MultiScaleMaskedTransformerDecoder``; EntitySeg/CropFormer's ``D2HorNet``;
detectron2's ResNet), independently of our module tree.
"""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from moduseg.errors import InputError  # noqa: E402
from moduseg.export.entityseg.checkpoint import (CheckpointMismatch, load_model,  # noqa: E402
                                                 load_state, read_state_dict)
from moduseg.export.entityseg.config import (hornet_large, infer_config,  # noqa: E402
                                             swin_large, swin_tiny, tiny_test_config)
from moduseg.export.entityseg.model import EntitySegModel, random_model  # noqa: E402

WB = ("weight", "bias")


def _wb(prefix, names=WB):
    return [f"{prefix}.{n}" for n in names]


def official_names(cfg) -> set[str]:
    names = []
    if cfg.backbone == "swin":
        names += _wb("backbone.patch_embed.proj") + _wb("backbone.patch_embed.norm")
        for i, depth in enumerate(cfg.swin.depths):
            for j in range(depth):
                b = f"backbone.layers.{i}.blocks.{j}"
                names += [f"{b}.attn.relative_position_bias_table",
                          f"{b}.attn.relative_position_index"]
                for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                    names += _wb(f"{b}.{m}")
            if i < 3:
                names += [f"backbone.layers.{i}.downsample.reduction.weight"]
                names += _wb(f"backbone.layers.{i}.downsample.norm")
            names += _wb(f"backbone.norm{i}")
    elif cfg.backbone == "hornet":
        names += _wb("backbone.downsample_layers.0.0") + _wb("backbone.downsample_layers.0.1")
        for i in range(1, 4):
            names += (_wb(f"backbone.downsample_layers.{i}.0")
                      + _wb(f"backbone.downsample_layers.{i}.1"))
        for i, depth in enumerate(cfg.hornet.depths):
            for j in range(depth):
                b = f"backbone.stages.{i}.{j}"
                names += [f"{b}.gamma1", f"{b}.gamma2"]
                for m in ("norm1", "norm2", "pwconv1", "pwconv2", "gnconv.proj_in",
                          "gnconv.proj_out"):
                    names += _wb(f"{b}.{m}")
                for k in range(cfg.hornet.orders[i] - 1):
                    names += _wb(f"{b}.gnconv.pws.{k}")
                if cfg.hornet.gf_sizes[i] is None:
                    names += _wb(f"{b}.gnconv.dwconv")
                else:
                    d = f"{b}.gnconv.dwconv"
                    names += [f"{d}.dw.weight", f"{d}.complex_weight"]
                    names += _wb(f"{d}.pre_norm") + _wb(f"{d}.post_norm")
            names += _wb(f"backbone.norm{i}")
    else:
        bn = ("weight", "bias", "running_mean", "running_var")
        names += ["backbone.stem.conv1.weight"] + _wb("backbone.stem.conv1.norm", bn)
        for i, depth in enumerate(cfg.resnet.depths):
            for j in range(depth):
                b = f"backbone.res{i + 2}.{j}"
                convs = ("conv1", "conv2", "conv3") + (("shortcut",) if j == 0 else ())
                for c in convs:
                    names += [f"{b}.{c}.weight"] + _wb(f"{b}.{c}.norm", bn)
    d = "sem_seg_head.pixel_decoder"
    for i in range(3):
        names += _wb(f"{d}.input_proj.{i}.0") + _wb(f"{d}.input_proj.{i}.1")
    names += [f"{d}.transformer.level_embed"] + _wb(f"{d}.mask_features")
    for k in range(cfg.enc_layers):
        e = f"{d}.transformer.encoder.layers.{k}"
        for m in ("self_attn.sampling_offsets", "self_attn.attention_weights",
                  "self_attn.value_proj", "self_attn.output_proj", "norm1", "linear1",
                  "linear2", "norm2"):
            names += _wb(f"{e}.{m}")
    names += [f"{d}.adapter_1.weight", f"{d}.layer_1.weight"]
    names += _wb(f"{d}.adapter_1.norm") + _wb(f"{d}.layer_1.norm")
    p = "sem_seg_head.predictor"
    mha = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    for i in range(cfg.dec_layers):
        names += [f"{p}.transformer_self_attention_layers.{i}.self_attn.{n}" for n in mha]
        names += _wb(f"{p}.transformer_self_attention_layers.{i}.norm")
        names += [f"{p}.transformer_cross_attention_layers.{i}.multihead_attn.{n}" for n in mha]
        names += _wb(f"{p}.transformer_cross_attention_layers.{i}.norm")
        for m in ("linear1", "linear2", "norm"):
            names += _wb(f"{p}.transformer_ffn_layers.{i}.{m}")
    names += _wb(f"{p}.decoder_norm") + _wb(f"{p}.class_embed")
    names += [f"{p}.query_feat.weight", f"{p}.query_embed.weight", f"{p}.level_embed.weight"]
    for k in range(3):
        names += _wb(f"{p}.mask_embed.layers.{k}")
    assert len(names) == len(set(names))
    return set(names)


@pytest.mark.parametrize("backbone", ["swin", "hornet", "resnet"])
def test_our_names_are_the_official_names(backbone):
    cfg = tiny_test_config(backbone)
    assert set(EntitySegModel(cfg).state_dict()) == official_names(cfg)


def _synthetic(cfg, seed=1):
    """An 'official' checkpoint: official names, random values of the right shapes."""
    src = random_model(cfg, seed=seed)
    sd = src.state_dict()
    return src, {k: sd[k].numpy().copy() for k in official_names(cfg)}


def _outputs(model, x):
    with torch.no_grad():
        return [t.numpy() for t in model(x)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["pkl", "pth"])
def test_load_pkl_and_pth_round_trip(tmp_path, fmt):
    cfg = tiny_test_config("swin")
    src, state = _synthetic(cfg)
    path = tmp_path / f"model_final.{fmt}"
    if fmt == "pkl":
        state["criterion.empty_weight"] = np.ones(2, np.float32)   # training-only, ignored
        with open(path, "wb") as f:
            pickle.dump({"model": state, "__author__": "test"}, f)
    else:
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()},
                    "iteration": 7}, path)
    model, report = load_model(path, trust_pickle=(fmt == "pkl"), enc_heads=4, dec_heads=4,
                               gn_groups=8)
    assert report.ok and report.loaded == len(official_names(cfg))
    assert model.cfg.arch_dict() == cfg.arch_dict()      # sizes read back from the file
    x = torch.rand(1, 3, 64, 96) * 255
    for a, b in zip(_outputs(model, x), _outputs(src, x)):
        np.testing.assert_array_equal(a, b)


def test_missing_key_is_refused_and_listed():
    cfg = tiny_test_config("swin")
    _, state = _synthetic(cfg)
    gone = "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight"
    del state[gone]
    with pytest.raises(CheckpointMismatch, match="missing") as e:
        load_state(EntitySegModel(cfg), state)
    assert gone in str(e.value)


def test_unexpected_and_misshaped_keys_are_refused_and_listed():
    cfg = tiny_test_config("swin")
    _, state = _synthetic(cfg)
    state["sem_seg_head.predictor.crop_query_feat.weight"] = np.zeros((6, 32), np.float32)
    state["sem_seg_head.predictor.class_embed.weight"] = np.zeros((81, 32), np.float32)
    with pytest.raises(CheckpointMismatch) as e:
        load_state(EntitySegModel(cfg), state)
    msg = str(e.value)
    assert "unexpected" in msg and "crop_query_feat" in msg
    assert "wrong shape" in msg and "class_embed.weight" in msg


def test_legacy_static_query_and_ddp_prefix_are_mapped():
    cfg = tiny_test_config("hornet")
    src, state = _synthetic(cfg)
    state = {("module." + k).replace("query_feat", "static_query"): v for k, v in state.items()}
    model = EntitySegModel(cfg)
    assert load_state(model, state).ok
    np.testing.assert_array_equal(model.sem_seg_head.predictor.query_feat.weight.detach().numpy(),
                                  src.sem_seg_head.predictor.query_feat.weight.detach().numpy())


def test_pickle_needs_trust(tmp_path):
    path = tmp_path / "m.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {}}, f)
    with pytest.raises(InputError, match="trust-pickle"):
        read_state_dict(path)
    with pytest.raises(InputError, match="trust-pickle"):   # .pth holding arbitrary objects
        p2 = tmp_path / "m.pth"
        torch.save({"model": {"a": torch.zeros(1)}, "cfg": object()}, p2)
        read_state_dict(p2)


@pytest.mark.parametrize("factory", [swin_tiny, swin_large, hornet_large])
def test_published_architectures_are_recognised(factory):
    """Sizes of Swin-T / Swin-L / HorNet-L read back from their state-dict shapes."""
    cfg = factory()
    with torch.device("meta"):
        state = EntitySegModel(cfg).state_dict()
    assert set(state) == official_names(cfg)
    assert infer_config(state).arch_dict() == cfg.arch_dict()


def test_derived_swin_index_may_be_absent_but_not_wrong():
    cfg = tiny_test_config("swin")
    _, state = _synthetic(cfg)
    key = "backbone.layers.0.blocks.0.attn.relative_position_index"
    dropped = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    report = load_state(EntitySegModel(cfg), dropped)
    assert report.ok and key in report.ignored
    state[key] = state[key][::-1].copy()
    with pytest.raises(CheckpointMismatch, match="relative_position_index"):
        load_state(EntitySegModel(cfg), state)
