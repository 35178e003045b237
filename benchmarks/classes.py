"""Class-incremental few-shot and open set on CamVid, leave one sequence out.

For each held-out sequence E (the evaluation frames) the bank is built from
the other two sequences (the full bank, as ``cross_sequence.py`` builds it).
For each CamVid class c:

* **dropped**: ``bank drop`` of c from the full bank (its projection kept);
  labelled with ``unknown`` off and on: the share of c's pixels labelled
  unknown (recall), the share of the other classes' labelled pixels labelled
  unknown (false alarm), the AUROC of the deciding score (the p-value of the
  proposal that paints each pixel, ``unknown.segment_rule``; 1 where no
  proposal paints it) for c's pixels against the others', and the mIoU of the
  known classes with unknown on vs off. The operating point (``runtime.unknown``
  = q) of each held-out sequence E is chosen on the bank's own sequences, never
  on E: for each ordered pair (A, B) of the other two, a bank of A labels the
  evaluation frames of B with every class known, and q is the largest p-value
  bin keeping the false alarm of those pixels at ``--max-fa`` (``--q`` fixes
  one q for every fold instead);
* **k-shot**: c added back (``bank add`` through ``bank.edit.add_vectors``:
  the bank's configuration and stored projection) from k = 1, 5, 10 frames
  of the bank's sequences that show c (evenly spread over them; never a frame
  of E), evaluated on E: IoU_c against the full bank's IoU_c.

IoUs are from the confusion matrix pooled over the three folds. Features and
proposals come from the per-frame cache of ``cross_sequence.py`` (computed
once, reused by every class and k). Evaluation frames: every ``--stride``-th
frame of the held-out sequence (default 8: 60 of 468), to fit a shared
2-core machine; bank frames: all of the other two sequences.

    python -m benchmarks classes --out classes.json --md classes.md
    python -m benchmarks classes --classes sky,car --stride 8 --q 0.05   # a quick look
    python -m benchmarks classes --timing --bank BANK.npz   # the real 'bank add' of 5 frames
    python -m benchmarks classes --parts fewshot --ks 5 --flip --zoom 2 \
        --set runtime.few_image_balance=0.2          # k frames added as 'bank add --flip --zoom 2'
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import click
import numpy as np

from . import ablation, cross_sequence
from moduseg.bank.augment import zoom_factors
from moduseg.bank.builder import finish_vectors, image_vectors
from moduseg.runtime.calibrate import calibrate
from moduseg.bank.edit import (add_sampling, add_target, add_vectors, drop_class, fill_gaps,
                               zoom_gaps, zoom_tile_wanted)
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.owned import atomic_path
from moduseg.build import build_bank_index
from moduseg.runtime.pipeline import all_cell_labels, assign, class_prior
from moduseg.runtime.unknown import segment_rule
from moduseg.settings import parse_overrides
from moduseg.types import IGNORE, UNKNOWN, FeatureMap

KS = (1, 5, 10)
BINS = 20000            # p-value bins: the operating points sit at p ~ 0.001


class OpenSet:
    """Pooled open-set counts for one dropped class."""

    def __init__(self):
        self.pos = np.zeros(BINS, np.int64)      # p-value histogram of c's pixels
        self.neg = np.zeros(BINS, np.int64)      # ... of the other labelled pixels
        self.tp = self.p = self.fp = self.n = 0

    def add(self, label_map, gt, pvals, c):
        lab = gt != IGNORE
        pos, neg = lab & (gt == c), lab & (gt != c)
        unk = label_map == UNKNOWN
        self.tp += int((unk & pos).sum())
        self.p += int(pos.sum())
        self.fp += int((unk & neg).sum())
        self.n += int(neg.sum())
        b = np.minimum((pvals * BINS).astype(np.int64), BINS - 1)
        self.pos += np.bincount(b[pos], minlength=BINS)
        self.neg += np.bincount(b[neg], minlength=BINS)

    def auroc(self) -> float:
        return auroc(self.pos, self.neg)

    def json(self):
        return {"recall": round(100 * self.tp / max(self.p, 1), 2),
                "false_alarm": round(100 * self.fp / max(self.n, 1), 2),
                "auroc": round(self.auroc(), 4), "pixels": self.p,
                # p-value histograms (BINS bins over [0, 1]): recall / false alarm of a
                # per-pixel threshold at any quantile, offline
                "hist_pos": self.pos.tolist(), "hist_neg": self.neg.tolist()}


def auroc(pos, neg) -> float:
    """P(score of a c pixel > score of another pixel), score = 1 - p-value, from the
    p-value histograms (bins in increasing p, i.e. decreasing score; ties count 1/2)."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not pos.sum() or not neg.sum():
        return float("nan")
    neg_lower = neg.sum() - np.cumsum(neg)                 # negatives with a lower score
    return float((pos * (neg_lower + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def at_false_alarm(pos, neg, max_fa: float = 0.05) -> dict:
    """Per-pixel operating point: flag pixels whose p-value is below the largest bin edge
    keeping the false alarm at most ``max_fa``: that edge, the recall and the false alarm."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    fa = np.cumsum(neg) / max(neg.sum(), 1)
    k = int(np.searchsorted(fa, max_fa, side="right"))      # bins 0..k-1 flagged
    recall = 100 * pos[:k].sum() / max(pos.sum(), 1)
    false_alarm = 100 * neg[:k].sum() / max(neg.sum(), 1)
    return {"p_below": k / BINS, "recall": round(float(recall), 2),
            "false_alarm": round(float(false_alarm), 2)}


def raw_entries(rows, cfg, n):
    """Per bank frame: its raw (unprojected) vectors and labels, as bank build makes them."""
    out = []
    for feats, geo, label, _ in rows:
        v, l, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, n, cfg.bank)
        out.append((v, np.asarray(l, np.int32)))
    return out


def pixel_p_values(res, scores_out, rule) -> np.ndarray:
    """Each pixel's deciding score: the p-value of the proposal that paints it
    (``assign(scores_out=)``), 1 where none does (never unknown)."""
    if not scores_out:
        return np.ones(res.label_map.shape)
    scores, keep = scores_out
    of = dict(zip(np.asarray(keep).tolist(), rule.p_values(scores).tolist()))
    per_seg = np.array([of.get(s.proposal, 1.0) for s in res.segments] + [1.0])
    own = res.owners
    return per_seg[np.where(own >= 0, own, len(res.segments))]


def label_fold(eval_rows, bank, cfg, to_camvid, ev: Evaluator | None,
               open_set: OpenSet | None = None, c: int | None = None):
    """Label the held-out frames with ``bank``; confusion in CamVid's class order."""
    rt = cfg.runtime
    index = build_bank_index(bank, cfg, "cpu")
    prior = class_prior(bank, cfg.runtime.few_image_balance)
    rule = segment_rule(bank, rt.unknown, rt.top_k)
    lut = np.full(256, IGNORE, np.uint8)
    lut[:len(to_camvid)] = to_camvid
    lut[UNKNOWN] = UNKNOWN
    for (feats, geo, label, packed), sample in eval_rows:
        fmap = FeatureMap(feats.astype(np.float32), geo)
        props = ablation.proposals_of(packed, geo.image_hw)
        found, scores = [], [] if rule is not None else None
        cells = all_cell_labels(fmap, bank, index, rt, prior, evidence_out=found)
        res = assign(fmap, props, bank, index, rt, prior=prior, cell_labels=cells,
                     image=sample.image() if rt.refine_radius > 0 else None,
                     cell_scores=found[0] if found else None, scores_out=scores)
        lm = lut[res.label_map]
        if ev is not None:
            ev.add(lm, label)
        if open_set is not None:
            open_set.add(lm, label, pixel_p_values(res, scores, rule), c)


def choose_q(pairs, cfg, names, max_fa: float) -> tuple[float, dict]:
    """The operating point from the bank's own sequences: for each (bank of A, frames
    of B), every class known, the p-values of B's labelled pixels; q = the largest bin
    edge keeping their false alarm at ``max_fa`` (at most 0.5, the option's limit)."""
    probe = cfg.with_overrides(**{"runtime.unknown": 0.5})   # scores do not depend on q
    known = OpenSet()
    for bank, frames in pairs:
        label_fold(frames, bank, probe, np.arange(len(names)), None, known, -1)
    op = at_false_alarm(known.pos, known.neg, max_fa)
    return min(op["p_below"], 0.5), {"inner_false_alarm": op["false_alarm"],
                                     "inner_pixels": int(known.neg.sum())}


def added_vectors(rows, ids, pick, c, n, bank_cfg, views=None):
    """Class c's raw vectors of the picked bank frames, embedded as ``bank add`` does
    (``bank.edit.add_sampling``: dense for a few images). ``views(i)``: the extra
    views' rows of frame i (``bank add --flip``), embedded alike under its id."""
    vs, sid = [], []
    for i in pick:
        for feats, geo, label, _ in [rows[i]] + (views(i) if views else []):
            v, l, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, n,
                                    bank_cfg)
            v = v[np.asarray(l) == c]
            vs.append(v)
            sid += [ids[i]] * len(v)
    return np.concatenate(vs), np.asarray(sid, str)


def zoom_topped(sv, sid, samples, names, zoomed, c, n, bank_cfg, target):
    """Class c's added vectors topped up from the zoom tiles of its frames, as 'bank add
    --zoom' does (``bank.edit.zoom_gaps`` / ``zoom_tile_wanted`` / ``fill_gaps``)."""
    gaps = zoom_gaps(np.full(len(sv), c), [c], target)
    if not gaps:
        return sv, sid
    vs, tid = [], []
    for s, name in zip(samples, names):
        for feats, geo, label, _ in zoomed[s]:
            if not zoom_tile_wanted(label, gaps):
                continue
            v, l, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, n,
                                    bank_cfg)
            v = v[np.asarray(l) == c]
            vs.append(v)
            tid += [name] * len(v)
    if not vs:
        return sv, sid
    v, tid = np.concatenate(vs), np.asarray(tid, str)
    keep = fill_gaps(np.full(len(v), c), gaps)
    return np.concatenate([sv, v[keep]]), np.concatenate([sid, tid[keep]])


def shots(raw, c, k, areas=None):
    """Indices of k bank frames showing class c, evenly spread over those that do
    (``areas`` given, ``[frames]`` c's share of each frame: over those where c covers
    at least the median share of the frames showing it, as a user teaching c would
    pick frames that show it well)."""
    have = [i for i, (v, l) in enumerate(raw) if (l == c).any()]
    if not have:
        return []
    if areas is not None:
        a = np.asarray([areas[i] for i in have])
        have = [h for h, x in zip(have, a) if x >= np.median(a)]
    pick = np.linspace(0, len(have) - 1, min(k, len(have))).round().astype(int)
    return [have[i] for i in sorted(set(pick.tolist()))]


def run(args, partial=None):
    cfg = preset(args.preset).with_overrides(**parse_overrides(args.sets))
    names, bg, ss, folds, fold_names = cross_sequence.samples(args.dataset)
    classes = [names.index(c) for c in args.classes.split(",")] if args.classes else \
        list(range(len(names)))
    t0 = time.perf_counter()
    rows, identity = ablation.cached_frames(ss, cfg, Path(args.cache), False, args.home)
    eval_idx = [i for k in range(len(fold_names))
                for i in [j for j, f in enumerate(folds) if f == k]
                [args.offset::args.stride]]
    erows, _ = ablation.cached_frames([ss[i] for i in eval_idx], cfg, Path(args.cache), True,
                                      args.home)
    erow_of = dict(zip(eval_idx, erows))
    print(f"cache ready ({time.perf_counter() - t0:.0f} s)", flush=True)
    n = len(names)
    open_part = "openset" in args.parts
    ev = {"full_off": Evaluator(names), "full_on": Evaluator(names)}
    full_open = OpenSet()         # every class known: any unknown pixel is a false alarm
    per_c = {c: {"drop_on": Evaluator(names), "drop_off": Evaluator(names),
                 **{f"k{k}": Evaluator(names) for k in KS},
                 "open": OpenSet(), "add_s": {k: [] for k in KS}, "shots": {k: 0 for k in KS}}
             for c in classes}
    raw_all = raw_entries(rows, cfg, n)
    ids_all = [s.image_id for s in ss]

    def bank_of(seqs):
        pick = [i for i, g in enumerate(folds) if g in seqs]
        v = np.concatenate([raw_all[i][0] for i in pick])
        lab = np.concatenate([raw_all[i][1] for i in pick])
        vid = np.repeat(np.asarray([ids_all[i] for i in pick]),
                        [len(raw_all[i][1]) for i in pick])
        b = finish_vectors(v, lab, vid, names, identity, bg, cfg.bank)
        b.config = cfg.to_dict()
        b.calibration = calibrate(b.vectors, b.labels, b.image_ids, names)
        return b

    mirrored = {}

    def flipped(i):
        """The extra views of sample i (``ablation.cached_views``, made up front)."""
        return mirrored[i]

    def areas_of(train, c):
        return ([float((row[2] == c).mean()) for row in train]
                if args.selection == "area" else None)

    def frames_of(g):
        return [(erow_of[i], ss[i]) for i in eval_idx if folds[i] == g]

    data, qs = [], {}
    for f, fold in enumerate(fold_names):
        others = [g for g in range(len(fold_names)) if g != f]
        train = [r for r, g in zip(rows, folds) if g != f]
        raw = [x for x, g in zip(raw_all, folds) if g != f]
        ids = [s.image_id for s, g in zip(ss, folds) if g != f]
        where = [i for i, g in enumerate(folds) if g != f]       # fold row -> sample
        test = frames_of(f)
        tb = time.perf_counter()
        full = bank_of(others)
        full_s = time.perf_counter() - tb
        label_fold(test, full, cfg, np.arange(n), ev["full_off"])
        cfg_on = None
        if open_part:
            if args.q is not None:
                q, how = args.q, {"fixed": True}
            else:                 # chosen on the bank's own sequences, never on this one
                pairs = [(bank_of([a]), frames_of(b)) for a in others for b in others if a != b]
                q, how = choose_q(pairs, cfg, names, args.max_fa)
            qs[fold] = {"q": q, **how}
            cfg_on = cfg.with_overrides(**{"runtime.unknown": q}) if q > 0 else None
            if cfg_on is not None:
                label_fold(test, full, cfg_on, np.arange(n), ev["full_on"], full_open, -1)
            print(f"fold {fold}: runtime.unknown={q} ({how})", flush=True)
        data.append((raw, ids, full, test, train, cfg_on, where))
        print(f"fold {fold}: full bank {len(full)} vectors ({full_s:.1f} s to finish + "
              f"calibrate), {len(test)} eval frames ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    zoomed = {}
    if (args.flip or args.zoom) and "fewshot" in args.parts:   # a pass a view, cached
        need = sorted({w[i] for raw, _, _, _, train, _, w in data for c in classes
                       for k in args.ks for i in shots(raw, c, k, areas_of(train, c))})
        for on, views_of, over in ((args.flip, mirrored, {"bank.augment_flip": True}),
                                   (args.zoom, zoomed, {"bank.augment_zoom": list(args.zoom)})):
            if on:
                views_of.update(zip(need, ablation.cached_views(
                    [ss[i] for i in need], cfg.with_overrides(**over), Path(args.cache),
                    args.home)))
        print(f"extra views (flip {args.flip}, zoom {list(args.zoom)}) of {len(need)} frames "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for c in classes:
        name = names[c]
        r = per_c[c]
        for raw, ids, full, test, train, cfg_on, where in data:
            dropped = drop_class(full, name)
            to_camvid = np.array([names.index(x) for x in dropped.class_names])
            if open_part:
                label_fold(test, dropped, cfg, to_camvid, r["drop_off"])
                if cfg_on is not None:
                    label_fold(test, dropped, cfg_on, to_camvid, r["drop_on"], r["open"], c)
            areas = areas_of(train, c)
            views = ((lambda i, w=where: flipped(w[i])) if args.flip else None)
            for k in (args.ks if "fewshot" in args.parts else ()):
                pick = shots(raw, c, k, areas)
                r["shots"][k] += len(pick)
                ta = time.perf_counter()
                bcfg = add_sampling(cfg.bank, dropped, len(pick), flip=args.flip)
                sv, sid = added_vectors(train, ids, pick, c, n, bcfg, views)
                if args.zoom:
                    sv, sid = zoom_topped(sv, sid, [where[i] for i in pick],
                                          [ids[i] for i in pick], zoomed, c, n, bcfg,
                                          add_target(dropped))
                back, _ = add_vectors(dropped, sv, np.zeros(len(sv), int), sid, [name],
                                      f"{args.dataset} {k} frames")
                r["add_s"][k].append(time.perf_counter() - ta)
                to_camvid = np.array([names.index(x) for x in back.class_names])
                label_fold(test, back, cfg, to_camvid, r[f"k{k}"])
        iou = lambda e: e.scores().iou[c] * 100  # noqa: E731
        o = {k: v for k, v in r["open"].json().items() if not k.startswith("hist")}
        print(f"  {name}: open set {o}; IoU full {iou(ev['full_off']):.1f}, "
              + ", ".join(f"k={k} {iou(r[f'k{k}']):.1f}" for k in args.ks)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
        if partial is not None:
            partial(summary(args, names, eval_idx, folds, ev, per_c, [x for x in classes
                                                                       if x <= c], qs, t0,
                            full_open))
    return summary(args, names, eval_idx, folds, ev, per_c, classes, qs, t0, full_open)


def summary(args, names, eval_idx, folds, ev, per_c, classes, qs, t0, full_open):
    n = len(names)
    full_iou = ev["full_off"].scores().iou * 100
    out = {"dataset": args.dataset, "preset": args.preset, "sets": args.sets,
           "flip": args.flip, "zoom": list(args.zoom), "selection": args.selection,
           "unknown_q": qs, "max_fa": args.max_fa, "stride": args.stride,
           "offset": args.offset,
           "eval_frames": len(eval_idx), "bank_frames_per_fold": [
               int(sum(1 for g in folds if g != f)) for f in range(len(set(folds)))],
           "full_mIoU_off": round(ev["full_off"].scores().miou, 2),
           "full_mIoU_on": round(ev["full_on"].scores().miou, 2),
           "full_per_class_off": [round(float(x) * 100, 2) for x in ev["full_off"].scores().iou],
           "full_per_class_on": [round(float(x) * 100, 2) for x in ev["full_on"].scores().iou],
           "full_open_set": full_open.json(), "classes": {}}
    for c in classes:
        r = per_c[c]
        known = [i for i in range(n) if i != c]
        m_on = float(np.nanmean(r["drop_on"].scores().iou[known])) * 100
        m_off = float(np.nanmean(r["drop_off"].scores().iou[known])) * 100
        out["classes"][names[c]] = {
            "full_iou": round(float(full_iou[c]), 2),
            **{f"k{k}_iou": (round(float(r[f"k{k}"].scores().iou[c] * 100), 2)
                             if r["add_s"][k] else None) for k in KS},
            **{f"k{k}_frames": r["shots"][k] for k in KS},
            **{f"k{k}_add_ms": round(1e3 * float(np.median(r["add_s"][k])), 1)
               for k in KS if r["add_s"][k]},
            # the other classes in the k-shot banks (the added vectors must not hurt them)
            **{f"k{k}_others_mIoU": round(float(np.nanmean(r[f"k{k}"].scores().iou[known]))
                                          * 100, 2) for k in KS if r["add_s"][k]},
            "full_others_mIoU": round(float(np.nanmean(full_iou[known])), 2),
            "open_set": r["open"].json(),
            "known_mIoU_dropped_on": round(m_on, 2),
            "known_mIoU_dropped_off": round(m_off, 2)}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _iou(x) -> str:
    """An IoU cell: one decimal, a dash for a k that was not run (``--ks``)."""
    return "-" if x is None else f"{x:.1f}"


def markdown(r) -> str:
    """The tables of docs/results.md from a result: few-shot (when it ran) and open set
    (when it ran; AUROC and the oracle operating point recomputed from the stored
    p-value histograms)."""
    cs = r["classes"]
    lines = []
    few = [x for x in cs.values() if "k5_add_ms" in x]
    if few:
        lines += ["| class c | full-bank IoU_c | k=1 | k=5 | k=10 | k=5 / full |",
                  "|---" * 6 + "|"]
        ratios = []
        for name, x in cs.items():
            ratio = (x["k5_iou"] / x["full_iou"] if x["full_iou"] > 0 and x["k5_iou"] is not None
                     else float("nan"))
            ratios.append(ratio)
            lines.append(f"| {name} | {x['full_iou']:.1f} | {_iou(x['k1_iou'])} | "
                         f"{_iou(x['k5_iou'])} | {_iou(x['k10_iou'])} | {100 * ratio:.0f} % |")

        def mean(k):
            got = [x[k] for x in cs.values() if x.get(k) is not None]
            return np.nanmean(got) if got else None
        lines.append(f"| **mean** | {mean('full_iou'):.1f} | {_iou(mean('k1_iou'))} | "
                     f"{_iou(mean('k5_iou'))} | {_iou(mean('k10_iou'))} | "
                     f"**{100 * np.nanmean(ratios):.0f} %** |")
        lines.append("")
        others = [(x["k5_others_mIoU"], x["full_others_mIoU"]) for x in few]
        o5, of = np.mean(others, axis=0)
        lines.append(f"The other classes in the k=5 banks: mIoU {o5:.1f} against {of:.1f} in "
                     f"the full bank (mean over the dropped classes; worst "
                     f"{min(a - b for a, b in others):+.1f}). `bank add` from cached features "
                     f"per class (patch selection of the k frames + bookkeeping + "
                     f"calibration): median "
                     f"{np.median([x['k5_add_ms'] for x in few]):.0f} ms for k=5.")
        lines.append("")
    opened = {k: x for k, x in cs.items() if x["open_set"]["pixels"] > 0}
    if opened:
        lines += ["| class c (dropped) | unknown recall | false alarm | AUROC (segment "
                  "score) | recall at <= 5 % false alarm (oracle) | known-class mIoU, "
                  "unknown off | on | on - off |", "|---" * 8 + "|"]
        rows = []
        for name, x in opened.items():
            o = x["open_set"]
            au = auroc(o["hist_pos"], o["hist_neg"])
            op = at_false_alarm(o["hist_pos"], o["hist_neg"])
            d = x["known_mIoU_dropped_on"] - x["known_mIoU_dropped_off"]
            rows.append((o["recall"], o["false_alarm"], au, op["recall"], op["false_alarm"],
                         x["known_mIoU_dropped_off"], x["known_mIoU_dropped_on"], d))
            lines.append(f"| {name} | {o['recall']:.1f} % | {o['false_alarm']:.1f} % | "
                         f"{au:.3f} | {op['recall']:.1f} % ({op['false_alarm']:.1f} %) | "
                         f"{x['known_mIoU_dropped_off']:.1f} | "
                         f"{x['known_mIoU_dropped_on']:.1f} | {d:+.1f} |")
        m = np.nanmean(np.asarray(rows, np.float64), axis=0)
        lines.append(f"| **mean** | **{m[0]:.1f} %** | **{m[1]:.1f} %** | {m[2]:.3f} | "
                     f"{m[3]:.1f} % ({m[4]:.1f} %) | {m[5]:.1f} | {m[6]:.1f} | "
                     f"**{m[7]:+.1f}** |")
        lines.append("")
        qs = r.get("unknown_q") or {}
        if isinstance(qs, dict) and qs:
            lines.append("Operating point per held-out sequence (`runtime.unknown`): " + ", ".join(
                f"{k} {v['q']:.4f}" + (f" (false alarm {v['inner_false_alarm']:.1f} % on the "
                                       f"bank's own sequences)" if "inner_false_alarm" in v
                                       else "") for k, v in qs.items()) + ".")
            lines.append("")
        fo = r.get("full_open_set")
        if fo and sum(fo.get("hist_neg", [])) > 0:
            lines.append(f"All classes known (full bank): mIoU {r['full_mIoU_off']:.1f} with "
                         f"unknown off, {r['full_mIoU_on']:.1f} on "
                         f"({r['full_mIoU_on'] - r['full_mIoU_off']:+.1f}); false alarm with "
                         f"every class known {fo['false_alarm']:.1f} %.")
            lines.append("")
    lines.append(f"({r['eval_frames']} evaluation frames, {r['seconds']:.0f} s.)")
    return "\n".join(lines) + "\n"


def time_cli_add(args):
    """The real ``moduseg bank add`` of 5 CamVid frames into a saved full bank."""
    import subprocess
    import tempfile

    data = cross_sequence.DATA / "camvid"
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        lst = [ln for ln in (data / "val.txt").read_text().splitlines() if ln.strip()][:5]
        (d / "five.txt").write_text("\n".join(lst) + "\n")
        for sub in ("val", "valannot"):
            (d / sub).symlink_to(data / sub)
        bank = Path(args.bank) if args.bank else None
        if bank is None:
            raise SystemExit("--timing needs --bank BANK.npz (a bank built with the preset)")
        cmd = [sys.executable, "-m", "moduseg.cli", "bank", "add", str(bank), "--dataset",
               "camvid", "--root", str(d), "--split", "five", "--out", str(d / "out.npz"),
               "--offline"] + (["--home", args.home] if args.home else []) \
            + (["--flip"] if args.flip else []) + [f"--zoom={z:g}" for z in args.zoom]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t
        print(p.stdout.strip(), p.stderr.strip()[-400:])
        return {"bank_add_5_frames_s": round(secs, 1), "ok": p.returncode == 0,
                "flip": args.flip, "zoom": list(args.zoom)}


@click.command("classes")
@click.option("--preset", "preset_name", default="default", show_default=True)
@click.option("--set", "sets", multiple=True, help="A setting as for 'moduseg bank build --set'.")
@click.option("--q", type=float, default=None,
              help="runtime.unknown of the 'on' runs, the same for every fold (default: "
                   "chosen per fold on the bank's own sequences, see --max-fa).")
@click.option("--max-fa", type=float, default=0.05, show_default=True,
              help="The false alarm the chosen operating point keeps on the bank's own "
                   "sequences.")
@click.option("--dataset", type=click.Choice(["camvid", "coco128"]), default="camvid",
              show_default=True,
              help="camvid: leave one sequence out; coco128: 4 folds (bank from 96 images, 32 "
                   "evaluated), as 'cross-sequence --dataset coco128'.")
@click.option("--classes", default=None,
              help="Comma-separated classes (default: all of CamVid's; coco128: name a few).")
@click.option("--stride", type=int, default=8, show_default=True,
              help="Evaluate every N-th frame of the held-out sequence.")
@click.option("--offset", type=int, default=0, show_default=True,
              help="Start the every-N-th evaluation frames at this one (--stride 8 --offset 4: "
                   "60 frames disjoint from --stride 16's, to confirm a setting screened "
                   "there).")
@click.option("--cache", type=click.Path(path_type=Path), default=ablation.CACHE,
              show_default=True, help="Per-frame feature and proposal cache.")
@click.option("--home", default=None, help="Model home.")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON result.")
@click.option("--md", type=click.Path(path_type=Path), default=None, help="Markdown table.")
@click.option("--parts", default="fewshot,openset", show_default=True,
              help="Which parts to run: fewshot (drop + add back from k frames), openset "
                   "(unknown with the class dropped), or both.")
@click.option("--ks", default="1,5,10", show_default=True,
              help="Few-shot: the numbers of frames to add back (comma-separated, of 1, 5, "
                   "10).")
@click.option("--flip", is_flag=True,
              help="Few-shot: add each frame mirrored too, as 'bank add --flip' does (one "
                   "backbone pass a frame, cached per view).")
@click.option("--zoom", "zoom", multiple=True, metavar="F",
              help="Few-shot: add each frame zoomed in by F too, as 'bank add --zoom F' does "
                   "(ceil(F)^2 crops a frame, one backbone pass each, cached per view); "
                   "--timing: pass it to the timed 'bank add'.")
@click.option("--selection", type=click.Choice(["even", "area"]), default="even",
              show_default=True,
              help="Few-shot: the k frames evenly spread over the bank frames showing c "
                   "(even), or over those where c covers at least the median share of "
                   "those frames (area: frames a user would pick to teach c).")
@click.option("--timing", is_flag=True, help="Only time the real 'moduseg bank add' of 5 frames.")
@click.option("--bank", default=None, help="--timing: the bank to add to.")
@click.option("--table", "table_of", type=click.Path(path_type=Path), default=None,
              help="Only print the table of a saved --out JSON.")
def command(preset_name, dataset, sets, q, max_fa, classes, stride, offset, cache, home, threads,
            out, md, parts, ks, flip, zoom, selection, timing, bank, table_of):
    """Class-incremental few-shot (drop a class, add it back from k frames) and open set."""
    from types import SimpleNamespace

    from moduseg.bench.stats import set_threads
    set_threads(threads)
    if dataset == "coco128" and not classes:
        raise click.BadParameter("coco128 has 80 classes: name a few (e.g. person,car)",
                                 param_hint="--classes")
    args = SimpleNamespace(preset=preset_name, dataset=dataset, sets=list(sets), q=q,
                           max_fa=max_fa,
                           classes=classes,
                           stride=stride, offset=offset, cache=cache, home=home, bank=bank,
                           flip=flip, zoom=zoom_factors(zoom),
                           selection=selection,
                           ks=tuple(int(k) for k in ks.split(",") if k.strip()),
                           parts=[p.strip() for p in parts.split(",") if p.strip()])
    if not args.ks or set(args.ks) - set(KS):
        raise click.BadParameter(f"choose among {', '.join(map(str, KS))}", param_hint="--ks")
    bad = set(args.parts) - {"fewshot", "openset"}
    if bad:
        raise click.BadParameter(f"unknown part {sorted(bad)[0]!r}; choose fewshot, openset",
                                 param_hint="--parts")
    if timing:
        click.echo(json.dumps(time_cli_add(args)))
        return
    if table_of:
        click.echo(markdown(json.loads(Path(table_of).read_text())))
        return
    def save(res):
        if out:
            with atomic_path(Path(out)) as tmp:
                tmp.write_text(json.dumps(res, indent=1))
    r = run(args, save)
    text = markdown(r)
    click.echo(text)
    if out:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(json.dumps(r, indent=1))
    if md:
        with atomic_path(Path(md)) as tmp:
            tmp.write_text(text)
