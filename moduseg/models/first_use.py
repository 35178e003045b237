"""Fetch the default models the first time a command needs them.

The same checksummed ``pull`` as ``moduseg models pull``, announced in one
line (what, where) with a progress bar over its steps. With ``offline`` nothing
is fetched and the loaders' own message says how to install the models.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ModelNotFoundError
from ..home import model_home
from .pull import pull, verify_installed
from .registry import SPECS


def missing_models(home=None, specs=None) -> dict[str, str]:
    """key -> why, for each default model that is not installed intact (sizes only)."""
    specs = list(specs or SPECS.values())
    try:
        status = verify_installed(home, specs, deep=False)
    except ModelNotFoundError:  # unreadable manifest: pull reinstalls
        return {s.key: "manifest unreadable" for s in specs}
    return {k: why for k, why in status.items() if why is not None}


def ensure_models(home=None, offline: bool = False, progress: bool = True, specs=None,
                  surgery=None) -> Path:
    """Install whatever default model is missing; return the model home.

    ``specs`` and ``surgery`` default to the real models and DINOv2 surgery
    (tests pass stand-ins).
    """
    home = model_home(home)
    by_key = {s.key: s for s in (specs or SPECS.values())}
    missing = missing_models(home, by_key.values())
    if not missing or offline:
        return home
    specs = [by_key[k] for k in missing]
    print(f"first use: fetching the default models ({', '.join(missing)}) into {home} "
          f"(change with --home or MODUSEG_HOME)", file=sys.stderr, flush=True)
    steps = sum(3 + (s.kind == "backbone") for s in specs)  # fetch, verify, [convert], install
    from tqdm import tqdm

    with tqdm(total=steps, desc="models", unit="step", disable=not progress,
              file=sys.stderr) as bar:
        def log(msg: str) -> None:
            bar.set_postfix_str(msg.split(" with: ")[0][:60], refresh=False)
            bar.update(1)

        pull(home=home, specs=specs, surgery=surgery, log=log)
        bar.n = steps
        bar.refresh()
    return home
