"""The work items of the scale-out engines (``moduseg.scale.work``), without Ray."""

from moduseg.scale.work import VideoTask
from moduseg.settings import resolve_config
from temporal_fixtures import ColourSegmenter, canvas, crop


def test_a_video_task_runs_the_temporal_path_with_the_recipes_settings():
    """``--engine ray --set temporal.max_interval=2`` on a video: the actor's segmenter is
    built from the recipe's configuration, and the temporal path reads its ``temporal``
    section (keyframes every 2 frames); ``temporal=False`` is per frame."""
    world, _ = canvas()

    def models():
        seg = ColourSegmenter()
        seg.full_config = resolve_config("default", ["temporal.max_interval=2"])
        return seg

    def open_frames(key):
        return [crop(world, 2 * i, 0) for i in range(6)]

    task = VideoTask(models, open_frames)
    out = list(task.setup()("clip"))
    assert [r.keyframe for r in out] == [True, False, True, False, True, False]
    assert [r.reason for r in out if r.keyframe] == ["first", "interval", "interval"]
    per_frame = list(VideoTask(models, open_frames, temporal=False).setup()("clip"))
    assert not any(hasattr(r, "keyframe") for r in per_frame)
