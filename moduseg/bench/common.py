"""Small helpers shared by the benchmark suites."""

from __future__ import annotations

import sys
from pathlib import Path


def default_data_root() -> Path:
    """``../shared/data`` next to the project checkout (absent on a user's machine)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (a no-op object when disabled)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, file=sys.stderr,
                leave=False, dynamic_ncols=True)


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded, None when either is missing or ``b`` is 0."""
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def try_models(home=None, backend: str = "cpu", need_proposer: bool = True, cfg=None):
    """(backbone, proposer, reason): the models of ``cfg`` (default: the ``default``
    preset's) built by ``moduseg.build``, or None and why not."""
    try:
        from ..config import preset
        from ..build import build_models
        backbone, proposer = build_models(cfg or preset("default"), backend, home,
                                          need_proposer)
        return backbone, proposer, ""
    except Exception as e:  # ModelNotFoundError, BackendUnavailableError, ImportError
        return None, None, f"default models unavailable ({type(e).__name__}: {e}); run " \
                           f"'moduseg models pull'"
