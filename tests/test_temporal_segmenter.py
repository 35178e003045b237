"""The temporal path end to end on synthetic moving scenes with a fake segmenter."""

import numpy as np
import pytest

from moduseg.temporal import TemporalConfig, TemporalOptions, TemporalSegmenter, \
    keyframe_summary, segment_stream
from temporal_fixtures import ColourSegmenter, canvas, crop, labels_of


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


@pytest.mark.parametrize("vote", ["pixel", "region"])
def test_memory_holds_a_class_against_a_flickering_vote(vote):
    frames, truth = pan(9, step=(1, 0))
    fake = ColourSegmenter(flip=True)           # every third call: green voted red
    ts = TemporalSegmenter(fake, TemporalConfig(
        options=TemporalOptions(max_interval=1, memory_vote=vote)))
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
