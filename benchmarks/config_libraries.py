"""Import time of the configuration-library candidates (issue #26 item 3).

For each candidate, a fresh interpreter imports the library and declares the same
representative options class (20 fields: ranges, choices, an optional tuple) and
builds one instance from a dict; the wall time of that, and ``-X importtime``'s
cumulative microseconds of the library's top-level import, medians over ``--runs``
alternated runs. Candidates not importable are reported as missing.

    python benchmarks/config_libraries.py --site /tmp/opt-measure --runs 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

FIELDS = [("min_objectness", "float", 0.6, (0.0, 1.0)), ("min_area", "int", 300, (0, 10**8)),
          ("top_k", "int", 25, (1, 1024)), ("nms_iou", "float", 0.4, (0.0, 1.0)),
          ("vote_balance", "float", 1.0, (0.0, 1.0)), ("frame_prototypes", "float", 0.0, (0, 1)),
          ("prototype_temperature", "float", 0.05, (1e-3, 10.0)), ("nprobe", "int", 32, (1, 65536)),
          ("refine_radius", "int", 0, (0, 512)), ("refine_eps", "float", 1e-3, (0.0, 1e6)),
          ("reuse_below", "float", 0.0, (0.0, 255.0)), ("reuse_max_age", "int", 1, (0, 10**8)),
          ("eps", "float", 1e-6, (0.0, 1.0)), ("erosion_kernel", "int", 3, (1, 99)),
          ("erosion_iterations", "int", 20, (0, 1000)), ("adaptive_keep", "float", 0.5, (0, 1)),
          ("patch_purity", "float", 0.9, (0.0, 1.0))]
CHOICES = [("unassigned", ("background", "ignore", "nearest")),
           ("index", ("auto", "flat", "flat_fp16", "ivf")), ("voting", ("count", "weighted"))]

DATACLASSES = """
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Tuple
@dataclass
class Opts:
{fields}
    layers: Optional[Tuple[int, ...]] = None
def check(o):
    for f in dataclasses.fields(o):
        v = getattr(o, f.name)
        lo, hi = f.metadata.get("range", (None, None))
        if lo is not None and not lo <= v <= hi: raise ValueError(f.name)
        if "choices" in f.metadata and v not in f.metadata["choices"]: raise ValueError(f.name)
o = Opts(**{{"top_k": 10, "unassigned": "nearest"}}); check(o)
"""
MSGSPEC = """
import msgspec
from typing import Annotated, Literal, Optional, Tuple
class Opts(msgspec.Struct, forbid_unknown_fields=True):
{fields}
    layers: Optional[Tuple[int, ...]] = None
o = msgspec.convert({{"top_k": 10, "unassigned": "nearest"}}, Opts)
"""
PYDANTIC = """
import pydantic
from typing import Annotated, Literal, Optional, Tuple
class Opts(pydantic.BaseModel, extra="forbid", strict=True):
{fields}
    layers: Optional[Tuple[int, ...]] = None
o = Opts.model_validate({{"top_k": 10, "unassigned": "nearest"}})
"""


def source(kind: str) -> str:
    lines = []
    for name, tp, default, (lo, hi) in FIELDS:
        if kind == "dataclasses":
            lines.append(f"    {name}: {tp} = field(default={default!r}, "
                         f"metadata={{'range': ({lo!r}, {hi!r})}})")
        elif kind == "msgspec":
            lines.append(f"    {name}: Annotated[{tp}, msgspec.Meta(ge={lo!r}, le={hi!r})]"
                         f" = {default!r}")
        else:
            lines.append(f"    {name}: Annotated[{tp}, pydantic.Field(ge={lo!r}, le={hi!r})]"
                         f" = {default!r}")
    for name, choices in CHOICES:
        if kind == "dataclasses":
            lines.append(f"    {name}: str = field(default={choices[0]!r}, "
                         f"metadata={{'choices': {choices!r}}})")
        else:
            lines.append(f"    {name}: Literal{list(choices)!r} = {choices[0]!r}")
    body = "\n".join(lines)
    return {"dataclasses": DATACLASSES, "msgspec": MSGSPEC, "pydantic": PYDANTIC}[kind].format(
        fields=body)


def run_once(kind: str, env: dict) -> tuple[float, float]:
    """(wall ms of import + declaration + one validation, importtime ms of the library)."""
    lib = {"dataclasses": "dataclasses", "msgspec": "msgspec", "pydantic": "pydantic"}[kind]
    code = ("import time; t0 = time.perf_counter()\n" + source(kind)
            + "\nprint((time.perf_counter() - t0) * 1e3)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    wall = float(out.stdout.strip().splitlines()[-1])
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {lib}"], env=env,
                         capture_output=True, text=True, check=True)
    cumulative = 0
    for line in imp.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == lib:
            cumulative = int(parts[1])
    return wall, cumulative / 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default="", help="a folder holding the candidates (pip --target)")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=args.site)
    kinds = ["dataclasses", "msgspec", "pydantic"]
    results = {k: [] for k in kinds}
    for _ in range(args.runs):
        for k in kinds:                      # alternated, so drift hits every candidate
            try:
                results[k].append(run_once(k, env))
            except subprocess.CalledProcessError:
                results[k] = None
                kinds.remove(k)
                break
    print(f"{'candidate':12} {'import+declare+validate ms':>27} {'-X importtime ms':>17}")
    for k, rs in results.items():
        if not rs:
            print(f"{k:12} missing")
            continue
        print(f"{k:12} {statistics.median(r[0] for r in rs):27.1f} "
              f"{statistics.median(r[1] for r in rs):17.1f}")


if __name__ == "__main__":
    main()
