"""Served streams keep their own memory: the per-instance table of stream states."""

import numpy as np
import pytest

from moduseg.errors import InputError
from moduseg.serve.sequences import SequenceTable, per_frame, stream_factory


def running_sum(segment):
    """A stateful stand-in for the temporal path: each result depends on the history."""
    total = [0]

    def step(image):
        total[0] += segment(image)
        return total[0]
    return step


def test_interleaved_streams_each_get_their_own_history():
    table = SequenceTable(lambda im: int(im.sum()), running_sum)
    a = [np.full((2, 2, 3), v, np.uint8) for v in (1, 2, 3)]
    b = [np.full((2, 2, 3), v, np.uint8) for v in (10, 20, 30)]
    out = {}
    order = [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    for sid, i in order:
        frames = a if sid == "a" else b
        out.setdefault(sid, []).append(table.step(sid, i == 0, i == 2, frames[i]))
    # the same as each stream alone
    for sid, frames in (("a", a), ("b", b)):
        alone = running_sum(lambda im: int(im.sum()))
        assert out[sid] == [alone(f) for f in frames]
    assert len(table) == 0 and table.started == 2      # END forgot both


def test_start_resets_a_stream_and_a_frame_without_start_is_refused():
    table = SequenceTable(lambda im: 1, running_sum)
    im = np.zeros((1, 1, 3), np.uint8)
    assert [table.step(7, i == 0, False, im) for i in range(3)] == [1, 2, 3]
    assert table.step(7, True, False, im) == 1          # a camera that restarts
    with pytest.raises(InputError, match="sequence_start=True"):
        table.step(8, False, False, im)


def test_idle_streams_are_forgotten():
    now = [0.0]
    table = SequenceTable(lambda im: 1, running_sum, idle_s=10.0, clock=lambda: now[0])
    im = np.zeros((1, 1, 3), np.uint8)
    table.step(1, True, False, im)
    table.step(2, True, False, im)
    now[0] = 5.0
    table.step(2, False, False, im)
    now[0] = 12.0
    table.step(2, False, False, im)     # 2 was active 7 s ago; 1 idle for 12 s
    assert sorted(table.states) == [2]


def test_stream_paths_are_named_or_refused():
    from moduseg.temporal import TemporalSegmenter

    assert stream_factory("per_frame") is per_frame
    assert isinstance(stream_factory("temporal")(lambda im, t=None: None), TemporalSegmenter)
    with pytest.raises(InputError, match="per_frame"):
        stream_factory("flow")
