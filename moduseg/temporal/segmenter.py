"""The temporal path: keyframes run the full pipeline, the frames between are
propagated by optical flow, and a class memory decides each pixel's class.

``TemporalSegmenter(segmenter)(rgb) -> TemporalResult`` keeps its state in a
small ``TemporalState``; ``reset()`` forgets it (a new stream). Three kinds of
frame (``TemporalResult.kind``):

- a *keyframe* runs the full pipeline; its labels are fused with the memory
  warped to it (``memory.fuse``) and its segments continue the tracks whose
  warped masks they overlap (``tracks.update``);
- a *propagated* frame runs no model: the last keyframe's fused label map and
  its proposals are carried to the frame by the composed flow (one resampling
  from the keyframe, never a chain of them);
- a *vote* frame (``temporal.vote_every``) runs the backbone only: the
  keyframe's proposals carried to it are labelled by the frame's own patch
  features (``Segmenter.relabel``, no proposer) and fused like a keyframe's
  labels, so the memory gets a fresh, independent view between keyframes at a
  fraction of a keyframe's cost. Frames after it are propagated from it. A
  wrapped segmenter without ``relabel`` propagates these frames instead.

A hot-swapped bank (``Segmenter.swap_bank``, ``app.hotswap``) makes the next
frame a keyframe (reason ``"bank"``), so the new classes show at once; the
memory and the tracks are carried over *by class name*: a class in both banks
keeps its history, a class only the old bank had loses it, a new class starts
empty (``remap_classes``). Frames up to the swap keep the old bank's names and
labels together.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Iterable, Iterator

import numpy as np

from ..config import TemporalOptions
from ..timing import StageTimer
from ..types import Proposals, SegmentationResult
from . import memory as class_memory
from .flow import compose, fb_valid, flow_pair, gray, identity_map, inside, resize_map, \
    to_map, warp_nearest
from .keyframes import FrameChange, histogram_distance, keyframe_reason, photometric_residual
from .tracks import TrackSet, update as update_tracks

MODES = ("on", "off")
VOTE = "vote"          # the reason of a vote frame (not a keyframe: ``keyframes.REASONS``)


@dataclass(frozen=True)
class TemporalConfig:
    """How one run uses the temporal path: ``enabled`` (``--temporal on|off``),
    ``async_keyframes`` (live sources: a keyframe's pipeline runs in a worker while the
    next frames are propagated from the previous keyframe, so no frame waits for it; a
    cut still does) and the ``temporal`` options of the configuration (thresholds,
    memory, flow), which are read as attributes: ``config.decay``, ``config.policy``."""

    enabled: bool = True
    options: TemporalOptions = field(default_factory=TemporalOptions)
    async_keyframes: bool = False
    # a keyframe due by the interval whatever the flow says: its pipeline starts at once,
    # in the worker, while this thread measures the flow (same results, the flow hidden)
    overlap_interval_keyframes: bool = True

    def __post_init__(self):
        if not isinstance(self.options, TemporalOptions):
            from ..errors import InputError
            raise InputError(f"TemporalConfig.options must be a TemporalOptions (the "
                             f"configuration's temporal section), got "
                             f"{type(self.options).__name__}")

    @classmethod
    def from_config(cls, config=None, *, enabled: bool = True,
                    async_keyframes: bool = False) -> "TemporalConfig":
        """The one place a run's temporal settings come from: the ``temporal`` section of
        ``config`` (a ``ModuSegConfig``, or anything with a ``full_config`` such as a
        ``Segmenter``); its defaults when there is none."""
        full = getattr(config, "full_config", config)
        opts = getattr(full, "temporal", None)
        return cls(enabled=bool(enabled),
                   options=opts if isinstance(opts, TemporalOptions) else TemporalOptions(),
                   async_keyframes=bool(async_keyframes))

    @property
    def policy(self) -> TemporalOptions:
        """The keyframe thresholds (``keyframes.keyframe_reason`` reads them)."""
        return self.options

    def __getattr__(self, name):
        # the temporal options read directly: cfg.decay, cfg.flow_width, ...
        if name != "options" and name in _OPTION_NAMES:
            return getattr(self.options, name)
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "async_keyframes": self.async_keyframes,
                **asdict(self.options)}


_OPTION_NAMES = frozenset(f.name for f in fields(TemporalOptions))


@dataclass
class TemporalState:
    """Everything a stream remembers between frames (one per camera / stream)."""

    frame_index: int = -1
    since_key: int = 0                      # frames since the last keyframe (interval)
    since_vote: int = 0                     # frames since the last keyframe or vote frame
    shot: int = 0
    image_hw: tuple | None = None
    gray: np.ndarray | None = None          # previous frame, grey, flow resolution
    key_gray: np.ndarray | None = None      # the keyframe, grey, flow resolution
    key_map: np.ndarray | None = None       # current frame -> keyframe (flow resolution)
    key_labels: np.ndarray | None = None    # the keyframe's fused label map
    key_result: SegmentationResult | None = None
    # the last keyframe (not vote frame) whose proposals are carried, and the map from the
    # current frame to it: proposals are resampled once from their keyframe, never chained
    # through vote frames
    prop_result: SegmentationResult | None = None
    prop_map: np.ndarray | None = None
    key_track_ids: list = field(default_factory=list)
    memory: np.ndarray | None = None        # [C, H, W] class scores, keyframe coordinates
    tracks: TrackSet = field(default_factory=TrackSet)
    keyframes: int = 0
    votes: int = 0                          # vote frames fused
    pending: "PendingKeyframe | None" = None   # a keyframe still running (async_keyframes)
    bank: object = None                     # the segmenter's bank at the last keyframe
    class_names: tuple | None = None        # the classes of the memory's planes


@dataclass
class PendingKeyframe:
    """A keyframe (or a vote frame, ``reason`` "vote") whose pipeline runs in the
    worker; fused when it is done."""

    future: object
    frame_index: int
    reason: str
    gray: np.ndarray
    to_old_key: np.ndarray | None    # keyframe -> the keyframe before it (flow resolution)
    to_frame: np.ndarray             # current frame -> this keyframe (flow resolution)


@dataclass
class TemporalResult(SegmentationResult):
    """A ``SegmentationResult`` with what the temporal path decided for the frame."""

    frame_index: int = 0
    keyframe: bool = True
    reason: str | None = None          # why it is a keyframe (``keyframes.REASONS``), or
    #                                    "vote" on a vote frame
    shot: int = 0                      # shots seen so far (a cut starts the next)
    track_ids: list = field(default_factory=list)       # per segment
    track_labels: list = field(default_factory=list)    # per segment: the track's class
    change: dict | None = None         # ``FrameChange`` measurements
    applied_keyframe: int | None = None  # async: the keyframe fused on this frame

    def to_json(self) -> dict:
        d = super().to_json()
        for s, tid, tl in zip(d["segments"], self.track_ids, self.track_labels):
            s["track_id"], s["track_label"] = tid, tl
        d["temporal"] = self.temporal_json()
        return d

    @property
    def kind(self) -> str:
        """"keyframe" (full pipeline), "vote" (backbone on carried proposals) or
        "propagated" (no model)."""
        if self.keyframe:
            return "keyframe"
        return "vote" if self.reason == VOTE else "propagated"

    def temporal_json(self) -> dict:
        d = {"keyframe": self.keyframe, "kind": self.kind, "reason": self.reason,
             "shot": self.shot, "change": self.change}
        if self.applied_keyframe is not None:
            d["applied_keyframe"] = self.applied_keyframe
        return d


class TemporalSegmenter:
    """Wraps a per-frame segmenter (``seg(image, timer) -> SegmentationResult``).

    Call it on the frames of one stream in order; ``reset()`` before another.
    With ``TemporalConfig(enabled=False)`` every frame is the wrapped
    segmenter's own result, unchanged. Without ``config`` the settings are the
    ``temporal`` section of the segmenter's configuration (``full_config``).
    """

    def __init__(self, segmenter, config: TemporalConfig | None = None):
        self.segmenter = segmenter
        self.config = config or TemporalConfig.from_config(segmenter)
        self.state = TemporalState()
        # what writers and the CLI read from a segmenter (``bank`` and ``index`` are
        # read through, so a hot-swapped bank shows)
        if hasattr(segmenter, "full_config"):
            self.full_config = segmenter.full_config
        self._worker = None
        # vote frames need a segmenter that labels given proposals (``Segmenter.relabel``)
        self._relabel = getattr(segmenter, "relabel", None)

    @property
    def bank(self):
        return self.segmenter.bank

    @property
    def index(self):
        return self.segmenter.index

    def _current_bank(self):
        return getattr(self.segmenter, "bank", None)

    def reset(self) -> None:
        self._drain()
        self.state = TemporalState()

    def close(self) -> None:
        """Wait for a running keyframe and stop the worker thread."""
        self._drain()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def _drain(self):
        p = self.state.pending
        if p is not None:
            self.state.pending = None
            try:
                p.future.result()
            except Exception:       # a stream being dropped: its error no longer matters
                pass

    def __call__(self, image: np.ndarray, timer: StageTimer | None = None):
        if not self.config.enabled:
            return self.segmenter(image, timer or StageTimer())
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        st, cfg = self.state, self.config
        st.frame_index += 1
        hw = tuple(image.shape[:2])
        change, key_map, early = None, None, None
        comparable = st.gray is not None and st.image_hw == hw
        if (comparable and cfg.overlap_interval_keyframes and not cfg.async_keyframes
                and st.pending is None and st.since_key + 1 >= cfg.policy.max_interval):
            # a keyframe whatever the flow shows (the interval has passed; the flow only
            # tells which reason and whether the memory carries over): start its pipeline
            early = self._executor().submit(self.segmenter, image, timer)
        try:
            with timer("flow"):
                g = gray(image, cfg.flow_width)
                if comparable:
                    bwd, fwd = flow_pair(st.gray, g, cfg.flow_preset)
                    key_map = compose(st.key_map, bwd)
                    st.prop_map = compose(st.prop_map, bwd)
                    change = FrameChange(
                        residual=photometric_residual(g, st.gray, to_map(bwd)),
                        histogram=histogram_distance(st.gray, g),
                        valid=float(fb_valid(bwd, fwd, cfg.fb_max_err).mean()),
                        motion=float(np.linalg.norm(bwd, axis=2).mean()) / g.shape[1],
                        fit_residual=photometric_residual(g, st.key_gray, key_map))
        except BaseException:
            if early is not None:
                early.cancel() or _quiet_result(early)
            raise
        applied = None
        if st.pending is not None and change is not None:
            st.pending.to_frame = compose(st.pending.to_frame, bwd)
        reason = keyframe_reason(change, st.since_key + 1, cfg.policy)
        bank = self._current_bank()
        if reason not in ("first", "cut") and st.bank is not None and bank is not st.bank:
            reason = "bank"                 # a hot-swapped bank: its classes from this frame
        if st.pending is not None and (reason in ("first", "cut") or st.pending.future.done()):
            was_vote = st.pending.reason == VOTE
            applied = self._apply_pending(timer, discard=reason in ("first", "cut"))
            if applied is not None:
                key_map = st.key_map
                if reason not in ("first", "cut") and not was_vote:
                    reason = None        # just refreshed (a vote frame refreshes no keyframe)
        if reason is None and st.pending is None and self._vote_due():
            if cfg.async_keyframes:
                res = self._propagate(image, key_map, timer)
                self._submit_vote(image, g, key_map, res.proposals)
                res.reason = VOTE
                st.since_key += 1
            else:
                res = self._vote(image, g, key_map, timer)
        elif reason is None or (reason not in ("first", "cut") and st.pending is not None):
            res = self._propagate(image, key_map, timer)
            st.since_key += 1
            st.since_vote += 1
        elif cfg.async_keyframes and reason not in ("first", "cut"):
            st.bank = bank
            self._submit(image, g, key_map, reason)
            res = self._propagate(image, key_map, timer)
            res.keyframe, res.reason = True, reason
            st.since_key += 1
            st.since_vote += 1
        else:
            st.bank = bank
            res = self._keyframe(image, g, key_map if reason not in ("first", "cut") else None,
                                 reason, timer, early)
        res.applied_keyframe = applied
        st.gray, st.image_hw = g, hw
        res.change = None if change is None else change.to_json()
        res.timings_ms = timer.as_dict()
        res.timings_ms["total"] = timer.ms["total"] = (time.perf_counter() - t0) * 1e3
        return res

    # -- the three kinds of frame ---------------------------------------------------------

    def _vote_due(self) -> bool:
        st, every = self.state, self.config.vote_every
        return (every > 0 and self._relabel is not None and st.since_vote + 1 >= every
                and st.key_result is not None and st.key_result.proposals is not None
                and len(st.key_result.proposals) > 0)

    def _vote(self, image, g, key_map, timer) -> TemporalResult:
        """The keyframe's proposals carried here, labelled by this frame's features and
        fused into the memory like a keyframe's labels (not a keyframe: the interval
        still counts from the last one)."""
        with timer("propagate"):
            props = self._carried_proposals()
        res = self._relabel(image, props, timer)
        return self._fold(res, g, key_map, VOTE, timer, self.state.frame_index)

    def _submit_vote(self, image, g, key_map, props) -> None:
        fut = self._executor().submit(self._relabel, image, props, StageTimer())
        self.state.pending = PendingKeyframe(fut, self.state.frame_index, VOTE, g, key_map,
                                             identity_map(g.shape))
        self.state.since_vote = 0

    def _keyframe(self, image, g, key_map, reason, timer, early=None) -> TemporalResult:
        res = early.result() if early is not None else self.segmenter(image, timer)
        return self._fold(res, g, key_map, reason, timer, self.state.frame_index)

    def _executor(self):
        from concurrent.futures import ThreadPoolExecutor
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyframe")
        return self._worker

    def _submit(self, image, g, key_map, reason) -> None:
        fut = self._executor().submit(self.segmenter, image, StageTimer())
        self.state.pending = PendingKeyframe(fut, self.state.frame_index, reason, g, key_map,
                                             identity_map(g.shape))

    def _apply_pending(self, timer, discard: bool = False) -> int | None:
        """Fuse a finished keyframe into the memory; it becomes the keyframe frames are
        propagated from. ``discard`` (a cut came first): wait for it and drop it."""
        st, p = self.state, self.state.pending
        st.pending = None
        with timer("keyframe_wait"):
            res = p.future.result()
        if discard:
            return None
        since_key = st.since_key
        self._fold(res, p.gray, p.to_old_key, p.reason, timer, p.frame_index)
        st.key_map = p.to_frame
        if p.reason != VOTE:
            st.prop_map = p.to_frame
        st.since_vote = st.frame_index - p.frame_index - 1
        st.since_key = since_key if p.reason == VOTE else st.since_vote
        return p.frame_index

    def _fold(self, res, g, key_map, reason, timer, frame_index) -> TemporalResult:
        st, cfg = self.state, self.config
        n = len(res.class_names)
        hw = res.label_map.shape
        names = tuple(res.class_names)
        if st.class_names is not None and names != st.class_names:
            remap_classes(st, names)
        st.class_names = names
        with timer("memory"):
            if key_map is None or st.memory is None or st.memory.shape != (n, *hw):
                if reason == "cut":
                    st.shot += 1
                st.tracks.reset()
                mem = class_memory.start(res.label_map, n)
                warped_masks = {}
            else:
                m = resize_map(key_map, hw)
                mem = class_memory.fuse(class_memory.warp(st.memory, m), inside(m, hw),
                                        res.label_map, cfg.decay)
                warped_masks = self._warped_track_masks(key_map, res.proposals)
            labels = class_memory.decide(mem)
        with timer("tracks"):
            segs, ids, tlabels = res.segments, [], []
            if segs and res.proposals is not None:
                new_masks = res.proposals.masks[[s.proposal for s in segs]]
                ids = update_tracks(st.tracks, warped_masks, new_masks,
                                    [s.label for s in segs], [s.confidence for s in segs],
                                    n, frame_index, cfg.track_decay, cfg.track_min_iou)
                tlabels = [st.tracks.tracks[i].label for i in ids]
        vote = reason == VOTE
        st.memory, st.key_labels, st.key_gray = mem, labels, g
        st.key_map, st.key_result, st.key_track_ids = identity_map(g.shape), res, ids
        st.since_vote = 0
        if vote:            # the interval still counts from the last keyframe
            st.since_key, st.votes = st.since_key + 1, st.votes + 1
        else:
            st.since_key, st.keyframes = 0, st.keyframes + 1
            st.prop_result, st.prop_map = res, identity_map(g.shape)
        return TemporalResult(label_map=labels, segments=segs, timings_ms={},
                              class_names=res.class_names, proposals=res.proposals,
                              frame_index=st.frame_index, keyframe=not vote, reason=reason,
                              shot=st.shot, track_ids=list(ids), track_labels=tlabels)

    def _warped_track_masks(self, key_map, proposals) -> dict:
        st = self.state
        if not st.tracks.tracks:
            return {}
        some = next(iter(st.tracks.tracks.values())).mask
        if proposals is not None and proposals.mask_hw != some.shape:
            return {}
        m = resize_map(key_map, some.shape)
        return {tid: warp_nearest(t.mask, m, border=-1) for tid, t in st.tracks.tracks.items()}

    def _carried_proposals(self) -> Proposals:
        """The last keyframe's proposals carried to this frame (``prop_map``), in one
        resampling from the keyframe: what a propagated frame shows and a vote frame
        labels."""
        st = self.state
        kp = st.prop_result.proposals
        mm = resize_map(st.prop_map, kp.mask_hw)
        masks = np.stack([warp_nearest(k, mm, border=-1) for k in kp.masks])
        return Proposals(masks, kp.scores, kp.image_hw)

    def _propagate(self, image, key_map, timer) -> TemporalResult:
        """The label map carried from the last keyframe or vote frame (``key_map``), the
        proposals from the last keyframe (``prop_map``); the segments are the last
        keyframe's or vote frame's (a vote frame labels its keyframe's proposals, in
        order)."""
        st = self.state
        key = st.key_result
        hw = st.key_labels.shape
        with timer("propagate"):
            st.key_map = key_map
            labels = warp_nearest(st.key_labels, resize_map(key_map, hw))
            props, segs, ids, tlabels = None, [], [], []
            if key.proposals is not None and len(key.proposals):
                props = self._carried_proposals()
                kp, masks = st.prop_result.proposals, props.masks
                scale = kp.image_hw[0] * kp.image_hw[1] / float(kp.mask_hw[0] * kp.mask_hw[1])
                areas = masks.reshape(len(masks), -1).sum(1) * scale
                for s, tid in zip(key.segments, st.key_track_ids or [None] * len(key.segments)):
                    # a mask mostly carried out of the frame no longer fits: drop it
                    if areas[s.proposal] < 0.5 * max(s.area, 1):
                        continue
                    segs.append(replace(s, area=int(round(areas[s.proposal]))))
                    ids.append(tid)
                    t = st.tracks.tracks.get(tid)
                    tlabels.append(t.label if t is not None else s.label)
            elif key.segments:
                segs = list(key.segments)
        return TemporalResult(label_map=labels, segments=segs, timings_ms={},
                              class_names=key.class_names, proposals=props,
                              frame_index=st.frame_index, keyframe=False, reason=None,
                              shot=st.shot, track_ids=ids if any(i is not None for i in ids)
                              else [], track_labels=tlabels if ids else [])


def remap_classes(state: TemporalState, names: tuple) -> None:
    """Carry a stream's memory and tracks to another bank's classes, by name: planes and
    track scores of classes in both banks move to their new index, the others are
    dropped (old only) or start at 0 (new only). A track left with no score ends."""
    old = list(state.class_names or ())
    src = np.array([old.index(n) if n in old else -1 for n in names], np.int64)

    keep = np.flatnonzero(src >= 0)

    def take(a: np.ndarray) -> np.ndarray:        # along the class axis, the first
        out = np.zeros((len(names), *a.shape[1:]), a.dtype)
        out[keep] = a[src[keep]]
        return out

    if state.memory is not None and state.memory.shape[0] == len(old):
        state.memory = take(state.memory)
    for tid in list(state.tracks.tracks):
        t = state.tracks.tracks[tid]
        if len(t.scores) != len(old):
            del state.tracks.tracks[tid]
            continue
        t.scores = take(t.scores)
        if not (t.scores > 0).any():
            del state.tracks.tracks[tid]
    state.class_names = tuple(names)


def _quiet_result(future) -> None:
    try:
        future.result()
    except Exception:       # the flow's own error is the one raised
        pass


def segment_stream(segmenter, frames: Iterable[np.ndarray],
                   config: TemporalConfig | None = None) -> Iterator[SegmentationResult]:
    """Segment RGB frames of one video or stream in order (the stream form of the API).

    ``segmenter`` is a per-frame ``Segmenter`` (``moduseg.load_segmenter()``) or a
    ``TemporalSegmenter`` (its state continues); ``config`` defaults to the temporal
    path on.
    """
    ts = segmenter if isinstance(segmenter, TemporalSegmenter) else \
        TemporalSegmenter(segmenter, config)
    for image in frames:
        yield ts(image, StageTimer())


def keyframe_summary(results_or_flags) -> dict:
    """Keyframe count, rate and reasons of a run (``TemporalResult`` items or dicts), and
    the count of vote frames."""
    flags = [r if isinstance(r, dict) else {"keyframe": r.keyframe, "reason": r.reason}
             for r in results_or_flags]
    n = len(flags)
    keys = [f for f in flags if f["keyframe"]]
    reasons: dict = {}
    for f in keys:
        reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    votes = sum(1 for f in flags if not f["keyframe"] and f.get("reason") == VOTE)
    return {"frames": n, "keyframes": len(keys),
            "keyframe_rate": round(len(keys) / n, 4) if n else None, "reasons": reasons,
            "vote_frames": votes}


