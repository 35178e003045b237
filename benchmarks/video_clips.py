"""Make the moving-camera CamVid clips (pan + zoom over labelled stills, hard cuts).

    python -m benchmarks video-clips --out /tmp/camvid-clips          # 3 clips, 2 shots each

Each ``<out>/<sequence>/`` holds clip.mp4 (30 fps), gt/frame_NNNNNN.png and clip.json.
``moduseg bench video`` makes and uses them itself (docs/guides/video.md); the
generator is ``moduseg.bench.clips``.
"""

import json
from pathlib import Path

import click

from moduseg.bench.clips import SEQUENCES, make_camvid_clips
from moduseg.bench.common import default_data_root


@click.command("video-clips", help=__doc__.splitlines()[0])
@click.option("--out", required=True, type=click.Path(), help="Folder for the clips.")
@click.option("--data", default=None, type=click.Path(),
              help="Data root (default: ../shared/data).")
@click.option("--sequences", default=",".join(SEQUENCES), show_default=True)
@click.option("--shots", type=click.IntRange(1, 20), default=2, show_default=True,
              help="Shots per clip (30-40 frames each, joined by hard cuts).")
@click.option("--seed", type=int, default=0, show_default=True)
def command(out, data, sequences, shots, seed):
    made = make_camvid_clips(Path(data) if data else default_data_root(), Path(out),
                             sequences.split(","), shots, seed)
    click.echo(json.dumps({k: {"frames": v["frames"], "shot_starts": v["shot_starts"]}
                           for k, v in made.items()}, indent=1))
