"""Turn CLI ``--preset`` and ``--set key=value`` into a ``ModuSegConfig``."""

from __future__ import annotations

import ast

from .config import ModuSegConfig, preset as named_preset
from .errors import InputError


def parse_overrides(items) -> dict:
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"--set expects KEY=VALUE (e.g. runtime.top_k=10), got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip()] = value
    return out


def resolve_config(preset: str | None, overrides=(), stored: dict | None = None) -> ModuSegConfig:
    """``--preset`` wins; else the configuration stored with the bank; else ``default``."""
    if preset:
        cfg = named_preset(preset)
    elif stored:
        cfg = ModuSegConfig.from_dict(stored)
    else:
        cfg = named_preset("default")
    return cfg.with_overrides(**parse_overrides(overrides)) if overrides else cfg
