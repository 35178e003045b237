"""Load public EntitySeg / Mask2Former detectron2 checkpoints into ``EntitySegModel``.

Formats: ``.pth`` (``torch.save`` of ``{"model": state_dict, ...}`` or a bare
state dict) and ``.pkl`` (detectron2 model-zoo pickles holding
``{"model": {name: numpy array}}``). Our modules carry detectron2's names, so
the name map is the identity except for two historical renames
(``static_query`` -> ``query_feat``) and a ``module.`` prefix from DDP.

Loading is strict: every parameter of the model must come from the file and
every tensor in the file must be used (a short list of training-only keys
aside); otherwise ``CheckpointMismatch`` lists the missing and unexpected keys.

Backbones that load: Swin (``D2SwinTransformer``: EntitySeg Swin-T, Swin-L w7,
and Mask2Former's Swin-B/L w12), HorNet (``D2HorNet``: EntitySeg HorNet-L GF,
FFT rewritten as DFT matrices), ResNet (detectron2 ``build_resnet_backbone``).
CropFormer checkpoints (``CropSharedMultiScaleMaskedTransformerDecoder``) are
refused: their decoder has extra 3-D / cross-view weights this model lacks.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, ModelNotFoundError, ModuSegError
from .config import EntitySegConfig, infer_config
from .model import EntitySegModel

RENAMES = (("static_query", "query_feat"),)
# keys a detectron2 checkpoint may hold that the inference model does not need
IGNORED_PREFIXES = ("criterion.", "pixel_mean", "pixel_std")
# buffers computed from the architecture: may be absent; if present they must agree
DERIVED_SUFFIXES = ("attn.relative_position_index",)


class CheckpointMismatch(ModuSegError):
    """The checkpoint's tensors do not match the model (names or shapes)."""


@dataclass
class LoadReport:
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = 20) -> str:
        parts = [f"{self.loaded} tensors matched"]
        for what, keys in (("missing from the checkpoint", self.missing),
                           ("unexpected in the checkpoint", self.unexpected),
                           ("with the wrong shape", self.shape_mismatch)):
            if keys:
                more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {what}: {keys[:limit]}{more}")
        return "; ".join(parts)


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """The ``{name: float32 array}`` model weights of a ``.pth`` or ``.pkl`` file.

    ``.pth`` files are opened with ``weights_only=True``; a file that needs
    arbitrary unpickling (optimizer state with custom classes) and every
    ``.pkl`` file needs ``trust_pickle=True``, because unpickling runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"EntitySeg checkpoint {path} does not exist; download "
                                 f"model_final.pth from the EntitySeg model zoo")
    if path.suffix == ".pkl":
        if not trust_pickle:
            raise InputError(f"{path} is a pickle; loading it runs code from the file. Pass "
                             f"--trust-pickle (trust_pickle=True) if you trust its source")
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types here
            if not trust_pickle:
                raise InputError(
                    f"{path} cannot be read with weights_only=True ({type(e).__name__}); "
                    f"pass --trust-pickle if you trust its source") from None
            obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{path} holds no state dict (expected {{'model': {{name: tensor}}}})")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        if isinstance(v, np.ndarray):
            out[str(k)] = v
    return out


def map_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """detectron2 names -> ours (identity bar DDP prefix and historical renames)."""
    out = {}
    for k, v in state.items():
        if k.startswith("module."):
            k = k[len("module."):]
        for old, new in RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out


def load_state(model: EntitySegModel, state: dict[str, np.ndarray],
               strict: bool = True) -> LoadReport:
    """Copy ``state`` into ``model``; raise ``CheckpointMismatch`` unless it is exact."""
    state = map_names(state)
    own = model.state_dict()
    report = LoadReport(loaded=0)
    new = {}
    for k, v in state.items():
        if k.startswith(IGNORED_PREFIXES):
            report.ignored.append(k)
        elif k not in own:
            report.unexpected.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            report.shape_mismatch.append(f"{k}: file {tuple(v.shape)} vs model "
                                         f"{tuple(own[k].shape)}")
        else:
            new[k] = torch.from_numpy(np.ascontiguousarray(v)).to(own[k].dtype)
    for k in list(new):
        if k.endswith(DERIVED_SUFFIXES) and not torch.equal(new[k], own[k]):
            report.shape_mismatch.append(f"{k}: values differ from the window size's index")
            del new[k]
    report.missing = sorted(k for k in own if k not in state and not k.endswith(DERIVED_SUFFIXES))
    report.unexpected.sort()
    report.loaded = len(new)
    report.ignored += sorted(k for k in own if k not in state and k.endswith(DERIVED_SUFFIXES))
    if strict and not report.ok:
        raise CheckpointMismatch(
            f"checkpoint does not match the {model.cfg.backbone} EntitySeg model: "
            f"{report.describe()}")
    model.load_state_dict(new, strict=False)
    return report


def load_model(path: str | Path, num_queries: int | None = None, trust_pickle: bool = False,
               config: EntitySegConfig | None = None,
               **infer_kwargs) -> tuple[EntitySegModel, LoadReport]:
    """Build the model the checkpoint describes and load it strictly (eval mode).

    ``infer_kwargs`` (``enc_heads``, ``dec_heads``, ``gn_groups``) override the
    published values for sizes the weights cannot reveal.
    """
    state = map_names(read_state_dict(path, trust_pickle))
    cfg = config or infer_config(state, **infer_kwargs)
    if num_queries is not None and num_queries != cfg.num_queries:
        raise InputError(f"checkpoint has {cfg.num_queries} queries, not {num_queries}")
    model = EntitySegModel(cfg)
    report = load_state(model, state)
    return model.eval(), report
