"""What a playable overlay video costs: H.264 (PyAV, libx264) vs MPEG-4 Part 2 (OpenCV).

``overlay.mp4`` is H.264 so browsers play it; this measures the encoder's
milliseconds per frame on the shared videos, with overlay-like frames (the
frame blended with a coarse colour label map, as ``render_overlay`` does),
the two encoders alternated ``--rounds`` times, medians reported.

    python -m benchmarks overlay-video --frames 60 --rounds 3
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import click
import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "video"


def overlay_frames(video: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        # a coarse "label map": hue bins, coloured and blended like an overlay
        hue = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 0] // 16
        colours = (np.random.default_rng(0).integers(60, 255, (16, 3))).astype(np.uint8)
        frames.append(cv2.addWeighted(rgb, 0.55, colours[hue], 0.45, 0.0))
    cap.release()
    if not frames:
        raise click.ClickException(f"no frame read from {video}")
    return frames


def encode_h264(frames, path: Path) -> float:
    from moduseg.app.encode import OverlayVideo
    t = time.perf_counter()
    v = OverlayVideo(path, 25.0)
    for f in frames:
        v.write(f)
    v.close()
    assert v.encoding.codec == "h264"
    return (time.perf_counter() - t) * 1e3 / len(frames)


def encode_mp4v(frames, path: Path) -> float:
    t = time.perf_counter()
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w - w % 2, h - h % 2))
    for f in frames:
        wr.write(cv2.cvtColor(f[:h - h % 2, :w - w % 2], cv2.COLOR_RGB2BGR))
    wr.release()
    return (time.perf_counter() - t) * 1e3 / len(frames)


@click.command()
@click.option("--frames", type=click.IntRange(1, 2000), default=60, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--video", "videos", multiple=True, type=click.Path(exists=True),
              help="Videos to encode (default: ../shared/data/video/bikes.mp4 and vtest.avi).")
def command(frames, rounds, videos):
    """Milliseconds per frame to encode overlay frames: H.264 (PyAV) vs mp4v (OpenCV)."""
    videos = [Path(v) for v in videos] or [DATA / "bikes.mp4", DATA / "vtest.avi"]
    with tempfile.TemporaryDirectory() as tmp:
        for video in videos:
            fr = overlay_frames(video, frames)
            h, w = fr[0].shape[:2]
            times = {"h264": [], "mp4v": []}
            sizes = {}
            for _ in range(rounds):
                for name, fn in (("h264", encode_h264), ("mp4v", encode_mp4v)):
                    out = Path(tmp) / f"{name}.mp4"
                    times[name].append(fn(fr, out))
                    sizes[name] = out.stat().st_size
            click.echo(f"{video.name} ({w}x{h}, {len(fr)} frames, {rounds} alternated rounds): "
                       + "; ".join(f"{k} {statistics.median(v):.1f} ms/frame, "
                                   f"{sizes[k] / len(fr) / 1024:.1f} KiB/frame"
                                   for k, v in times.items()))
