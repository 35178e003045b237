"""Where the default models live: ``--home`` > ``$MODUSEG_HOME`` > the user cache dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "MODUSEG_HOME"
MANIFEST = "manifest.json"


def user_cache_dir() -> Path:
    """The platform's per-user cache directory (XDG on Linux)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"


def model_home(home: str | os.PathLike | None = None) -> Path:
    """The model home: explicit argument, else ``$MODUSEG_HOME``, else ``<cache>/moduseg``."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "moduseg"


def cache_dir(kind: str, home: str | os.PathLike | None = None) -> Path:
    """``<model home>/cache/<kind>``: the one root of every derived file (rewritten
    SAM graphs, the DINOv2 layer variants' engines, compiled CUDA kernels, CLIP text
    embeddings), so removing the model home removes them all."""
    return model_home(home) / "cache" / kind


def pull_command(home: str | os.PathLike | None = None, *flags: str) -> str:
    """``moduseg models pull [flags]``, with ``--home DIR`` when ``home`` is not where
    the command would install by itself (``$MODUSEG_HOME`` or the user cache): the
    command a message suggests must fix the home the failing command used."""
    import shlex

    words = ["moduseg", "models", "pull", *flags]
    if home is not None and not _same(model_home(home), model_home(None)):
        words += ["--home", str(home)]
    return " ".join(shlex.quote(w) for w in words)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return False

