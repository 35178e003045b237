"""The temporal path end to end on synthetic moving scenes with a fake segmenter."""

from dataclasses import replace

import numpy as np
import pytest

from moduseg.temporal import TemporalConfig, TemporalOptions, TemporalSegmenter, \
    keyframe_summary, segment_stream
from temporal_fixtures import CLASSES, IGNORE, ColourSegmenter, VotingSegmenter, canvas, \
    crop, labels_of


def pan(n, step=(2, 1), seed=0):
    world, lab = canvas(seed)
    return [crop(world, i * step[0], i * step[1]) for i in range(n)], \
        [crop(lab, i * step[0], i * step[1]) for i in range(n)]


def test_off_is_the_segmenter_itself():
    frames, _ = pan(3)
    fake = ColourSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(enabled=False))
    for f in frames:
        r = ts(f)
        assert type(r).__name__ == "SegmentationResult"
        assert np.array_equal(r.label_map, labels_of(f))
    assert fake.calls == 3


def test_propagated_frames_follow_a_known_shift():
    frames, truth = pan(6)
    fake = ColourSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(max_interval=10)))
    results = [ts(f) for f in frames]
    assert [r.keyframe for r in results] == [True] + [False] * 5
    assert fake.calls == 1                       # no model ran on a propagated frame
    inner = (slice(10, -10), slice(10, -10))
    for r, t in zip(results[1:], truth[1:]):
        assert (r.label_map[inner] == t[inner]).mean() > 0.97
    # the masks moved with the content: the red mask's centre moved by (-10, -5) px
    m0 = results[0].proposals.masks[1]
    m5 = results[5].proposals.masks[1]
    c0 = np.argwhere(m0).mean(0) * 2
    c5 = np.argwhere(m5).mean(0) * 2
    assert np.allclose(c0 - c5, [5, 10], atol=1.5)
    # tracks keep their ids
    assert results[5].track_ids == results[0].track_ids


def test_cut_forces_a_keyframe_and_resets_the_memory():
    a, _ = pan(4, seed=0)
    world_b, _ = canvas(seed=7)
    b = [np.ascontiguousarray(np.flipud(crop(world_b, i, 0))) for i in range(3)]
    fake = ColourSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(max_interval=10)))
    results = [ts(f) for f in a + b]
    assert [r.reason for r in results] == ["first", None, None, None, "cut", None, None]
    assert results[4].shot == 1 and results[3].shot == 0
    # the memory restarted: the label map after the cut is exactly the new frame's vote
    assert np.array_equal(results[4].label_map, labels_of(b[0]))
    # and no track continues across the cut
    assert not set(results[4].track_ids) & set(results[3].track_ids)


def test_memory_holds_a_class_against_a_flickering_vote():
    frames, truth = pan(9, step=(1, 0))
    fake = ColourSegmenter(flip=True)           # every third call: green voted red
    ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(max_interval=1)))
    results = [ts(f) for f in frames]
    assert all(r.keyframe for r in results)
    green = [(r.label_map[t == 2] == 2).mean() for r, t in zip(results, truth)]
    assert min(green) > 0.95                    # per-frame output: 0 on every third
    # the track's class holds too
    assert all(2 in r.track_labels for r in results)


def test_reset_starts_a_new_stream():
    frames, _ = pan(3)
    ts = TemporalSegmenter(ColourSegmenter())
    [ts(f) for f in frames]
    ts.reset()
    assert ts(frames[0]).reason == "first"


def test_interval_and_summary():
    frames, _ = pan(7, step=(1, 0))
    ts = TemporalSegmenter(ColourSegmenter(), TemporalConfig(options=TemporalOptions(max_interval=3)))
    res = list(segment_stream(ts, frames))
    assert [r.reason for r in res] == ["first", None, None, "interval", None, None, "interval"]
    s = keyframe_summary(res)
    assert s["keyframes"] == 3 and s["reasons"] == {"first": 1, "interval": 2}


def test_json_carries_track_ids():
    frames, _ = pan(2)
    ts = TemporalSegmenter(ColourSegmenter())
    d = [ts(f).to_json() for f in frames][1]
    assert d["temporal"]["keyframe"] is False
    assert all("track_id" in s for s in d["segments"])


def test_bad_config():
    from moduseg.errors import InputError
    with pytest.raises(InputError):
        TemporalOptions(decay=1.5)


class GatedSegmenter(ColourSegmenter):
    """Every call after the first blocks until the test opens the gate (or 20 s pass,
    which the test then sees as ``timed_out``)."""

    def __init__(self):
        import threading
        super().__init__()
        self.gate, self.timed_out = threading.Event(), False

    def __call__(self, image, timer=None):
        if self.calls >= 1 and not self.gate.wait(20):
            self.timed_out = True
        return super().__call__(image, timer)


def test_async_keyframe_does_not_hold_up_the_frames_after_it():
    frames, truth = pan(10, step=(1, 0))
    fake = GatedSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(
        options=TemporalOptions(max_interval=2), async_keyframes=True))
    results = [ts(f) for f in frames[:6]]          # the gate is shut: a wait would time out
    assert not fake.timed_out
    assert results[0].reason == "first" and results[2].reason == "interval"
    assert ts.state.pending is not None and ts.state.pending.frame_index == 2
    assert all(r.applied_keyframe is None for r in results)
    fake.gate.set()
    ts.state.pending.future.result()
    results += [ts(f) for f in frames[6:]]
    ts.close()
    assert results[6].applied_keyframe == 2        # fused on the first frame after it ended
    inner = (slice(10, -10), slice(10, -10))
    for r, t in zip(results, truth):
        assert (r.label_map[inner] == t[inner]).mean() > 0.97


def test_async_cut_waits_and_resets():
    a, _ = pan(3, seed=0)
    world_b, _ = canvas(seed=7)
    b = [np.ascontiguousarray(np.flipud(crop(world_b, i, 0))) for i in range(2)]
    fake = GatedSegmenter()
    fake.gate.set()
    ts = TemporalSegmenter(fake, TemporalConfig(
        options=TemporalOptions(max_interval=1), async_keyframes=True))
    res = [ts(f) for f in a + b]
    ts.close()
    assert res[3].reason == "cut" and np.array_equal(res[3].label_map, labels_of(b[0]))


def test_settings_are_read_from_the_segmenters_configuration():
    """No TemporalConfig given: the wrapped segmenter's ``full_config.temporal`` decides;
    a segmenter without a configuration gets the declared defaults."""
    from moduseg.config import preset
    from moduseg.settings import resolve_config
    fake = ColourSegmenter()
    fake.full_config = resolve_config("default", ["temporal.max_interval=3",
                                                  "temporal.decay=0.5"])
    ts = TemporalSegmenter(fake)
    assert ts.config.max_interval == 3 and ts.config.decay == 0.5
    assert ts.config.policy is fake.full_config.temporal
    world, _ = canvas()
    flags = [ts(crop(world, i, 0)).keyframe for i in range(7)]
    assert flags == [True, False, False, True, False, False, True]
    assert TemporalSegmenter(ColourSegmenter()).config.options == TemporalOptions()
    assert TemporalConfig.from_config(preset("fast")).options == preset("fast").temporal
    assert TemporalConfig.from_config(None, enabled=False).enabled is False
    with pytest.raises(AttributeError):
        TemporalConfig().no_such_option
    from moduseg.errors import InputError
    with pytest.raises(InputError, match="TemporalOptions"):
        TemporalConfig(options={"max_interval": 3})


def test_interval_keyframes_start_their_pipeline_beside_the_flow_with_the_same_results():
    """A keyframe due by the interval runs the segmenter in the worker while the flow is
    measured: the labels, keyframes, reasons and track ids are those of the sequential path
    (a cut found by that flow still resets the memory)."""
    import threading
    from dataclasses import replace
    world, _ = canvas()
    wb, _ = canvas(9)
    frames = [crop(world, 2 * i, i) for i in range(7)] + \
        [np.ascontiguousarray(np.flipud(crop(wb, i, 0))) for i in range(5)]
    opts = TemporalOptions(max_interval=3)

    class WhereSegmenter(ColourSegmenter):
        def __call__(self, image, timer=None):
            self.threads = getattr(self, "threads", []) + [threading.current_thread().name]
            return super().__call__(image, timer)

    runs = {}
    for overlap in (False, True):
        seg = WhereSegmenter(flip=True)
        ts = TemporalSegmenter(seg, replace(TemporalConfig(options=opts),
                                            overlap_interval_keyframes=overlap))
        out = [ts(f) for f in frames]
        ts.close()
        runs[overlap] = (out, seg.threads)
    (a, ta), (b, tb) = runs[False], runs[True]
    assert [r.reason for r in a] == [r.reason for r in b]
    assert "interval" in [r.reason for r in a] and "cut" in [r.reason for r in a]
    for x, y in zip(a, b):
        assert np.array_equal(x.label_map, y.label_map)
        assert x.track_ids == y.track_ids and x.track_labels == y.track_labels
    assert all(not t.startswith("keyframe") for t in ta)
    key_reasons = [r.reason for r in b if r.keyframe]
    assert [t.startswith("keyframe") for t in tb] == [r == "interval" for r in key_reasons]


class SwappableSegmenter(ColourSegmenter):
    """A ``ColourSegmenter`` with a bank that can be swapped (``swap_bank``), as
    ``Segmenter`` has: the bank is its class-name list, the labels index it."""

    def __init__(self):
        super().__init__()
        self.bank = list(CLASSES)

    def swap_bank(self, names):
        self.bank = list(names)

    def __call__(self, image, timer=None):
        res = super().__call__(image, timer)
        # the colours, named by the current bank (-> IGNORE when it lacks the name)
        lut = np.full(256, IGNORE, np.uint8)
        for c, name in enumerate(CLASSES):
            if name in self.bank:
                lut[c] = self.bank.index(name)
        res.label_map = lut[res.label_map]
        res.segments = [replace(s, label=int(lut[s.label])) for s in res.segments
                        if lut[s.label] != IGNORE]
        res.class_names = list(self.bank)
        return res


def test_a_swapped_bank_makes_a_keyframe_and_the_memory_follows_the_class_names():
    """Between frames the bank changes (green dropped, a new class added, the order
    changed): the next frame is a keyframe (reason 'bank') labelled by the new bank,
    earlier frames keep the old names with their labels, and the memory of a class in
    both banks moves to its new index (its history kept, so a flickering vote holds)."""
    frames, _ = pan(8)
    fake = SwappableSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(max_interval=10)))
    before = [ts(f) for f in frames[:3]]
    assert [r.reason for r in before] == ["first", None, None]
    assert all(r.class_names == CLASSES for r in before)
    new = ["snow", "red", "background"]         # green gone, red and background moved
    fake.swap_bank(new)
    assert ts.bank == new                       # read through, not a copy from the start
    after = [ts(f) for f in frames[3:6]]
    assert [r.reason for r in after] == ["bank", None, None]
    assert [r.keyframe for r in after] == [True, False, False]
    for r in after:
        assert r.class_names == new
        assert set(np.unique(r.label_map).tolist()) <= {1, 2, IGNORE}
    red = labels_of(frames[3]) == 1
    assert (after[0].label_map[red] == 1).mean() > 0.97
    bg = labels_of(frames[3]) == 0
    assert (after[0].label_map[bg] == 2).mean() > 0.97
    # the memory planes moved with the names: red's plane is now plane 1 and holds the
    # history of red (decayed) plus this keyframe; snow's plane is empty
    mem = ts.state.memory
    assert mem.shape[0] == 3 and ts.state.class_names == tuple(new)
    assert mem[0].max() == 0
    assert mem[1][red].min() > 0.99
    # green's old pixels: nothing in the new bank voted for them; no old class leaks in
    green = labels_of(frames[3]) == 2
    assert (after[0].label_map[green] == IGNORE).mean() > 0.97
    # the tracks of red and background continue (ids kept); green's ended
    red_id_before = before[2].track_ids[[s.class_name for s in before[2].segments].index("red")]
    red_after = [s.label for s in after[0].segments].index(1)
    assert after[0].track_ids[red_after] == red_id_before
    # the same bank object again: no further 'bank' keyframe
    assert ts(frames[6]).reason is None


def test_remap_classes_moves_memory_and_track_scores_by_name():
    from moduseg.temporal.segmenter import TemporalState, remap_classes
    from moduseg.temporal.tracks import Track

    st = TemporalState()
    st.class_names = ("a", "b", "c")
    st.memory = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    mask = np.ones((2, 2), bool)
    st.tracks.tracks = {0: Track(0, np.array([0.0, 0.0, 1.0], np.float32), mask, 0),
                        1: Track(1, np.array([0.2, 0.8, 0.0], np.float32), mask, 0)}
    old = st.memory.copy()
    remap_classes(st, ("b", "d", "a"))
    assert st.class_names == ("b", "d", "a")
    np.testing.assert_array_equal(st.memory[0], old[1])
    np.testing.assert_array_equal(st.memory[1], 0)
    np.testing.assert_array_equal(st.memory[2], old[0])
    assert list(st.tracks.tracks) == [1]        # track 0 was all 'c': it ends
    np.testing.assert_allclose(st.tracks.tracks[1].scores, [0.8, 0.0, 0.2])
    assert st.tracks.tracks[1].label == 0       # still 'b'


def test_vote_frames_label_the_carried_proposals_with_the_frames_own_evidence():
    """``vote_every=2``: every second frame after a keyframe or vote frame is a vote frame:
    the keyframe's proposals, translated with the content, are labelled by that frame
    (``relabel``; the full pipeline runs on keyframes only) and its labels are the
    translated labels. The interval counts from the keyframe, not the vote frame."""
    frames, truth = pan(9)
    fake = VotingSegmenter()
    ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(max_interval=4,
                                                                        vote_every=2)))
    res = [ts(f) for f in frames]
    assert [r.kind for r in res] == ["keyframe", "propagated", "vote", "propagated",
                                     "keyframe", "propagated", "vote", "propagated",
                                     "keyframe"]
    assert [r.reason for r in res] == ["first", None, "vote", None, "interval", None,
                                       "vote", None, "interval"]
    assert fake.calls == 3 and fake.relabels == 2
    assert ts.state.keyframes == 3 and ts.state.votes == 2
    # the proposals given to the vote frame (frame 2) are the keyframe's, moved by the
    # content's shift: (-2, -4) px at full resolution, (-1, -2) at the masks' half
    k0, given = res[0].proposals.masks[1], fake.given[0].masks[1]
    assert np.allclose(np.argwhere(k0).mean(0) - np.argwhere(given).mean(0), [1, 2],
                       atol=0.6)
    inner = (slice(10, -10), slice(10, -10))
    for r, t in zip(res, truth):
        assert (r.label_map[inner] == t[inner]).mean() > 0.97
    # a vote frame continues the keyframe's tracks and says what it is in segments.json
    assert res[2].track_ids == res[0].track_ids
    d = res[2].to_json()["temporal"]
    assert d["kind"] == "vote" and d["keyframe"] is False and d["reason"] == "vote"
    assert res[1].to_json()["temporal"]["kind"] == "propagated"
    s = keyframe_summary(res)
    assert s["keyframes"] == 3 and s["vote_frames"] == 2
    assert s["reasons"] == {"first": 1, "interval": 2}


def test_the_memory_takes_a_vote_frames_labels_as_evidence():
    """A vote frame's labels are fused like a keyframe's: with decay 0.7 one vote of red on
    the green region leaves green ahead (0.7 against 0.3) but in the memory; with decay
    0.2 the vote wins. Off, and with vote_every 0, nothing but the segmenter runs."""
    frames, truth = pan(3)
    green = truth[2] == 2
    for decay, want in ((0.7, 2), (0.2, 1)):
        fake = VotingSegmenter(vote_as={2: 1})
        ts = TemporalSegmenter(fake, TemporalConfig(options=TemporalOptions(
            max_interval=10, vote_every=2, decay=decay)))
        res = [ts(f) for f in frames]
        assert res[2].kind == "vote"
        mem = ts.state.memory
        inner = np.zeros_like(green)
        inner[10:-10, 10:-10] = True
        sel = green & inner
        assert np.allclose(mem[1][sel], 1 - decay, atol=1e-5)
        assert np.allclose(mem[2][sel], decay, atol=1e-5)
        assert (res[2].label_map[sel] == want).mean() > 0.99
    for cfg in (TemporalConfig(options=TemporalOptions(vote_every=0, max_interval=10)),
                TemporalConfig(enabled=False, options=TemporalOptions(vote_every=2))):
        fake = VotingSegmenter()
        out = [TemporalSegmenter(fake, cfg)(f) for f in frames]
        assert fake.relabels == 0
        if not cfg.enabled:
            assert all(np.array_equal(r.label_map, labels_of(f)) for r, f in zip(out, frames))


def test_a_segmenter_without_relabel_propagates_instead_of_voting():
    frames, _ = pan(4)
    ts = TemporalSegmenter(ColourSegmenter(), TemporalConfig(options=TemporalOptions(
        max_interval=10, vote_every=2)))
    assert [r.kind for r in (ts(f) for f in frames)] == ["keyframe"] + ["propagated"] * 3


def test_async_vote_frames_run_in_the_worker_and_are_fused_later():
    """Live sources: a vote frame's backbone runs in the worker like a keyframe's pipeline
    (the frame itself is propagated at once); it is fused on the first frame after it is
    done, and the interval still counts from the keyframe."""
    import threading
    frames, truth = pan(8, step=(1, 0))

    class GatedVoting(VotingSegmenter):
        def __init__(self):
            super().__init__()
            self.gate, self.timed_out = threading.Event(), False

        def relabel(self, image, proposals, timer=None):
            if not self.gate.wait(20):
                self.timed_out = True
            return super().relabel(image, proposals, timer)

    fake = GatedVoting()
    ts = TemporalSegmenter(fake, TemporalConfig(
        options=TemporalOptions(max_interval=6, vote_every=2), async_keyframes=True))
    res = [ts(f) for f in frames[:4]]
    assert not fake.timed_out
    assert [r.kind for r in res] == ["keyframe", "propagated", "vote", "propagated"]
    assert ts.state.pending is not None and ts.state.pending.reason == "vote"
    fake.gate.set()
    for f in frames[4:]:                # each worker job done before the next frame
        if ts.state.pending is not None:
            ts.state.pending.future.result()
        res.append(ts(f))
    ts.close()
    assert res[4].applied_keyframe == 2 and res[4].kind == "vote"   # fused, then the next
    assert res[5].applied_keyframe == 4 and ts.state.votes == 2
    assert [r.reason for r in res].index("interval") == 6
    inner = (slice(10, -10), slice(10, -10))
    for r, t in zip(res, truth):
        assert (r.label_map[inner] == t[inner]).mean() > 0.97
