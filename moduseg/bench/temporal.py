"""The temporal path against per-frame segmentation, in one run.

For each input (the shared videos and moving-camera CamVid clips) the
frames are decoded once, then segmented with the temporal path on and off,
the order alternating from input to input. Reported per input and mode:

1. temporal consistency (``temporal.consistency``: DIS medium, fb <= 1 px,
   mean / median / p10 over pairs, shot cuts left out);
2. mIoU against the clips' per-frame ground truth, with a bank built from
   the *other* CamVid sequences (the cross-sequence rule);
3. amortised ms per frame (the whole clip's inference time over its frame
   count, keyframes included), p50 / p95, the keyframe rate and the
   keyframes' median cost over the per-frame median.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..timing import StageTimer
from .common import progress


def decode(spec: str, max_frames: int) -> list[np.ndarray]:
    from ..app.sources import iter_frames
    return [f.image for f in iter_frames(spec, max_frames)]


def detect_cuts(frames: list[np.ndarray], cfg=None) -> list[int]:
    """Indices of frames that start a new shot, by the keyframe policy's cut test."""
    from ..temporal.flow import fb_valid, flow_pair, gray, to_map
    from ..temporal.keyframes import FrameChange, histogram_distance, is_cut, \
        photometric_residual
    from ..temporal.segmenter import TemporalConfig
    cfg = cfg or TemporalConfig()
    cuts, prev = [], None
    for i, f in enumerate(frames):
        g = gray(f, cfg.flow_width)
        if prev is not None and prev.shape == g.shape:
            bwd, fwd = flow_pair(prev, g, cfg.flow_preset)
            r = photometric_residual(g, prev, to_map(bwd))
            ch = FrameChange(r, histogram_distance(prev, g),
                             float(fb_valid(bwd, fwd, cfg.fb_max_err).mean()), 0.0, r)
            if is_cut(ch, cfg.policy):
                cuts.append(i)
        prev = g
    return cuts


def run_mode(seg, frames, enabled: bool, tcfg=None, bar=None) -> dict:
    """Segment ``frames`` in order; per-frame ms, label maps, keyframe flags and reasons
    (a vote frame: not a keyframe, reason "vote")."""
    from ..temporal.segmenter import TemporalConfig, TemporalSegmenter
    from dataclasses import replace
    ts = TemporalSegmenter(seg, replace(tcfg or TemporalConfig.from_config(seg),
                                        enabled=enabled))
    ms, labels, keys, reasons = [], [], [], []
    for f in frames:
        t0 = time.perf_counter()
        r = ts(f, StageTimer())
        ms.append((time.perf_counter() - t0) * 1e3)
        labels.append(r.label_map)
        keys.append(bool(getattr(r, "keyframe", True)))
        reasons.append(getattr(r, "reason", None))
        if bar is not None:
            bar.update(1)
    return {"ms": ms, "labels": labels, "keyframes": keys, "reasons": reasons}


def summarize_mode(run: dict, off_median: float | None = None) -> dict:
    ms = np.asarray(run["ms"])
    keys = np.asarray(run["keyframes"])
    out = {"frames": int(len(ms)), "amortised_ms": round(float(ms.mean()), 1),
           "p50_ms": round(float(np.percentile(ms, 50)), 1),
           "p95_ms": round(float(np.percentile(ms, 95)), 1),
           "keyframes": int(keys.sum()), "keyframe_rate": round(float(keys.mean()), 3)}
    from ..temporal.segmenter import VOTE
    votes = np.asarray([r == VOTE and not k for r, k in zip(run["reasons"], keys)], bool)
    reasons: dict = {}
    for r, k in zip(run["reasons"], keys):
        if r is not None and k:
            reasons[r] = reasons.get(r, 0) + 1
    if reasons:
        out["keyframe_reasons"] = reasons
    if votes.any():
        out["vote_frames"] = int(votes.sum())
        out["vote_median_ms"] = round(float(np.median(ms[votes])), 1)
    propagated = ~keys & ~votes
    if keys.any() and propagated.any():
        out["keyframe_median_ms"] = round(float(np.median(ms[keys])), 1)
        out["propagated_median_ms"] = round(float(np.median(ms[propagated])), 1)
        if off_median:
            out["keyframe_over_off"] = round(float(np.median(ms[keys])) / off_median, 3)
    return out


def compare_input(seg, frames, gts=None, cuts=(), tcfg=None, off_first: bool = False,
                  bar=None) -> dict:
    """On and off (in the given order) on one input: cost, TC and, with ``gts``, mIoU."""
    from ..evaluate import Evaluator
    from ..temporal.consistency import clip_consistency
    order = ("off", "on") if off_first else ("on", "off")
    runs = {m: run_mode(seg, frames, m == "on", tcfg, bar) for m in order}
    off_med = float(np.median(runs["off"]["ms"]))
    res = {"order": list(order), "cuts": list(cuts)}
    for m in ("off", "on"):
        s = summarize_mode(runs[m], off_med if m == "on" else None)
        if m == "off":
            s.pop("keyframes"), s.pop("keyframe_rate")
        s["tc"] = clip_consistency(frames, runs[m]["labels"], cuts)
        if gts is not None:
            ev = Evaluator(seg.bank.class_names)
            for lab, gt in zip(runs[m]["labels"], gts):
                ev.add(lab, gt)
            sc = ev.scores()
            s["miou"], s["pixel_accuracy"] = round(sc.miou, 2), round(sc.pixel_acc * 100, 2)
        res[m] = s
    res["amortised_on_over_off"] = round(res["on"]["amortised_ms"] / res["off"]["amortised_ms"],
                                         3)
    return res


def cross_sequence_bank(backbone, cfg, data_root: Path, held_out: str, per_sequence: int,
                        cache: Path):
    """A small bank from the CamVid sequences other than ``held_out`` (``per_sequence``
    stills of each, evenly spaced), cached on disk."""
    from ..bank.builder import build_bank
    from ..bank.datasets import Dataset
    from ..bank.store import load_bank, save_bank
    from ..errors import BankError, InputError
    from .clips import SEQUENCES, camvid_sequence_samples
    import hashlib
    key = hashlib.sha256((str(cfg.bank.__dict__) + str(cfg.backbone.__dict__)).encode())
    path = cache / f"xseq-{held_out}-{per_sequence}-{backbone.identity.weights_sha256[:8]}-" \
                   f"{key.hexdigest()[:10]}.npz"
    if path.is_file():
        try:
            return load_bank(path, expect=backbone.identity), path
        except (BankError, InputError):
            pass
    samples = []
    for seq in SEQUENCES:
        if seq == held_out:
            continue
        ss = camvid_sequence_samples(data_root, seq)
        idx = np.linspace(0, len(ss) - 1, min(per_sequence, len(ss))).round().astype(int)
        samples += [ss[i] for i in sorted(set(idx.tolist()))]
    from ..bank.datasets import CAMVID_CLASSES
    ds = Dataset(f"camvid-without-{held_out}", list(CAMVID_CLASSES), None, samples)
    bank = build_bank(ds, backbone, cfg.bank, config_record=cfg.to_dict())
    save_bank(bank, path)
    return bank, path


def run_temporal(seg_factory, default_seg, videos: dict, data_root: Path, frames: int,
                 clips: bool = True, clip_dir: Path | None = None, n_shots: int = 2,
                 shot_frames=(30, 40), bank_per_sequence: int = 12, tcfg=None,
                 show_progress: bool = True, sequences=None) -> dict:
    """The three measurements of the temporal path, on and off alternated.

    ``videos``: name -> path (segmented with ``default_seg``, the run's bank; their
    first ``frames`` frames, none when ``frames`` is 0);
    ``seg_factory(bank)`` gives a segmenter with another bank (the clips'
    cross-sequence banks).
    """
    from ..temporal.segmenter import TemporalConfig
    from .clips import SEQUENCES, make_camvid_clips, read_clip
    # the run's configuration (--preset / --set temporal.*) for every input
    tcfg = tcfg or TemporalConfig.from_config(default_seg)
    out: dict = {"frames_per_video": frames, "inputs": {}}
    load0 = os.getloadavg()
    work = []
    for name, path in (videos.items() if frames > 0 else ()):
        fr = decode(str(path), frames)
        work.append((name, default_seg, fr, None, detect_cuts(fr, tcfg)))
    if clips:
        clip_dir = Path(clip_dir or Path(tempfile.gettempdir()) / "moduseg-camvid-clips")
        seqs = list(sequences or SEQUENCES)
        made = make_camvid_clips(data_root, clip_dir, seqs, n_shots, 0, *shot_frames)
        cache = Path(tempfile.gettempdir())
        backbone = default_seg.backbone
        for seq in seqs:
            bank, bpath = cross_sequence_bank(backbone, default_seg.full_config, data_root,
                                              seq, bank_per_sequence, cache)
            fr, gts, starts = read_clip(clip_dir / seq)
            out.setdefault("clip_banks", {})[seq] = {
                "path": str(bpath), "vectors": len(bank),
                "stills": f"{bank_per_sequence} per other sequence",
                "clip_frames": made[seq]["frames"], "shot_starts": starts}
            work.append((f"camvid-clip-{seq}", seg_factory(bank), fr, gts,
                         [s for s in starts if s > 0]))
    bar = progress(sum(2 * len(w[2]) for w in work), "temporal on/off", show_progress)
    for k, (name, seg, fr, gts, cuts) in enumerate(work):
        seg(fr[0], StageTimer())                      # warm-up, not counted
        out["inputs"][name] = compare_input(seg, fr, gts, cuts, tcfg, off_first=bool(k % 2),
                                            bar=bar)
    bar.close()
    out["loadavg_start"] = [round(x, 2) for x in load0]
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out["temporal_config"] = tcfg.to_dict()
    return out


def temporal_md(t: dict) -> list[str]:
    """The on/off table of ``run_temporal``'s result."""
    out = ["## Temporal path: on vs off (alternated in one run)", "",
           f"Load average at start / end: {t.get('loadavg_start')} / {t.get('loadavg_end')}.",
           "", "| input | mode | amortised ms | on/off | p50 | p95 | keyframes | key/off | "
           "TC mean | TC median | TC p10 | mIoU |", "|---|---|---|---|---|---|---|---|---|---|"
           "---|---|"]
    for name, r in t.get("inputs", {}).items():
        for m in ("off", "on"):
            s = r[m]
            out.append(
                f"| {name} | {m} | {s['amortised_ms']} | "
                f"{r['amortised_on_over_off'] if m == 'on' else ''} | {s['p50_ms']} | "
                f"{s['p95_ms']} | {s.get('keyframe_rate', '')} | "
                f"{s.get('keyframe_over_off', '')} | {s['tc']['mean']} | {s['tc']['median']} | "
                f"{s['tc']['p10']} | {s.get('miou', '')} |")
    out.append("")
    return out
