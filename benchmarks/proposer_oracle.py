"""How good and how fast are the SAM proposals on CamVid?

For each setting (``--set key=value,...``; repeat for several) and each of
the first ``--frames`` CamVid val frames this reports the encoder, decoder
and post-processing milliseconds (median over frames, best of ``--repeat``
runs each), the number of proposals, and two quality numbers computed on the
proposals the runtime would keep (objectness >= ``--min-score``, area >=
``--min-area`` px):

* coverage: fraction of labelled pixels inside at least one proposal;
* oracle mIoU: every proposal labelled with its ground-truth majority class,
  painted highest objectness last-wins-first (a pixel takes the best-scoring
  proposal covering it); uncovered labelled pixels count as errors.

    python -m benchmarks proposer-oracle --frames 10 \\
        --set "" --set "points_per_side=(4,6),refine_points=8"
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import click
import cv2
import numpy as np

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence",
                  "car", "pedestrian", "bicyclist"]
VOID = 11
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def parse_setting(text: str) -> dict:
    """``"a=1,b=(2,3)"`` -> ``{"a": 1, "b": (2, 3)}`` (values are Python literals)."""
    if not text.strip():
        return {}
    node = ast.parse(f"dict({text})", mode="eval").body
    return {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def oracle_paint(masks: np.ndarray, scores: np.ndarray, gt: np.ndarray,
                 n_classes: int, void: int) -> tuple[np.ndarray, np.ndarray]:
    """Label each mask by its GT majority class; best score wins each pixel.

    Returns the predicted label map (``void`` where nothing is painted) and the
    boolean coverage map. ``masks`` must already be at ``gt`` resolution.
    """
    pred = np.full(gt.shape, void, np.uint8)
    covered = np.zeros(gt.shape, bool)
    for i in np.argsort(-scores, kind="stable"):
        m = masks[i]
        lab = gt[m]
        lab = lab[lab != void]
        if lab.size == 0:
            continue
        cls = int(np.bincount(lab, minlength=n_classes).argmax())
        free = m & ~covered
        pred[free] = cls
        covered |= m
    return pred, covered


def confusion(pred: np.ndarray, gt: np.ndarray, n: int, void: int) -> np.ndarray:
    valid = gt != void
    p = np.where(pred[valid] == void, n, pred[valid]).astype(np.int64)
    return np.bincount(gt[valid].astype(np.int64) * (n + 1) + p,
                       minlength=n * (n + 1)).reshape(n, n + 1)


def miou(conf: np.ndarray) -> float:
    n = conf.shape[0]
    tp = np.diag(conf[:, :n])
    union = conf.sum(1) + conf[:, :n].sum(0) - tp
    ok = conf.sum(1) > 0
    return float(np.mean(tp[ok] / np.maximum(union[ok], 1)))


class CpuWallTimer:
    """StageTimer-compatible: wall ms in ``ms``, process CPU ms in ``cpu_ms``.

    On a shared, overloaded machine the CPU time of a single-threaded run
    (``--threads 1``) is the stable measure of the work a stage does.
    """

    def __init__(self):
        from collections import defaultdict

        self.ms, self.cpu_ms = defaultdict(float), defaultdict(float)

    def __call__(self, stage):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                self.ms[stage] += (time.perf_counter() - t0) * 1e3
                self.cpu_ms[stage] += (time.process_time() - c0) * 1e3
        return cm()

    def as_dict(self):
        return {**dict(self.ms), **{f"{k}_cpu": v for k, v in self.cpu_ms.items()}}


def run_setting(setting: dict, frames: list[tuple[Path, Path]], repeat: int,
                min_score: float, min_area: float, cache_dir: str | None) -> dict:
    from moduseg.build import load_default_proposer

    gen = load_default_proposer(cache_dir=cache_dir, **setting)
    gen.timer_cls = CpuWallTimer
    n = len(CAMVID_CLASSES)
    conf = np.zeros((n, n + 1), np.int64)
    cov_num = cov_den = 0
    times = {k: [] for k in ("encoder", "decoder", "postprocess", "total", "encoder_cpu",
                             "decoder_cpu", "postprocess_cpu")}
    counts, kept_counts, prompts = [], [], []
    for img_path, gt_path in frames:
        img = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            props = gen(img)
            total = (time.perf_counter() - t0) * 1e3
            t = dict(gen.last_stats["timings_ms"], total=total)
            if best is None or total < best["total"]:
                best = t
        for k in times:
            times[k].append(best.get(k, 0.0))
        counts.append(len(props))
        prompts.append(gen.last_stats.get("prompts", 0))
        keep = (props.scores >= min_score) & (props.areas() >= min_area)
        props = props.select(keep)
        kept_counts.append(len(props))
        H, W = gt.shape
        full = np.stack([cv2.resize(m.astype(np.uint8), (W, H),
                                    interpolation=cv2.INTER_NEAREST).astype(bool)
                         for m in props.masks]) if len(props) else np.zeros((0, H, W), bool)
        pred, covered = oracle_paint(full, props.scores, gt, n, VOID)
        conf += confusion(pred, gt, n, VOID)
        lab = gt != VOID
        cov_num += int((covered & lab).sum())
        cov_den += int(lab.sum())
    return {
        "setting": setting,
        **{f"{k}_ms": float(np.median(v)) for k, v in times.items()},
        "prompts": float(np.mean(prompts)),
        "masks": float(np.mean(counts)),
        "kept_masks": float(np.mean(kept_counts)),
        "coverage": cov_num / max(cov_den, 1),
        "oracle_miou": miou(conf),
    }


def quantisation_drift(frames: list[tuple[Path, Path]], cache_dir: str | None,
                       grid: int = 8) -> dict:
    """Mean IoU of masks from INT8 encoder/decoder vs FP32 for the same grid prompts."""
    from moduseg.build import load_default_proposer

    variants = {"fp32": {}, "int8 decoder": {"quantize_decoder": True},
                "int8 encoder": {"quantize_encoder": True},
                "int8 both": {"quantize_decoder": True, "quantize_encoder": True}}
    gens = {k: load_default_proposer(cache_dir=cache_dir, mask_stride=1, **v)
            for k, v in variants.items()}
    ious = {k: [] for k in variants if k != "fp32"}
    for img_path, _ in frames:
        img = cv2.cvtColor(cv2.imread(str(img_path)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        from moduseg.runtime.proposers.mask_ops import point_grid

        pts = point_grid(grid, grid) * np.array([w, h], np.float32)
        masks = {}
        for k, g in gens.items():
            g.set_image(img)
            masks[k] = g.predict(pts, multimask=False).logits[:, 0] > 0
        ref = masks["fp32"].reshape(len(pts), -1)
        for k in ious:
            m = masks[k].reshape(len(pts), -1)
            inter, union = (m & ref).sum(1), (m | ref).sum(1)
            ious[k] += list(inter[union > 0] / union[union > 0])
    return {k: float(np.mean(v)) for k, v in ious.items()}


def decoder_micro_rows(frame: Path, cache_dir: str | None, prompts: int = 32,
                  threads: int | None = None) -> list[tuple[str, float, float]]:
    """ms per prompt (wall, process CPU) of each decoder variant on one real embedding."""
    from moduseg.runtime.onnx_session import make_session
    from moduseg.graphs import sam_decoder as surgery
    from moduseg.runtime.proposers.mask_ops import point_grid
    from moduseg.models.defaults import default_model_paths
    from moduseg.runtime.proposers.sam import SamAutomaticMaskGenerator

    enc, dec = default_model_paths()
    gen = SamAutomaticMaskGenerator(enc, dec, cache_dir=cache_dir, threads=threads)
    img = cv2.cvtColor(cv2.imread(str(frame)), cv2.COLOR_BGR2RGB)
    im = gen.set_image(img)
    side = int(np.ceil(np.sqrt(prompts)))
    pts = (point_grid(side, side)[:prompts] * 1024 * np.array(im.resized_hw[::-1]) / 1024)
    coords = np.zeros((prompts, 2, 2), np.float32)
    coords[:, 0] = pts
    labels = np.tile(np.array([[1.0, -1.0]], np.float32), (prompts, 1))
    feed = {"image_embeddings": im.embedding, "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.array(im.image_hw, np.float32)}

    def timed(fn):
        fn()
        best = (1e9, 1e9)
        for _ in range(3):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best = min(best, ((time.perf_counter() - t0) * 1e3 / prompts,
                              (time.process_time() - c0) * 1e3 / prompts))
        return best

    rows = []
    orig = make_session(dec, "cpu", threads)
    rows.append(("original graph, one call per prompt", *timed(lambda: [
        orig.run(None, dict(feed, point_coords=coords[i:i + 1], point_labels=labels[i:i + 1]))
        for i in range(prompts)])))
    for name, kw in [("batched (Tile bypassed), 256 grid", dict(mask_stride=1, fast_attention=False)),
                     ("+ fast cross-attention, 256 grid", dict(mask_stride=1)),
                     ("+ fast cross-attention, 128 grid", dict(mask_stride=2)),
                     ("+ fast cross-attention, 64 grid", dict(mask_stride=4)),
                     ("+ fast cross-attention, 64 grid, INT8", dict(mask_stride=4, quantize=True))]:
        sess = make_session(surgery.batched_decoder_path(dec, cache_dir, **kw), "cpu", threads)
        names = {i.name for i in sess.get_inputs()}
        f = {k: v for k, v in dict(feed, point_coords=coords, point_labels=labels).items()
             if k in names}
        rows.append((name, *timed(lambda: sess.run(None, f))))
    return rows


@click.command("proposer-oracle")
@click.option("--data", type=click.Path(path_type=Path), default=DATA, show_default=True,
              help="CamVid folder (val/, valannot/).")
@click.option("--frames", type=int, default=10, show_default=True)
@click.option("--stride", type=int, default=10, show_default=True, help="Take every n-th val frame.")
@click.option("--offset", type=int, default=0, show_default=True, help="First val frame index.")
@click.option("--repeat", type=int, default=2, show_default=True, help="Runs per frame, best time kept.")
@click.option("--setting", "settings", multiple=True,
              help="Generator keyword overrides, e.g. 'mask_stride=4,refine_points=0' (repeatable).")
@click.option("--min-score", type=float, default=0.6, show_default=True)
@click.option("--min-area", type=float, default=300, show_default=True)
@click.option("--cache", "cache_dir", default=None, help="Derived-model cache folder.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON here.")
@click.option("--decoder-micro", is_flag=True, help="Only report decoder ms per prompt for each graph rewrite.")
@click.option("--threads", type=int, default=None, help="For --decoder-micro.")
@click.option("--quant-drift", is_flag=True, help="Only report the mean mask IoU of INT8 vs FP32 models.")
def command(data, frames, stride, offset, repeat, settings, min_score, min_area, cache_dir, out,
            decoder_micro, threads, quant_drift):
    """SAM proposals on CamVid val: timing, coverage and oracle mIoU per setting."""
    imgs = sorted((data / "val").glob("*.png"))
    if not imgs:
        raise click.ClickException(f"no CamVid frames in {data / 'val'}")
    imgs = imgs[offset::stride][:frames]
    pairs = [(p, data / "valannot" / p.name) for p in imgs]
    if decoder_micro:
        click.echo("| decoder graph | wall ms/prompt | CPU ms/prompt |\n|---|---|---|")
        for name, wall, cpu in decoder_micro_rows(pairs[0][0], cache_dir, threads=threads):
            click.echo(f"| {name} | {wall:.1f} | {cpu:.1f} |")
        return
    if quant_drift:
        for k, v in quantisation_drift(pairs, cache_dir).items():
            click.echo(f"| {k} | mean mask IoU vs fp32 {v:.3f} |")
        return
    results = []
    click.echo("| setting | encoder ms | decoder ms | post ms | total ms | CPU ms enc/dec/post | "
               "prompts | masks | kept | coverage | oracle mIoU |")
    click.echo("|---|---|---|---|---|---|---|---|---|---|---|")
    for text in settings or [""]:
        r = run_setting(parse_setting(text), pairs, repeat, min_score, min_area, cache_dir)
        results.append(r)
        click.echo(f"| {text or 'defaults'} | {r['encoder_ms']:.0f} | {r['decoder_ms']:.0f} | "
                   f"{r['postprocess_ms']:.0f} | {r['total_ms']:.0f} | "
                   f"{r['encoder_cpu_ms']:.0f}/{r['decoder_cpu_ms']:.0f}/{r['postprocess_cpu_ms']:.0f} | "
                   f"{r['prompts']:.0f} | "
                   f"{r['masks']:.1f} | {r['kept_masks']:.1f} | {100 * r['coverage']:.1f}% | "
                   f"{100 * r['oracle_miou']:.1f} |")
    if out:
        out.write_text(json.dumps(results, indent=1, default=str))
