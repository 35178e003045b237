"""Where the cross-sequence errors are: confusion matrices and a mask-label oracle.

For each leave-one-sequence-out fold of ``cross-sequence`` (same cache,
same banks), prints the row-normalised confusion matrix (row = true class,
% of its pixels per predicted class) and, with ``--oracle``, the mIoU when
every kept SAM proposal is painted with the majority ground-truth class
under it instead of its retrieved class (pixels no proposal claims keep the
preset's patch labels, then the preset's guided refinement): the ceiling of
better labelling with the same proposals. ``--gt-masks only|added`` is the other
ceiling: the ground-truth regions as proposals (alone, or beside the SAM ones),
labelled by the preset's own retrieval: what better masks could give with the
labelling as it is.

    python -m benchmarks loso-diagnostics                          # default preset, all folds
    python -m benchmarks loso-diagnostics --fold 0001TP --oracle
    python -m benchmarks loso-diagnostics --preset fast --set runtime.frame_prototypes=0.0
    python -m benchmarks loso-diagnostics --gt-masks only      # perfect masks, same labelling
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import cv2
import numpy as np

from . import ablation
from . import cross_sequence as cs
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.owned import atomic_path
from moduseg.build import build_bank_index
from moduseg.runtime.masks import PackedMasks, class_nms, rasterize
from moduseg.runtime.pipeline import all_cell_labels, assign, class_prior, fill_unassigned
from moduseg.runtime.refine import guided_label_refine
from moduseg.settings import parse_overrides
from moduseg.types import IGNORE, FeatureMap, Proposals


def oracle_label_map(row, sample, bank, index, cfg, prior, n_classes: int) -> np.ndarray:
    """Kept proposals painted with their ground-truth majority class, the rest as the preset."""
    feats, geo, label, packed = row
    props = ablation.proposals_of(packed, geo.image_hw)
    rt = cfg.runtime
    (H, W), (mh, mw) = props.image_hw, props.mask_hw
    pk = PackedMasks.pack(props.masks)
    keep = np.flatnonzero((props.scores >= rt.min_objectness)
                          & (pk.areas * (H * W / float(mh * mw)) >= rt.min_area))
    small = cv2.resize(label, (mw, mh), interpolation=cv2.INTER_NEAREST)
    labels = np.full(len(keep), -1, np.int32)
    for j, i in enumerate(keep):
        v = small[props.masks[i]]
        v = v[v < n_classes]
        if len(v):
            labels[j] = np.bincount(v, minlength=n_classes).argmax()
    pk = pk.take(keep)
    order = np.flatnonzero(labels >= 0)
    order = order[class_nms(pk.take(order), labels[order], np.ones(len(order), np.float32),
                            rt.nms_iou)]
    lm, _ = rasterize(pk, labels, order, fill=-1)
    lm = cv2.resize(lm, (W, H), interpolation=cv2.INTER_NEAREST) if lm.shape != (H, W) else lm
    fmap = FeatureMap(feats.astype(np.float32), geo)
    cells = all_cell_labels(fmap, bank, index, rt, prior)
    lm = fill_unassigned(lm, fmap, bank, index, rt, prior, cells)
    if rt.refine_radius > 0:
        lm = guided_label_refine(np.where(lm < 0, IGNORE, lm).astype(np.uint8), sample.image(),
                                 rt.refine_radius, rt.refine_eps)
    return lm


def ground_truth_proposals(label: np.ndarray, n_classes: int, image_hw) -> Proposals:
    """Every connected region (8-connected) of each class of ``label`` as one proposal of
    objectness 1, at full resolution (void is no class, so no proposal)."""
    masks = []
    for c in np.unique(label):
        if c >= n_classes:
            continue
        n, comp = cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)
        masks += [comp == j for j in range(1, n)]
    stack = np.stack(masks) if masks else np.zeros((0,) + label.shape, bool)
    return Proposals(stack, np.ones(len(stack), np.float32), tuple(image_hw))


def gt_masks_label_map(row, sample, bank, index, cfg, prior, n_classes: int,
                       mode: str) -> np.ndarray:
    """The preset's labelling (retrieval, vote, paint, fill, refinement) of perfect masks:
    the ground-truth regions as the only proposals (``only``) or added to the kept SAM
    proposals (``added``): the ceiling of better masks with the same labelling."""
    feats, geo, label, packed = row
    gt = ground_truth_proposals(label, n_classes, geo.image_hw)
    props = gt
    if mode == "added":
        sam = ablation.proposals_of(packed, geo.image_hw)
        (H, W), (mh, mw) = gt.image_hw, sam.mask_hw
        up = np.stack([cv2.resize(m.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
                       for m in sam.masks]).astype(bool) if len(sam) else gt.masks[:0]
        props = Proposals(np.concatenate([up, gt.masks]),
                          np.concatenate([sam.scores, gt.scores]), gt.image_hw)
    fmap = FeatureMap(feats.astype(np.float32), geo)
    rt = cfg.runtime
    return assign(fmap, props, bank, index, rt, prior=prior,
                  image=sample.image() if rt.refine_radius > 0 else None).label_map


def confusion_text(names, cm: np.ndarray) -> str:
    pct = 100.0 * cm / np.maximum(cm.sum(1, keepdims=True), 1)
    w = max(len(n) for n in names)
    lines = [" " * (w + 2) + " ".join(f"{n[:6]:>6}" for n in names)]
    lines += [f"{n:>{w}}  " + " ".join(f"{v:6.1f}" for v in row) for n, row in zip(names, pct)]
    return "\n".join(lines)


@click.command("loso-diagnostics")
@click.option("--preset", "preset_name", default="default", show_default=True)
@click.option("--set", "sets", multiple=True, help="A setting as for 'moduseg bank build --set' (repeatable).")
@click.option("--fold", "folds_wanted", multiple=True, type=click.Choice(list(cs.SEQUENCES)),
              help="Held-out sequence(s) (repeatable; default: all three).")
@click.option("--oracle", is_flag=True, help="Also the mask-label oracle.")
@click.option("--gt-masks", type=click.Choice(["only", "added"]), default=None,
              help="Also label perfect masks (the ground-truth regions, alone or added to the "
                   "SAM proposals) with the preset's retrieval: the ceiling of better masks.")
@click.option("--cache", type=click.Path(path_type=Path), default=ablation.CACHE, show_default=True,
              help="Per-frame feature and proposal cache.")
@click.option("--home", default=None, help="Model home.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the matrices and scores as JSON here.")
def command(preset_name, sets, folds_wanted, oracle, gt_masks, cache, home, out):
    """Where the cross-sequence errors are: confusion matrices and the mask-label oracle."""
    if not (cs.DATA / "camvid").is_dir():
        raise click.ClickException(f"CamVid not found under {cs.DATA}")
    sets = list(sets)
    cfg = preset(preset_name).with_overrides(**parse_overrides(sets))
    if (oracle or gt_masks) and not cfg.needs_proposer:
        raise click.ClickException(f"--oracle and --gt-masks need a preset with proposals; "
                                   f"{preset_name!r} has none")
    names, bg, ss, folds, fold_names = cs.samples("camvid")
    rows, identity = ablation.cached_frames(ss, cfg, Path(cache), cfg.needs_proposer, home)
    result = {"preset": preset_name, "sets": sets, "folds": []}
    for k, fold in enumerate(fold_names):
        if folds_wanted and fold not in folds_wanted:
            continue
        train = [r for r, f in zip(rows, folds) if f != k]
        test = [(r, s) for r, s, f in zip(rows, ss, folds) if f == k]
        bank, _ = ablation.bank_from_rows(train, cfg, names, bg, identity)
        ev, _ = ablation.label_rows(test, bank, cfg)
        rec = {"held_out": fold, "mIoU": round(ev.scores().miou, 2), "confusion": ev.cm.tolist()}
        click.echo(f"held out {fold}: mIoU {rec['mIoU']:.2f}; % of each true class (rows) "
                   f"per predicted class:\n{confusion_text(names, ev.cm)}")
        if oracle:
            index, prior = build_bank_index(bank, cfg, "cpu"), class_prior(bank, cfg.runtime.few_image_balance)
            oev = Evaluator(names)
            for r, s in test:
                oev.add(oracle_label_map(r, s, bank, index, cfg, prior, len(names)), r[2])
            rec["oracle_mIoU"] = round(oev.scores().miou, 2)
            rec["oracle_per_class_iou"] = {n: round(100 * v, 1)
                                           for n, v in zip(names, oev.scores().iou)}
            click.echo(f"  mask-label oracle: mIoU {rec['oracle_mIoU']:.2f} "
                       f"{rec['oracle_per_class_iou']}")
        if gt_masks:
            index, prior = build_bank_index(bank, cfg, "cpu"), class_prior(bank, cfg.runtime.few_image_balance)
            gev = Evaluator(names)
            for r, s in test:
                gev.add(gt_masks_label_map(r, s, bank, index, cfg, prior, len(names), gt_masks),
                        r[2])
            rec["gt_masks_mIoU"] = round(gev.scores().miou, 2)
            rec["gt_masks_per_class_iou"] = {n: round(100 * v, 1)
                                             for n, v in zip(names, gev.scores().iou)}
            click.echo(f"  ground-truth masks ({gt_masks}) labelled by retrieval: mIoU "
                       f"{rec['gt_masks_mIoU']:.2f} {rec['gt_masks_per_class_iou']}")
        result["folds"].append(rec)
    if oracle and result["folds"]:
        click.echo(f"oracle mean of fold mIoUs "
                   f"{np.mean([f['oracle_mIoU'] for f in result['folds']]):.2f}")
    if gt_masks and result["folds"]:
        click.echo(f"ground-truth masks ({gt_masks}) mean of fold mIoUs "
                   f"{np.mean([f['gt_masks_mIoU'] for f in result['folds']]):.2f}")
    if out:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
