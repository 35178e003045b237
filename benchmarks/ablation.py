"""Quality ablation on same-sequence CamVid val: the paper preset, each change on its own, the default.

Bank from train, labels of val (both mostly sequence ``0016E5``: the headline
protocol is ``python -m benchmarks cross-sequence``; this table is kept for
comparison with earlier releases). Backbone features and proposals of every
frame come from the per-frame cache ``cross-sequence`` fills (one folder
per backbone identity + options and per proposer setting, computed on first
use), so any preset and ``--set`` works, backbone options and the
proposer-free ``fast`` preset included. Each row builds its bank and labels
val through the package's own ``image_vectors`` / ``assign``, exactly as
``moduseg bank build`` + ``moduseg eval`` with the row's ``--preset`` /
``--set`` flags would.

    python -m benchmarks ablation                     # every row, markdown table
    python -m benchmarks ablation --row "paper"       # one row
    python -m benchmarks ablation --preset default --set runtime.top_k=20   # one ad-hoc row
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import click
import numpy as np

from moduseg.bank.builder import finish_vectors, image_vectors
from moduseg.bank.datasets import camvid
from moduseg.config import preset
from moduseg.evaluate import Evaluator
from moduseg.owned import atomic_path
from moduseg.build import build_bank_index
from moduseg.runtime.pipeline import assign, class_prior
from moduseg.settings import parse_overrides
from moduseg.types import FeatureMap, Proposals

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
CACHE = Path.home() / ".cache" / "moduseg" / "cross_sequence"   # shared with cross_sequence.py

# (row name, preset, --set overrides); each row changes one thing against its base
ROWS = [
    ("paper", "paper", []),
    ("paper + unassigned=nearest", "paper", ["runtime.unassigned='nearest'"]),
    ("paper + adaptive purification", "paper", ["bank.purification='adaptive'"]),
    ("paper + no purification", "paper", ["bank.purification='none'"]),
    ("paper + no outlier rejection", "paper", ["bank.outlier_fraction=0.0"]),
    ("paper + one vector per component", "paper",
     ["bank.granularity='component'", "bank.purification='adaptive'", "bank.min_area=100",
      "bank.component_min_area=100"]),
    ("paper + similarity-weighted, class-balanced vote", "paper", ["runtime.voting='weighted'"]),
    ("paper + patch vote", "paper", ["runtime.assignment='patch_vote'", "runtime.top_k=10"]),
    ("paper + patch bank (pooled queries)", "paper",
     ["bank.granularity='patch'", "bank.purification='none'", "bank.min_area=0",
      "bank.outlier_fraction=0.0", "bank.patch_purity=0.75"]),
    ("default - patch vote (pooled queries)", "default", ["runtime.assignment='pooled'"]),
    ("default - nearest fill", "default", ["runtime.unassigned='ignore'"]),
    ("default - thin-region fallback", "default", ["bank.patch_fallback_purity=1.0"]),
    ("default - guided refinement", "default", ["runtime.refine_radius=0"]),
    ("default, exact search", "default", ["runtime.index='flat'"]),
    ("default", "default", []),
    ("fast (no proposer)", "fast", []),
]


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_options(cfg) -> tuple[dict, dict]:
    return cfg.backbone_options(), cfg.proposer_options()


def cached_frames(ss, cfg, cache: Path, need_proposals: bool, home=None):
    """Per frame: (fp16 features, geometry, label, packed proposals or None).

    Features live under ``features-<key>`` (key = backbone identity, which
    includes the graph's checksum and input size, plus the options), proposals
    under ``proposals-<key>`` (key = the proposer's settings, which name its
    model files by checksum); a changed model or setting gets a new folder.
    """
    from moduseg.build import load_default_backbone, load_default_proposer

    bopts, popts = model_options(cfg)
    backbone = load_default_backbone(home=home, **bopts)
    bopts = {k: v for k, v in bopts.items() if v is not None}   # None = the model's default
    fdir = cache / f"features-{_key([backbone.identity.to_dict(), bopts])}"
    proposer, pdir = None, None
    if need_proposals:
        proposer = load_default_proposer(home=home, **popts)
        pdir = cache / f"proposals-{_key(proposer.settings)}"
    for d in (fdir, pdir):
        if d is not None:
            d.mkdir(parents=True, exist_ok=True)
    if not (fdir / "key.json").is_file():
        (fdir / "key.json").write_text(json.dumps([backbone.identity.to_dict(), bopts],
                                                  default=str))
    if pdir is not None and not (pdir / "key.json").is_file():
        (pdir / "key.json").write_text(json.dumps(proposer.settings, default=str))
    rows, t0 = [], time.perf_counter()
    for i, s in enumerate(ss):
        fp = fdir / f"{s.image_id}.pkl"
        pp = pdir / f"{s.image_id}.pkl" if pdir is not None else None
        image = None
        if fp.is_file():
            feats, geo = pickle.loads(fp.read_bytes())
        else:
            image = s.image()
            f = backbone(image)
            feats, geo = f.features.astype(np.float16), f.geometry
            with atomic_path(fp) as tmp:
                tmp.write_bytes(pickle.dumps((feats, geo)))
        packed = None
        if pp is not None:
            if pp.is_file():
                packed = pickle.loads(pp.read_bytes())
            else:
                image = s.image() if image is None else image
                packed = pack_proposals(proposer(image))
                with atomic_path(pp) as tmp:
                    tmp.write_bytes(pickle.dumps(packed))
        rows.append((feats, geo, s.label(), packed))
        if image is not None and i % 25 == 0:
            print(f"  cached {i + 1}/{len(ss)} frames ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return rows, backbone.identity


def cached_views(ss, cfg, cache: Path, home=None):
    """Per sample: the bank rows of its extra views (``bank.augment_*``), as
    ``bank build`` embeds them: [(fp16 features, geometry, view label, None), ...].

    Each view tag has its own folder ``features-<key>`` (key = the backbone's key plus
    the tag), so a view is computed once whatever else a row changes."""
    from moduseg.bank.augment import augmented, bank_views
    from moduseg.build import load_default_backbone

    if not augmented(cfg.bank):
        return [[] for _ in ss]
    bopts = cfg.backbone_options()
    backbone = load_default_backbone(home=home, **bopts)
    bopts = {k: v for k, v in bopts.items() if v is not None}
    base = [backbone.identity.to_dict(), bopts]
    out, t0, made = [], time.perf_counter(), 0
    for i, s in enumerate(ss):
        rows, views = [], None
        label = s.label()
        for view in bank_views(np.zeros((*label.shape, 3), np.uint8), label, cfg.bank):
            if not view.tag:
                continue
            d = cache / f"features-{_key([*base, view.tag])}"
            fp = d / f"{s.image_id}.pkl"
            if fp.is_file():
                feats, geo = pickle.loads(fp.read_bytes())
            else:
                if views is None:       # the real image's views, computed once a sample
                    views = {v.tag: v for v in bank_views(s.image(), label, cfg.bank)}
                d.mkdir(parents=True, exist_ok=True)
                if not (d / "key.json").is_file():
                    (d / "key.json").write_text(json.dumps([*base, view.tag], default=str))
                f = backbone(views[view.tag].image)
                feats, geo = f.features.astype(np.float16), f.geometry
                with atomic_path(fp) as tmp:
                    tmp.write_bytes(pickle.dumps((feats, geo)))
                made += 1
            rows.append((feats, geo, view.label, None))
        out.append(rows)
        if made and i % 25 == 0:
            print(f"  views of {i + 1}/{len(ss)} frames ({made} passes, "
                  f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def pack_proposals(p: Proposals):
    """Proposals as cached: masks bit-packed along rows, their grid size, scores."""
    return np.packbits(p.masks, axis=-1), p.mask_hw, p.scores


def proposals_of(packed, image_hw) -> Proposals:
    bits, hw, scores = packed
    masks = np.unpackbits(bits, axis=-1, count=hw[1]).astype(bool)
    return Proposals(masks.reshape(len(scores), *hw), scores, image_hw)


def bank_from_rows(rows, cfg, names, background_index, identity, image_ids=None):
    """A bank from cached (features, geometry, label, _) rows, as ``bank build`` makes it."""
    t0 = time.perf_counter()
    vecs, labs = [], []
    image_ids = image_ids or [""] * len(rows)
    for feats, geo, label, _ in rows:
        v, l, _ = image_vectors(FeatureMap(feats.astype(np.float32), geo), label, len(names),
                                cfg.bank)
        vecs.append(v)
        labs.append(l)
    v, l = np.concatenate(vecs), np.concatenate(labs)
    ids = np.repeat(np.asarray(image_ids), [len(x) for x in labs])
    bank = finish_vectors(v, l, ids, names, identity, background_index, cfg.bank)
    return bank, time.perf_counter() - t0


def label_rows(rows, bank, cfg):
    """Label cached (row, sample) pairs through ``assign``, as ``eval`` does.

    Returns the Evaluator and the post-backbone milliseconds per frame.
    """
    index = build_bank_index(bank, cfg, "cpu")
    prior = class_prior(bank, cfg.runtime.few_image_balance)
    ev = Evaluator(bank.class_names)
    ms = []
    rt = cfg.runtime
    for (feats, geo, label, packed), sample in rows:
        fmap = FeatureMap(feats.astype(np.float32), geo)
        t = time.perf_counter()
        props = None if packed is None else proposals_of(packed, geo.image_hw)
        res = assign(fmap, props, bank, index, rt, prior=prior,
                     image=sample.image() if rt.refine_radius > 0 else None)
        ms.append((time.perf_counter() - t) * 1e3)
        ev.add(res.label_map, label)
    return ev, ms


def split_rows(cfg, cache: Path, home=None, proposals=None, keep=None):
    """(train rows, [(val row, sample)], backbone identity, class names) from the cache.

    ``keep``: indices of the val frames to label (all when None); ``proposals``:
    packed proposals of those frames to use instead of the cached ones of
    ``cfg``'s proposer (``speed_quality.py``'s settings).
    """
    train, val = list(camvid(DATA, "train")), list(camvid(DATA, "val"))
    if keep is not None:
        val = [s for i, s in enumerate(val) if i in keep]
    need = cfg.needs_proposer and proposals is None
    tr, identity = cached_frames(train, cfg, cache, False, home)
    va, _ = cached_frames(val, cfg, cache, need, home)
    if proposals is not None:
        va = [(f, g, lab, p) for (f, g, lab, _), p in zip(va, proposals)]
    return tr, list(zip(va, val)), identity, camvid(DATA, "val").class_names


def evaluate_row(preset_name: str, sets: list[str], cache: Path = CACHE, home=None,
                 proposals=None, keep=None) -> dict:
    """One row: bank from train, val labelled, with ``--preset`` / ``--set`` flags."""
    cfg = preset(preset_name).with_overrides(**parse_overrides(sets))
    train, val, identity, names = split_rows(cfg, cache, home, proposals, keep)
    bank, build_s = bank_from_rows(train, cfg, names, None, identity)
    ev, ms = label_rows(val, bank, cfg)
    sc = ev.scores()
    return {"mIoU": round(sc.miou, 2), "bank_vectors": len(bank),
            "post_backbone_ms": round(float(np.median(ms)), 1), "bank_build_s": round(build_s, 1),
            "per_class_iou": sc.to_json()["per_class_iou"]}


@click.command("ablation")
@click.option("--row", "row_names", multiple=True, help="Only these rows of the table (by name; repeatable).")
@click.option("--preset", "preset_name", default=None, help="One ad-hoc row with this preset ...")
@click.option("--set", "sets", multiple=True, help="... and these settings (repeatable), instead of the table's rows.")
@click.option("--cache", type=click.Path(path_type=Path), default=CACHE, show_default=True,
              help="Per-frame feature and proposal cache (shared with cross-sequence).")
@click.option("--home", default=None, help="Model home.")
@click.option("--threads", type=int, default=1, show_default=True, help="BLAS/OpenMP/OpenCV threads.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the rows as JSON here.")
def command(row_names, preset_name, sets, cache, home, threads, out):
    """Same-sequence CamVid val mIoU: the paper preset, each change on its own, the default."""
    if not DATA.is_dir():
        raise click.ClickException(f"CamVid not found at {DATA}")
    from moduseg.bench.stats import set_threads
    set_threads(threads)
    sets = list(sets)
    if preset_name or sets:
        rows = [(" ".join([preset_name or "default"] + sets), preset_name or "default", sets)]
    else:
        rows = [r for r in ROWS if not row_names or r[0] in row_names]
        if not rows:
            raise click.ClickException(f"no row named {list(row_names)}; rows: {[r[0] for r in ROWS]}")
    results = []
    click.echo("| configuration | flags | val mIoU | bank vectors | post-backbone ms |")
    click.echo("|---|---|---|---|---|")
    for name, base, row_sets in rows:
        r = evaluate_row(base, row_sets, Path(cache), home)
        flags = " ".join([f"--preset {base}"] + [f'--set "{s}"' for s in row_sets])
        results.append({"row": name, "flags": flags, **r})
        click.echo(f"| {name} | `{flags}` | {r['mIoU']:.1f} | {r['bank_vectors']} | "
                   f"{r['post_backbone_ms']:.0f} |")
    if out:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
