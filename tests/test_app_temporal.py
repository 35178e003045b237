"""``moduseg segment`` on a video: the temporal path by default, ``--temporal off``
identical to per-frame segmentation, the records segments.json gains."""

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from moduseg.app.loop import run_segment
from moduseg.coco import segment_records
from moduseg.io import read_label_map
from moduseg.temporal import TemporalConfig, TemporalOptions
from temporal_fixtures import CLASSES, ColourSegmenter, VotingSegmenter, canvas, crop


class FakeSeg(ColourSegmenter):
    bank = SimpleNamespace(class_names=CLASSES, background_index=None)


def write_video(path, frames, fps=25.0):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    world, _ = canvas()
    wb, _ = canvas(9)
    frames = [crop(world, 2 * i, i) for i in range(6)] + \
        [np.ascontiguousarray(np.flipud(crop(wb, i, 0))) for i in range(3)]
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_video(path, frames)
    cap, decoded = cv2.VideoCapture(str(path)), []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return path, decoded


def strip_timings(d):
    d.pop("median_ms", None)
    for f in d["frames"]:
        f.pop("timings_ms", None)
    return d


def test_off_is_per_frame_output_byte_for_byte(video, tmp_path):
    path, decoded = video
    out = tmp_path / "off"
    run_segment(FakeSeg(), str(path), out, progress=False, overlays=False,
                temporal=TemporalConfig(enabled=False))
    d = json.loads((out / "segments.json").read_text())
    assert "temporal" not in d and all("temporal" not in f for f in d["frames"])
    ref = FakeSeg()
    for i, img in enumerate(decoded):
        res = ref(img)
        got = read_label_map(out / "labels" / f"frame_{i:06d}.png")
        assert np.array_equal(got, res.label_map)
        assert d["frames"][i]["segments"] == json.loads(json.dumps(segment_records(res)))
    # and a second off run writes the same bytes
    out2 = tmp_path / "off2"
    run_segment(FakeSeg(), str(path), out2, progress=False, overlays=False,
                temporal=TemporalConfig(enabled=False))
    for i in range(len(decoded)):
        name = f"labels/frame_{i:06d}.png"
        assert (out / name).read_bytes() == (out2 / name).read_bytes()
    assert strip_timings(d) == strip_timings(json.loads((out2 / "segments.json").read_text()))


def test_on_is_the_default_for_video_and_records_it(video, tmp_path):
    path, decoded = video
    fake = FakeSeg()
    out = tmp_path / "on"
    s = run_segment(fake, str(path), out, progress=False, overlays=False,
                    temporal=TemporalConfig(options=TemporalOptions(max_interval=4)))
    assert fake.calls < len(decoded)                      # propagated frames ran no model
    d = json.loads((out / "segments.json").read_text())
    t = d["temporal"]
    assert t["frames"] == len(decoded) and t["keyframes"] == fake.calls
    assert t["keyframe_reasons"].get("cut") == 1 and t["keyframe_reasons"]["first"] == 1
    assert t["consistency"]["pairs"] == len(decoded) - 2   # the cut pair is left out
    assert t["consistency"]["mean"] > 95
    assert {"amortised", "p50", "p95"} <= set(t["frame_ms"])
    assert s.temporal["keyframes"] == t["keyframes"]
    f1 = d["frames"][1]
    assert f1["temporal"]["keyframe"] is False
    assert all(isinstance(r["track_id"], int) for r in f1["segments"])
    # a track keeps its id and class until the cut
    ids0 = {r["track_id"]: r["track_class_name"] for r in d["frames"][0]["segments"]}
    ids5 = {r["track_id"]: r["track_class_name"] for r in d["frames"][5]["segments"]}
    assert ids0 == ids5
    ids6 = {r["track_id"] for r in d["frames"][6]["segments"]}
    assert not ids6 & set(ids0)


def test_vote_frames_are_recorded_in_segments_json(video, tmp_path):
    """``temporal.vote_every=2``: frames 2 and 4 of the first shot (and 8 of the second)
    are vote frames: each frame's ``temporal.kind`` says so, the summary counts them and
    only keyframes ran the full pipeline."""
    path, decoded = video

    class VotingFake(VotingSegmenter):
        bank = SimpleNamespace(class_names=CLASSES, background_index=None)

    fake = VotingFake()
    out = tmp_path / "votes"
    run_segment(fake, str(path), out, progress=False, overlays=False,
                temporal=TemporalConfig(options=TemporalOptions(max_interval=10,
                                                                vote_every=2)))
    d = json.loads((out / "segments.json").read_text())
    kinds = [f["temporal"]["kind"] for f in d["frames"]]
    assert kinds == ["keyframe", "propagated", "vote", "propagated", "vote", "propagated",
                     "keyframe", "propagated", "vote"]
    assert d["temporal"]["vote_frames"] == 3 == fake.relabels
    assert d["temporal"]["keyframes"] == 2 == fake.calls
    assert d["temporal"]["keyframe_reasons"] == {"first": 1, "cut": 1}
    ids0 = {r["track_id"] for r in d["frames"][0]["segments"]}
    assert {r["track_id"] for r in d["frames"][4]["segments"]} == ids0


def test_folders_stay_per_frame(video, tmp_path):
    _, decoded = video
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(decoded[:3]):
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    fake = FakeSeg()
    run_segment(fake, str(folder), tmp_path / "o", progress=False, overlays=False)
    assert fake.calls == 3
    assert "temporal" not in json.loads((tmp_path / "o" / "segments.json").read_text())


def test_temporal_settings_come_from_the_configuration(video, tmp_path):
    """``--set temporal.max_interval=2`` reaches the run through the segmenter's
    configuration (``run_segment(temporal=True)`` builds the TemporalConfig from it)."""
    from moduseg.settings import resolve_config
    path, decoded = video
    fake = FakeSeg()
    fake.full_config = resolve_config("default", ["temporal.max_interval=2"])
    out = tmp_path / "cfg"
    run_segment(fake, str(path), out, progress=False, overlays=False, temporal=True)
    t = json.loads((out / "segments.json").read_text())["temporal"]
    assert t["config"]["max_interval"] == 2
    # shot 1: frames 0..5 -> keyframes 0 (first), 2, 4 (interval); shot 2: 6 (cut), 8
    assert t["keyframe_reasons"] == {"first": 1, "cut": 1, "interval": 3}
    assert fake.calls == 5


def test_consistency_is_measured_off_the_frame_loop_with_the_same_values():
    """The TC worker thread (lower priority) gives each record exactly the value the
    meter gives inline, and the summary waits for it."""
    import os
    import time

    from moduseg.app.temporal import ConsistencyWorker
    from moduseg.temporal.consistency import ConsistencyMeter
    world, lab = canvas()
    frames = [crop(world, i, 0) for i in range(4)]
    labels = [crop(lab, i, 0) for i in range(4)]
    inline = ConsistencyMeter()
    want = [inline.add(f, lb) for f, lb in zip(frames, labels)]
    worker = ConsistencyWorker(ConsistencyMeter())
    for _ in range(100):                      # the thread lowers its own priority first
        if os.getpriority(os.PRIO_PROCESS, worker._thread.native_id) > os.getpriority(
                os.PRIO_PROCESS, 0) or os.getpriority(os.PRIO_PROCESS, 0) >= 19:
            break
        time.sleep(0.01)
    else:
        raise AssertionError("the TC thread kept the process's priority")
    records = [{} for _ in frames]
    for f, lb, rec in zip(frames, labels, records):
        worker.add(f, lb, False, rec)
    worker.finish()
    assert [r["consistency"] for r in records] == [
        None if w is None else round(w * 100, 3) for w in want]
    assert worker.meter.summary()["mean"] == inline.summary()["mean"]
    # a pair it cannot measure is said in the summary; the run goes on
    bad = ConsistencyWorker(ConsistencyMeter())
    bad.add(frames[0], labels[0], False, {})
    bad.add(frames[1], labels[1][:10], False, {})
    bad.finish()
    assert "ValueError" in bad.error
