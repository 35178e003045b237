"""The temporal path replayed over cached per-frame results (for tuning on a busy machine).

The per-frame pipeline is stateless, so a keyframe's result is exactly the per-frame result
of that frame: run the pipeline once per frame (cached under --cache), then replay the
temporal path for real over the cached results. TC and mIoU are exact; the cost is an
estimate (the temporal path's own measured time + the cached per-frame time of its
keyframes). ``moduseg bench video`` measures on vs off for real.

    python -m benchmarks temporal-replay --preset default --inputs bikes.mp4,vtest.avi

``--clips held-out`` replays over other moving-camera clips (other stills, other seeds:
``moduseg.bench.clips.HELD_OUT``) than the bench's own (``dev``), for checking a
setting chosen on the dev clips; ``--clips held-out-2`` over a third set (``HELD_OUT_2``), ``--clips held-out-3`` and ``held-out-4`` two more (``HELD_OUT_3``, ``HELD_OUT_4``). ``--policy`` may be given several times.

Vote frames (``temporal.vote_every``) need the backbone features of propagated frames,
which the per-frame cache does not hold: the backbone runs once per frame it is asked
for and its features are cached too (``features-...`` folders, one file a frame, with the
backbone's measured time); the post-backbone stages of a vote frame run for real in the
replay, and the cost estimate counts, for each vote frame, the times of those stages in
that frame's per-frame run (measured in the same run, at the same load, as the per-frame
total; there the backbone ran beside the proposer, so this errs on the high side).
"""

from __future__ import annotations

import copy
import json
import pickle
import time
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from moduseg.bench.clips import HELD_OUT_SETS


class Replay:
    """A per-frame segmenter that returns the cached result of the frame it is given;
    with ``labeller`` (a ``Segmenter`` on a ``CachedBackbone``) it also labels given
    proposals (vote frames) with the frame's cached features."""

    def __init__(self, results, frames, bank, labeller=None):
        self.results, self.idx, self.bank = results, {id(f): i for i, f in enumerate(frames)}, \
            bank
        if labeller is not None:
            self.relabel = labeller.relabel

    def __call__(self, image, timer=None):
        return copy.copy(self.results[self.idx[id(image)]][0])


class CachedBackbone:
    """The backbone, run at most once per frame of one input: its feature map and time
    are kept in ``folder`` (one pickle a frame, written atomically). ``ms`` holds the
    backbone time of each frame asked for (from the cache when it was computed before)."""

    def __init__(self, backbone, frames, folder: Path):
        self.backbone, self.folder = backbone, folder
        self.idx = {id(f): i for i, f in enumerate(frames)}
        self.identity = backbone.identity
        self.ms: dict = {}
        folder.mkdir(parents=True, exist_ok=True)

    def features(self, i: int, image):
        path = self.folder / f"{i:06d}.pkl"
        if path.is_file():
            with open(path, "rb") as fh:
                fmap, ms = pickle.load(fh)
        else:
            t = time.perf_counter()
            fmap = self.backbone(image)
            ms = (time.perf_counter() - t) * 1e3
            tmp = path.with_suffix(".part")
            with open(tmp, "wb") as fh:
                pickle.dump((fmap, ms), fh)
            tmp.replace(path)
        self.ms[i] = ms
        return fmap

    def __call__(self, image):
        return self.features(self.idx[id(image)], image)

    def __getattr__(self, name):        # anything else the pipeline reads: the backbone's
        return getattr(self.backbone, name)


def clip_tag(clip_set: str) -> str:
    """The cache-name tag of a held-out clip set: "held-out-2" -> "-heldout2"."""
    return "-" + clip_set.replace("-", "")


def cache_inputs(preset: str, inputs: list[str], frames: int, cache: Path, data: Path,
                 clips: str = "dev"):
    from moduseg.bank.embedded import default_bank_path
    from moduseg.bank.store import load_bank
    from moduseg.bench.clips import SEQUENCES, make_camvid_clips, read_clip
    from moduseg.bench.common import try_models
    from moduseg.bench.temporal import cross_sequence_bank, decode
    from moduseg.build import assemble, resolve_backend
    from moduseg.settings import resolve_config
    from moduseg.timing import StageTimer
    stored = load_bank(default_bank_path())
    cfg = resolve_config(preset, (), stored.config)
    be = resolve_backend("cpu")
    backbone, proposer, why = try_models(None, be, cfg.needs_proposer, cfg=cfg)
    if backbone is None:
        raise click.ClickException(why)
    out = {}
    models = (cfg, be, backbone)
    for w in inputs:
        video = w.endswith((".mp4", ".avi"))
        tag = "" if video or clips == "dev" else clip_tag(clips)
        path = cache / f"{preset}-{w}{tag}-{frames}.pkl"
        if video:
            fr, gts, cuts = decode(str(data / "video" / w), frames), None, None
        else:
            if clips == "dev":
                make_camvid_clips(data, cache / "clips", [w], 2, SEQUENCES.index(w), 30, 40)
                folder = cache / "clips" / w
            else:
                plan = HELD_OUT_SETS[clips]
                make_camvid_clips(data, cache / f"clips{tag}", [w], 2,
                                  plan["seed"] + SEQUENCES.index(w), 30, 40, plan["place"])
                folder = cache / f"clips{tag}" / w
            fr, gts, starts = read_clip(folder)
            cuts = [s for s in starts if s > 0]
        if not path.is_file():
            if w.endswith((".mp4", ".avi")):
                bank = stored
                if preset == "fast":
                    from moduseg.bench.video import camvid_bank
                    bank = camvid_bank(backbone, data, 40, cache / "fast-bank40.npz")[0]
            else:
                bank, _ = cross_sequence_bank(backbone, cfg, data, w, 12, cache)
            seg = assemble(cfg, bank, be, None, backbone=backbone, proposer=proposer)
            res = []
            for f in fr:
                t = time.perf_counter()
                r = seg(f, StageTimer())
                res.append((r, (time.perf_counter() - t) * 1e3))
            tmp = path.with_suffix(".part")
            with open(tmp, "wb") as fh:
                pickle.dump({"results": res, "gts": gts, "bank": seg.bank}, fh)
            tmp.replace(path)
        c = pickle.load(open(path, "rb"))
        c["features"] = cache / f"features-{preset}-{w}{tag}-{frames}"
        c["models"] = models
        out[w] = (fr, c, cuts)
    return out


def vote_labeller(c, fr):
    """A ``Segmenter`` with the input's bank whose backbone is cached per frame."""
    from moduseg.build import assemble
    cfg, be, backbone = c["models"]
    cached = CachedBackbone(backbone, fr, c["features"])
    return assemble(cfg, c["bank"], be, None, backbone=cached, need_proposer=False,
                    parallel=False), cached


@click.command("temporal-replay", help=__doc__.splitlines()[0])
@click.option("--preset", default="default", show_default=True)
@click.option("--inputs", default="bikes.mp4,vtest.avi", show_default=True,
              help="Shared videos and/or CamVid sequences (their moving-camera clips).")
@click.option("--frames", type=int, default=60, show_default=True)
@click.option("--cache", default="/tmp/moduseg-temporal-replay", type=click.Path())
@click.option("--data", default=None, type=click.Path())
@click.option("--clips", "clip_set", type=click.Choice(["dev", *HELD_OUT_SETS]), default="dev",
              show_default=True, help="Which moving-camera clips the CamVid inputs are.")
@click.option("--policy", "policies", multiple=True, default=["{}"], show_default=True,
              help="temporal options (moduseg.config.TemporalOptions fields) as JSON; "
                   "repeat for several settings.")
@click.option("--prefill-features", is_flag=True,
              help="Run the backbone on every frame first (the features vote frames need), "
                   "so the replays that follow only read them.")
def command(preset, inputs, frames, cache, data, clip_set, policies, prefill_features):
    from moduseg.bench.common import default_data_root
    from moduseg.bench.temporal import detect_cuts
    from moduseg.config import TemporalOptions
    from moduseg.temporal import TemporalConfig
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    data = Path(data) if data else default_data_root()
    base = TemporalOptions()
    for w, (fr, c, cuts) in cache_inputs(preset, inputs.split(","), frames, cache,
                                         data, clip_set).items():
        res = c["results"]
        fr = fr[:len(res)]
        cuts = detect_cuts(fr) if cuts is None else cuts
        if prefill_features:
            cached = vote_labeller(c, fr)[1]
            for i, f in enumerate(fr):
                cached.features(i, f)
        for policy in policies:
            opts = replace(base, **json.loads(policy))
            row = replay_one(TemporalConfig(options=opts), fr, c, cuts)
            click.echo(json.dumps({"input": w, "clips": None if w.endswith((".mp4", ".avi"))
                                   else clip_set, "policy": json.loads(policy), **row}))


# the temporal path's own stages (timed in the replay); the others are the model's
TEMPORAL_STAGES = ("flow", "propagate", "memory", "tracks", "keyframe_wait", "total")


def replay_one(tcfg, fr, c, cuts) -> dict:
    """The temporal path replayed over one input's cached per-frame results."""
    from moduseg.evaluate import Evaluator
    from moduseg.temporal import TemporalSegmenter
    from moduseg.temporal.consistency import clip_consistency
    from moduseg.timing import StageTimer
    res, gts = c["results"], c["gts"]
    labeller, cached = vote_labeller(c, fr) if tcfg.vote_every > 0 else (None, None)
    ts = TemporalSegmenter(Replay(res, fr, c["bank"], labeller), tcfg)
    labels, keys, votes, cost = [], [], [], []
    for i, f in enumerate(fr):
        t = time.perf_counter()
        r = ts(f, StageTimer())
        dt = (time.perf_counter() - t) * 1e3
        labels.append(r.label_map)
        keys.append(r.keyframe)
        votes.append(r.kind == "vote")
        if r.kind == "vote":
            # the model stages of a vote frame (backbone, search, pool, nms, ...) at the
            # times the frame's per-frame run measured for them, at that run's load (the
            # per-frame total's), instead of the cached features' reading time and this
            # replay's own load
            done = res[i][0].timings_ms
            stages = [k for k in r.timings_ms if k not in TEMPORAL_STAGES]
            dt += sum(done.get(k, r.timings_ms[k]) - r.timings_ms[k] for k in stages)
        cost.append(dt + (res[i][1] if r.keyframe else 0.0))
    off = [r.label_map for r, _ in res]
    off_ms = float(np.sum([ms for _, ms in res]))
    row = {"frames": len(fr), "cuts": cuts,
           "keyframe_rate": round(float(np.mean(keys)), 3),
           "vote_rate": round(float(np.mean(votes)), 3),
           "estimated_cost_on_over_off": round(float(np.sum(cost)) / off_ms, 3),
           "tc_on": clip_consistency(fr, labels, cuts),
           "tc_off": clip_consistency(fr, off, cuts)}
    if gts is not None:
        for tag, lab in (("on", labels), ("off", off)):
            ev = Evaluator(c["bank"].class_names)
            for la, g in zip(lab, gts):
                ev.add(la, g)
            row[f"miou_{tag}"] = round(ev.scores().miou, 2)
    for k in ("tc_on", "tc_off"):
        row[k] = {x: row[k][x] for x in ("mean", "median", "p10", "pairs")}
    return row
