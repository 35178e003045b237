"""Confusion-matrix mIoU, and ``moduseg eval``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from .cli_options import backend_option, proposer_option
from .errors import InputError
from .settings import preset_option
from .text import printable
from .types import IGNORE


def confusion(pred: np.ndarray, gt: np.ndarray, n_classes: int,
              ignore: int = IGNORE, name: str = "") -> np.ndarray:
    """``[C, C]`` counts, rows = ground truth, columns = prediction.

    Ground-truth ``ignore`` pixels are skipped; a ground-truth value outside the
    classes is an error (skipping it silently scored a wrong class list as mIoU
    100); a prediction of ``ignore`` (or any out-of-range value) on a labelled
    pixel counts as a miss for the ground-truth class (it lands in no column).
    """
    where = f" of {printable(name)}" if name else ""
    if pred.shape != gt.shape:
        raise InputError(f"prediction{where} {pred.shape} and ground truth {gt.shape} differ "
                         f"in size")
    g, p = gt.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64)
    valid = g != ignore
    bad = np.unique(g[valid & ((g < 0) | (g >= n_classes))])
    if bad.size:
        shown = ", ".join(map(str, bad[:8].tolist())) + (", ..." if bad.size > 8 else "")
        raise InputError(f"ground truth{where} holds class values {shown} outside the "
                         f"{n_classes} classes (0..{n_classes - 1}, {ignore} = ignore); fix the "
                         f"label map or the class list (--classes)")
    g, p = g[valid], p[valid]
    hit = (p >= 0) & (p < n_classes)
    cm = np.bincount(g[hit] * n_classes + p[hit], minlength=n_classes ** 2)
    cm = cm.reshape(n_classes, n_classes)
    missed = np.bincount(g[~hit], minlength=n_classes)
    return cm, missed


@dataclass
class Scores:
    class_names: list[str]
    iou: np.ndarray          # NaN for classes absent from both gt and prediction
    pixel_acc: float
    images: int

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) * 100 if np.isfinite(self.iou).any() else 0.0

    def to_json(self) -> dict:
        return {"mIoU": round(self.miou, 2), "pixel_accuracy": round(self.pixel_acc * 100, 2),
                "images": self.images,
                "per_class_iou": {n: (None if np.isnan(v) else round(float(v) * 100, 2))
                                  for n, v in zip(self.class_names, self.iou)}}

    def table(self) -> str:
        rows = [f"{'class':<16}{'IoU':>8}"]
        rows += [f"{n:<16}{('   n/a' if np.isnan(v) else f'{v * 100:8.2f}'):>8}"
                 for n, v in zip(self.class_names, self.iou)]
        rows.append(f"{'mIoU':<16}{self.miou:8.2f}")
        rows.append(f"{'pixel acc':<16}{self.pixel_acc * 100:8.2f}")
        return "\n".join(rows)


class Evaluator:
    """Accumulate a confusion matrix over images."""

    def __init__(self, class_names: list[str]):
        self.class_names = list(class_names)
        n = len(class_names)
        self.cm = np.zeros((n, n), np.int64)
        self.missed = np.zeros(n, np.int64)
        self.images = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, name: str = "") -> None:
        cm, missed = confusion(pred, gt, len(self.class_names), name=name)
        self.cm += cm
        self.missed += missed
        self.images += 1

    def scores(self) -> Scores:
        tp = np.diag(self.cm).astype(np.float64)
        gt_total = self.cm.sum(1) + self.missed
        union = gt_total + self.cm.sum(0) - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        total = gt_total.sum()
        return Scores(self.class_names, iou, float(tp.sum() / total) if total else 0.0,
                      self.images)


def gt_proposals(label: np.ndarray, mode: str = "classes"):
    """Ground-truth regions as proposals (objectness 1): the semantic-assignment oracle."""
    import cv2

    from .types import Proposals
    masks = []
    for c in np.unique(label):
        if c == IGNORE:
            continue
        m = label == c
        if mode == "components":
            n, cc = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
            masks += [cc == i for i in range(1, n)]
        else:
            masks.append(m)
    if not masks:
        return Proposals.empty(label.shape)
    return Proposals(np.stack(masks), np.ones(len(masks), np.float32), label.shape)


@click.command("eval")
@click.option("--dataset", "layout", required=True,
              type=click.Choice(["camvid", "voc", "yolo", "coco", "folder"]),
              help="Layout of the ground-truth dataset.")
@click.option("--root", required=True, type=click.Path(), help="Dataset root folder.")
@click.option("--split", default=None, help="Split name (camvid: train/val).")
@click.option("--labels", default=None, type=click.Path(),
              help="coco: annotation JSON; folder: ground-truth label folder.")
@click.option("--classes", default=None, type=click.Path(), help="Class-name file (folder).")
@click.option("--pred", default=None, type=click.Path(),
              help="Folder of predicted label PNGs named <image id>.png.")
@click.option("--bank", default=None, type=click.Path(),
              help="Segment the dataset with this bank (default models) and score it.")
@preset_option("Configuration preset (default: the bank's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. --set runtime.top_k=10.")
@click.option("--proposals", "proposal_mode", default="model",
              type=click.Choice(["model", "gt-classes", "gt-components"]),
              help="Diagnostics: replace the proposer by ground-truth regions.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Only the first N images (N >= 1).")
@click.option("--home", default=None, type=click.Path(), help="Model home.")
@backend_option()
@proposer_option()
@click.option("--out", default=None, type=click.Path(), help="Write scores as JSON here.")
@click.option("--save-pred", default=None, type=click.Path(),
              help="Also write the predicted label PNGs to this folder.")
def eval_command(layout, root, split, labels, classes, pred, bank, preset, overrides,
                 proposal_mode, limit, home, backend, proposer, out, save_pred):
    """Score predictions (or segment with a bank) against ground truth: mIoU per class."""
    from .bank.datasets import open_dataset
    from .io import check_output_dir, check_output_file, read_label_map, write_json, \
        write_label_png

    if out:                                     # output paths before any work
        check_output_file(out, "--out")
    if save_pred:
        check_output_dir(save_pred, "--save-pred")
    ds = open_dataset(layout, root, split, labels, classes).subset(limit)
    if (pred is None) == (bank is None):
        raise InputError("give exactly one of --pred DIR (score PNGs) or --bank BANK "
                         "(segment, then score)")
    ev = Evaluator(ds.class_names)
    timings: dict[str, list[float]] = {}
    from tqdm import tqdm
    if pred is not None:
        for s in tqdm(ds.samples, desc="eval", unit="img"):
            p = Path(pred) / f"{s.image_id}.png"
            if not p.is_file():
                raise InputError(f"no prediction {p} for image {s.image_id}")
            ev.add(read_label_map(p), s.label(), s.image_id)
    else:
        from .bank.segmenter import segmenter_from_bank
        seg = segmenter_from_bank(bank, home, preset, overrides, backend,
                                  need_proposer=proposal_mode == "model", proposer=proposer)
        if list(seg.bank.class_names) != list(ds.class_names):
            raise InputError(f"the bank's classes {seg.bank.class_names} differ from the "
                             f"dataset's {ds.class_names}")
        from .runtime.pipeline import assign
        from .timing import StageTimer
        for s in tqdm(ds.samples, desc="eval", unit="img"):
            image, gt = s.image(), s.label()
            if proposal_mode == "model":
                res = seg(image)
            else:
                timer = StageTimer()
                with timer("backbone"):
                    fmap = seg.backbone(image)
                res = assign(fmap, gt_proposals(gt, proposal_mode[3:]), seg.bank, seg.index,
                             seg.config, timer, seg.pooler, seg.prior)
            ev.add(res.label_map, gt, s.image_id)
            for k, v in res.timings_ms.items():
                timings.setdefault(k, []).append(v)
            if save_pred:
                write_label_png(Path(save_pred) / f"{s.image_id}.png", res.label_map)
    sc = ev.scores()
    click.echo(sc.table())
    if timings:
        click.echo("median ms per image: " + ", ".join(
            f"{k} {np.median(v):.1f}" for k, v in timings.items()))
    if out:
        rec = sc.to_json()
        rec["dataset"] = {"layout": layout, "root": str(root), "split": split, "limit": limit}
        rec["proposals"] = proposal_mode
        if timings:
            rec["median_ms"] = {k: round(float(np.median(v)), 2) for k, v in timings.items()}
        if bank is not None:
            rec["config"] = seg.full_config.to_dict()
        write_json(out, rec)
