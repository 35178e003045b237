"""Where a keyframe's time goes: the temporal path's keyframes against per-frame frames.

One moving-camera CamVid clip (``moduseg.bench.clips``), segmented per frame (``off``)
and on the temporal path (``on``), the two alternated ``--rounds`` times (off, on, on,
off, ...) so load drift falls on both. Reported: each mode's median frame, the keyframes'
median over the per-frame median (the issue's goal: <= 1.2), and per stage (the
segmenter's own stages plus the temporal path's ``flow``, ``memory``, ``tracks``) the
keyframes' median against the per-frame median. The bank is the clip's cross-sequence
bank (the other two sequences, as ``moduseg bench video`` builds it).

    python -m benchmarks keyframe-cost --preset fast --sequence 0001TP --frames 40 --rounds 2
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import click
import numpy as np


@click.command("keyframe-cost")
@click.option("--preset", default="fast", show_default=True)
@click.option("--sequence", default="0001TP", show_default=True,
              help="CamVid sequence whose clip is segmented (the bank holds the others).")
@click.option("--frames", type=int, default=40, show_default=True,
              help="First N frames of the clip.")
@click.option("--rounds", type=int, default=2, show_default=True,
              help="Pairs of (off, on) runs, the order alternating.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@click.option("--data", default=None, type=click.Path())
@click.option("--out", "out_json", default=None, type=click.Path(), help="Write JSON here.")
def command(preset, sequence, frames, rounds, overrides, data, out_json):
    from moduseg.bench.clips import make_camvid_clips, read_clip
    from moduseg.bench.common import default_data_root
    from moduseg.bench.temporal import cross_sequence_bank
    from moduseg.build import assemble, build_backbone, resolve_backend
    from moduseg.settings import resolve_config
    from moduseg.temporal import TemporalConfig, TemporalSegmenter
    from moduseg.timing import StageTimer

    data = Path(data) if data else default_data_root()
    cfg = resolve_config(preset, overrides)
    be = resolve_backend("cpu")
    backbone = build_backbone(cfg, be, None)
    tmp = Path(tempfile.gettempdir())
    bank, bank_path = cross_sequence_bank(backbone, cfg, data, sequence, 12, tmp)
    seg = assemble(cfg, bank, be, None, backbone=backbone)
    clip_dir = tmp / "moduseg-camvid-clips"
    make_camvid_clips(data, clip_dir)          # the same clips as bench video
    clip, _, _ = read_clip(clip_dir / sequence, frames)
    seg(clip[0], StageTimer())                                   # warm-up
    load0 = os.getloadavg()
    rows: dict = {"off": [], "on": []}
    for r in range(rounds):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            ts = TemporalSegmenter(seg, TemporalConfig.from_config(cfg, enabled=mode == "on"))
            for f in clip:
                t = StageTimer()
                t0 = time.perf_counter()
                res = ts(f, t)
                rows[mode].append({"ms": (time.perf_counter() - t0) * 1e3,
                                   "keyframe": bool(getattr(res, "keyframe", True)),
                                   "reason": getattr(res, "reason", None),
                                   "stages": dict(t.ms)})
            ts.close()
    off = [x for x in rows["off"]]
    keys = [x for x in rows["on"] if x["keyframe"]]
    off_med = float(np.median([x["ms"] for x in off]))
    key_med = float(np.median([x["ms"] for x in keys]))
    stages = sorted({k for x in off + keys for k in x["stages"]} - {"total"})
    out = {"preset": preset, "sequence": sequence, "frames": len(clip), "rounds": rounds,
           "bank": str(bank_path), "per_frame_median_ms": round(off_med, 1),
           "keyframes": len(keys), "keyframe_median_ms": round(key_med, 1),
           "keyframe_over_per_frame": round(key_med / off_med, 3),
           "reasons": {r: sum(1 for x in keys if x["reason"] == r)
                       for r in sorted({x["reason"] for x in keys})},
           "stages_median_ms": {s: {"keyframe": round(float(np.median(
               [x["stages"].get(s, 0.0) for x in keys])), 1), "per_frame": round(float(
                   np.median([x["stages"].get(s, 0.0) for x in off])), 1)} for s in stages},
           "loadavg_start": [round(v, 2) for v in load0],
           "loadavg_end": [round(v, 2) for v in os.getloadavg()]}
    click.echo(f"{preset} on clip {sequence} ({len(clip)} frames, {rounds} alternated "
               f"round(s)): per-frame median {off_med:.1f} ms, keyframe median {key_med:.1f} "
               f"ms over {len(keys)} keyframes -> {key_med / off_med:.3f}x; load "
               f"{out['loadavg_start']} -> {out['loadavg_end']}")
    click.echo("stage             keyframe  per-frame (medians, ms; stages overlap)")
    for s, v in out["stages_median_ms"].items():
        click.echo(f"{s:16s} {v['keyframe']:9.1f} {v['per_frame']:10.1f}")
    if out_json:
        Path(out_json).write_text(json.dumps(out, indent=1))
