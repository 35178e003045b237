"""Where exported backbones come from: RADIO (torch hub), timm, or an ONNX file.

Every torch source is wrapped into one call contract so the exporter, the
parity check and the ONNX graph agree: input ``[B, 3, H, W]`` RGB float in
[0, 1] (normalisation inside the module), output patch features
``[B, D, H/p, W/p]``. torch and timm are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, ModelNotFoundError

SOURCE_KINDS = ("radio", "timm", "onnx")
RADIO_HUB_REPO = "NVlabs/RADIO"
RADIO_ENTRY = "radio_model"


@dataclass(frozen=True)
class SourceSpec:
    """``radio:<version>``, ``timm:<name>`` or ``onnx:<path>`` split in two."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def parse_source(spec: str) -> SourceSpec:
    kind, sep, name = str(spec).partition(":")
    if not sep or kind not in SOURCE_KINDS or not name:
        raise InputError(
            f"backbone source {spec!r} is not understood; use radio:<version> (e.g. "
            f"radio:c-radio_v4-so400m), timm:<model name> (e.g. timm:vit_small_patch14_dinov2) "
            f"or onnx:<path to .onnx>")
    return SourceSpec(kind, name)


@dataclass
class TorchSource:
    """A wrapped torch module plus what the ONNX metadata must record about it."""

    module: object  # torch.nn.Module with the [0,1] -> [B, D, h, w] contract
    patch_size: int
    feature_dim: int
    normalisation: str
    output_taken: str
    source: str
    resolution_step: int = 0  # inputs must be multiples of this (0: the patch size)
    extra: dict = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.resolution_step or self.patch_size


def _nn():
    import torch.nn as nn
    return nn


def normalise_module(mean, std):
    """(x - mean) / std as a module, so exporting it folds normalisation into the graph."""
    import torch

    class _Normalise(_nn().Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("inv_std",
                                 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, x):
            return (x - self.mean) * self.inv_std

    return _Normalise()


def tokens_to_grid(tokens, grid_hw):
    """``[B, h*w, D]`` (row-major patches) -> ``[B, D, h, w]``."""
    b, n, d = tokens.shape
    h, w = grid_hw
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def radio_spatial_wrapper(radio_model):
    """RADIO returns ``(summary, spatial)``; keep the spatial features as NCHW.

    The model conditions its own [0, 1] input (mean/std inside), returns a
    ``RadioOutput`` namedtuple (or a dict with key ``backbone`` when adaptors
    are loaded), with spatial features ``[B, L, D]`` (``NLC``, the default
    ``feature_fmt``) or ``[B, D, h, w]``.
    """
    import torch  # noqa: F401  (torch must exist for the wrapper to run)

    patch = int(radio_model.patch_size)

    class _RadioSpatial(_nn().Module):
        def __init__(self):
            super().__init__()
            self.radio = radio_model

        def forward(self, x):
            out = self.radio(x)
            if isinstance(out, dict):
                out = out["backbone"]
            spatial = out[1]
            if spatial.ndim == 4:
                return spatial
            return tokens_to_grid(spatial, (x.shape[-2] // patch, x.shape[-1] // patch))

    return _RadioSpatial()


def timm_patch_wrapper(vit, mean, std):
    """A timm ViT -> normalised input, prefix (class/register) tokens dropped, NCHW grid."""
    patch = _timm_patch_size(vit)
    n_prefix = int(getattr(vit, "num_prefix_tokens", 1))
    norm = normalise_module(mean, std)

    class _TimmPatch(_nn().Module):
        def __init__(self):
            super().__init__()
            self.norm = norm
            self.vit = vit

        def forward(self, x):
            tokens = self.vit.forward_features(self.norm(x))
            if tokens.ndim == 4:  # NHWC-style models (e.g. some hybrids)
                return tokens.permute(0, 3, 1, 2)
            return tokens_to_grid(tokens[:, n_prefix:],
                                  (x.shape[-2] // patch, x.shape[-1] // patch))

    return _TimmPatch()


def _load_timm_checkpoint(model, checkpoint) -> None:
    """Load a local state dict through the model family's own filter (timm's pretrained
    path), which resamples position embeddings to the export resolution."""
    import sys

    import torch
    from timm.models import load_checkpoint

    family = sys.modules.get(type(model).__module__)
    fn = getattr(family, "checkpoint_filter_fn", None)
    if fn is None:
        load_checkpoint(model, str(checkpoint), strict=False)
        return
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    missing, unexpected = model.load_state_dict(fn(state, model), strict=False)
    bad = [k for k in missing if not k.startswith(("head", "fc_norm"))]
    if bad:
        raise RuntimeError(f"checkpoint {checkpoint} lacks {len(bad)} weights, e.g. {bad[:3]}")


def _timm_patch_size(vit) -> int:
    ps = getattr(getattr(vit, "patch_embed", None), "patch_size", None)
    if ps is None:
        raise InputError(f"timm model {type(vit).__name__} has no patch_embed.patch_size; "
                         f"only ViT-style models with a patch grid can be exported")
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def check_resolution(resolution: tuple[int, int], step: int, what: str) -> None:
    h, w = resolution
    if h <= 0 or w <= 0 or h % step or w % step:
        near = (max(step, round(h / step) * step), max(step, round(w / step) * step))
        raise InputError(
            f"{what} needs an input size that is a multiple of {step}; {h}x{w} is not "
            f"(nearest supported: {near[0]}x{near[1]}); pass --resolution {near[0]}x{near[1]}")


# ---------------------------------------------------------------- loaders

def load_radio(version: str, repo: str | Path | None = None, device: str = "cpu"):
    """RADIO through torch.hub: a local clone, the user's hub cache, or the network.

    A clone (``--repo DIR``) and a populated hub cache load with
    ``source="local"`` so no network is touched; otherwise torch.hub fetches
    ``NVlabs/RADIO`` (weights come from wherever RADIO's hubconf points).
    """
    import torch

    kwargs = dict(version=version, progress=True)
    if repo is not None:
        repo = Path(repo).expanduser()
        if not (repo / "hubconf.py").is_file():
            raise ModelNotFoundError(
                f"--repo {repo} is not a RADIO clone (no hubconf.py there); clone "
                f"https://github.com/{RADIO_HUB_REPO} and pass its folder")
        where = ("local", str(repo))
    else:
        cached = [Path(torch.hub.get_dir()) / name
                  for name in ("NVlabs_RADIO_main", "NVlabs_RADIO_master")]
        found = next((c for c in cached if (c / "hubconf.py").is_file()), None)
        where = ("local", str(found)) if found else ("github", RADIO_HUB_REPO)
    source, target = where
    try:
        if source == "github":
            model = torch.hub.load(target, RADIO_ENTRY, skip_validation=True, trust_repo=True,
                                   **kwargs)
        else:
            model = torch.hub.load(target, RADIO_ENTRY, source="local", **kwargs)
    except Exception as e:  # hub errors are many kinds; all mean "could not load"
        raise ModelNotFoundError(
            f"could not load RADIO {version!r} via torch.hub from {target} ({source}): "
            f"{type(e).__name__}: {e}. Without network access clone NVlabs/RADIO, put the "
            f"weights in the torch hub cache ({torch.hub.get_dir()}/checkpoints) and pass "
            f"--repo <clone>") from None
    return model.to(device).eval()


def radio_source(model, version: str) -> TorchSource:
    """Wrap a loaded RADIO model (or anything with its call contract)."""
    import torch

    patch = int(model.patch_size)
    step = int(getattr(model, "min_resolution_step", patch))
    wrapper = radio_spatial_wrapper(model).eval()
    probe = torch.rand(1, 3, step * 2, step * 2)
    with torch.no_grad():
        dim = int(wrapper(probe).shape[1])
    return TorchSource(
        module=wrapper, patch_size=patch, feature_dim=dim,
        normalisation="RGB float32 in [0,1]; RADIO's own input conditioner (mean/std) "
                      "is inside the graph",
        output_taken="spatial_features (output 1 of (summary, spatial_features)) as NCHW; "
                     "summary token dropped",
        source=f"radio:{version}", resolution_step=step,
        extra={"preferred_resolution": str(getattr(model, "preferred_resolution", ""))})


def timm_source(name: str, checkpoint: str | Path | None = None,
                resolution: tuple[int, int] | None = None, pretrained: bool = True,
                model=None, **model_kwargs) -> TorchSource:
    """A timm ViT at a fixed resolution (timm resizes its position embeddings).

    ``model`` skips creation (tests pass tiny random models); ``checkpoint``
    loads a local state dict instead of timm's own pretrained download.
    """
    import torch

    if model is None:
        import timm

        if checkpoint is not None and not Path(checkpoint).is_file():
            raise ModelNotFoundError(f"--checkpoint {checkpoint} does not exist")
        if resolution is not None:
            model_kwargs.setdefault("img_size", tuple(resolution))
        try:
            model = timm.create_model(name, pretrained=pretrained and checkpoint is None,
                                      num_classes=0, **model_kwargs)
            if checkpoint is not None:
                _load_timm_checkpoint(model, checkpoint)
        except RuntimeError as e:
            raise ModelNotFoundError(
                f"timm could not create {name!r}: {e}; pass --checkpoint with a local "
                f"state dict when the hub is unreachable") from None
    model = model.eval()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    wrapper = timm_patch_wrapper(model, mean, std).eval()
    patch = _timm_patch_size(model)
    if resolution is None:
        img = getattr(model.patch_embed, "img_size", (patch * 14, patch * 14))
        resolution = tuple(int(v) for v in img)
    with torch.no_grad():
        dim = int(wrapper(torch.rand(1, 3, *resolution)).shape[1])
    return TorchSource(
        module=wrapper, patch_size=patch, feature_dim=dim,
        normalisation=f"RGB float32 in [0,1]; (x - mean) / std folded into the graph, "
                      f"mean={list(mean)} std={list(std)}",
        output_taken=f"forward_features tokens without the {model.num_prefix_tokens} "
                     f"prefix (class/register) tokens, as NCHW",
        source=f"timm:{name}", extra={"checkpoint": str(checkpoint or "")})

