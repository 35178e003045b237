"""The temporal on/off comparison and the clip generator, with a fake segmenter."""

from types import SimpleNamespace

import numpy as np

from moduseg.bench.clips import Shot, read_clip, shot_frames
from moduseg.bench.temporal import compare_input, detect_cuts, temporal_md
from temporal_fixtures import CLASSES, ColourSegmenter, canvas, crop


class FakeSeg(ColourSegmenter):
    bank = SimpleNamespace(class_names=CLASSES)


def test_compare_reports_the_three_measurements():
    world, lab = canvas()
    wb, lb = canvas(9)
    frames = [crop(world, i, 0) for i in range(5)] + \
        [np.ascontiguousarray(np.flipud(crop(wb, i, 0))) for i in range(4)]
    gts = [crop(lab, i, 0) for i in range(5)] + \
        [np.ascontiguousarray(np.flipud(crop(lb, i, 0))) for i in range(4)]
    assert detect_cuts(frames) == [5]
    r = compare_input(FakeSeg(), frames, gts, [5])
    assert r["on"]["keyframes"] == 2 and r["on"]["keyframe_reasons"] == {"first": 1, "cut": 1}
    assert r["off"]["tc"]["pairs"] == 7 and r["off"]["tc"]["cut_pairs_excluded"] == 1
    assert r["on"]["miou"] > 95 and r["off"]["miou"] > 95
    assert r["amortised_on_over_off"] > 0
    md = "\n".join(temporal_md({"inputs": {"synthetic": r}}))
    assert "| synthetic | on |" in md


def test_clip_shot_pans_and_zooms_with_matching_ground_truth(tmp_path):
    world, lab = canvas()
    shot = Shot("x", 5, 0.8, 0.6, (0.45, 0.5), (0.55, 0.5))
    pairs = list(shot_frames(world, lab, shot))
    assert len(pairs) == 5
    for img, gt in pairs:
        assert img.shape == world.shape and gt.shape == lab.shape
        # the labels sit where the colours are: red pixels are class 1
        red = (img[..., 0] > 150) & (img[..., 1] < 100)
        assert (gt[red] == 1).mean() > 0.9
    assert not np.array_equal(pairs[0][1], pairs[-1][1])


def test_make_clip_round_trip(tmp_path):
    from moduseg.bench.clips import make_clip

    class S:
        def __init__(self, i):
            self.image_id = f"SEQ_{i:03d}"
            self._w = canvas(i)

        def image(self):
            return self._w[0]

        def label(self):
            return self._w[1]

    meta = make_clip([S(i) for i in range(4)], tmp_path / "c", n_shots=2, min_frames=3,
                     max_frames=4)
    frames, gts, starts = read_clip(tmp_path / "c")
    assert len(frames) == len(gts) == meta["frames"] and starts == meta["shot_starts"]
    assert starts[0] == 0 and 3 <= starts[1] <= 4


def test_the_comparison_takes_the_temporal_settings_of_the_configuration(tmp_path):
    """``bench video --set temporal.max_interval=2``: the run's configuration decides the
    temporal path on every input, and the result records it; ``frames=0`` skips the
    videos (the clips only)."""
    from moduseg.bench.temporal import run_temporal
    from moduseg.settings import resolve_config
    world, _ = canvas()
    seg = FakeSeg()
    seg.full_config = resolve_config("default", ["temporal.max_interval=2"])
    frames = [crop(world, i, 0) for i in range(5)]
    r = compare_input(seg, frames)
    assert r["on"]["keyframe_reasons"] == {"first": 1, "interval": 2}
    out = run_temporal(None, seg, {"v": tmp_path / "missing.mp4"}, tmp_path, 0, clips=False,
                       show_progress=False)
    assert out["inputs"] == {} and out["temporal_config"]["max_interval"] == 2


def test_held_out_clips_use_other_stills_than_the_bench_clips():
    """The held-out clip sets (for checking a setting tuned on the bench's clips) place
    their shots on other stills of the same sequence, with other seeds."""
    from moduseg.bench.clips import HELD_OUT, HELD_OUT_2, HELD_OUT_3, HELD_OUT_4, plan_shots
    stills = [f"SEQ_{i:03d}" for i in range(60)]
    dev = plan_shots(stills, 2, np.random.default_rng(0))
    held = plan_shots(stills, 2, np.random.default_rng(HELD_OUT["seed"]),
                      place=HELD_OUT["place"])
    assert [s.still for s in dev] == ["SEQ_020", "SEQ_039"]      # 1/3 and 2/3 of the way
    assert [s.still for s in held] == ["SEQ_010", "SEQ_049"]     # 1/6 and 5/6
    assert not {s.still for s in dev} & {s.still for s in held}
    third = plan_shots(stills, 2, np.random.default_rng(HELD_OUT_2["seed"]),
                       place=HELD_OUT_2["place"])
    assert [s.still for s in third] == ["SEQ_025", "SEQ_054"]    # 5/12 and 11/12
    assert not {s.still for s in third} & ({s.still for s in dev} | {s.still for s in held})
    fourth = plan_shots(stills, 2, np.random.default_rng(HELD_OUT_3["seed"]),
                        place=HELD_OUT_3["place"])
    assert [s.still for s in fourth] == ["SEQ_015", "SEQ_034"]   # 3/12 and 7/12
    assert not {s.still for s in fourth} & {s.still for s in dev + held + third}
    fifth = plan_shots(stills, 2, np.random.default_rng(HELD_OUT_4["seed"]),
                       place=HELD_OUT_4["place"])
    assert [s.still for s in fifth] == ["SEQ_005", "SEQ_044"]    # 1/12 and 9/12
    assert not {s.still for s in fifth} & {s.still for s in dev + held + third + fourth}
    assert len({HELD_OUT["seed"], HELD_OUT_2["seed"], HELD_OUT_3["seed"], HELD_OUT_4["seed"],
                0, 1, 2}) == 7
    import pytest
    with pytest.raises(ValueError, match="2 positions for 3 shots"):
        plan_shots(stills, 3, np.random.default_rng(0), place=(0.1, 0.2))


def test_replay_gives_the_live_temporal_paths_labels_and_scores():
    """benchmarks temporal-replay: the temporal path over cached per-frame results gives
    the labels a live run gives (the pipeline is stateless), so its mIoU and keyframes are
    exact; a shorter interval takes more keyframes."""
    from benchmarks.temporal_replay import replay_one
    from moduseg.config import TemporalOptions
    from moduseg.evaluate import Evaluator
    from moduseg.temporal import TemporalConfig, TemporalSegmenter

    class Flicker(FakeSeg):
        """Stateless: on every third frame of the pan (by its content) green is voted red."""
        def __call__(self, image, timer=None):
            self.calls = 2 if self.flip and _frame_of(image) % 3 == 2 else 0
            return super().__call__(image, timer)

    world, lab = canvas()
    frames = [crop(world, 2 * i, i) for i in range(10)]
    gts = [crop(lab, 2 * i, i) for i in range(10)]

    def _frame_of(image):
        return next(i for i, f in enumerate(frames) if np.array_equal(f, image))

    cached = {"results": [(Flicker(flip=True)(f), 100.0) for f in frames], "gts": gts,
              "bank": FakeSeg.bank}
    for interval, want_keys in ((8, 2), (4, 3)):
        cfg = TemporalConfig(options=TemporalOptions(max_interval=interval))
        row = replay_one(cfg, frames, cached, [])
        live = TemporalSegmenter(Flicker(flip=True), cfg)
        live_labels = [live(f).label_map for f in frames]
        live.close()
        assert round(row["keyframe_rate"] * 10) == want_keys == live.state.keyframes
        assert row["miou_on"] > row["miou_off"]        # the memory outvotes the flips
        assert row["estimated_cost_on_over_off"] >= row["keyframe_rate"]
        ev = Evaluator(CLASSES)                        # the live labels score the same
        for la, g in zip(live_labels, gts):
            ev.add(la, g)
        assert round(ev.scores().miou, 2) == row["miou_on"]
