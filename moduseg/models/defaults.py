"""The installed default models' files and identities in the model home (the
objects are built by ``moduseg.build``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelNotFoundError
from ..home import model_home, pull_command
from ..types import BackboneIdentity
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


def default_model_paths(home=None) -> tuple[Path, Path]:
    """The installed SAM encoder and decoder graphs."""
    return installed_file(PROPOSER.key, "encoder", home), installed_file(PROPOSER.key, "decoder", home)


def model_path(model, home=None) -> Path:
    """A model file named on the command line: as given, or inside the model home."""
    p = Path(model).expanduser()
    if not p.is_absolute() and not p.exists():
        inside = model_home(home) / p
        if inside.exists():
            return inside
    return p
