"""Make the moving-camera CamVid clips (pan + zoom over labelled stills, hard cuts).

    python benchmarks/video_clips.py --out /tmp/camvid-clips            # 3 clips, 2 shots each
    python benchmarks/video_clips.py --out clips --shots 3 --seed 1

Each ``<out>/<sequence>/`` holds clip.mp4 (30 fps), gt/frame_NNNNNN.png and clip.json.
``moduseg bench video`` makes and uses them itself (see docs/guides/video.md).
"""

import argparse
import json
from pathlib import Path

from moduseg.bench.clips import SEQUENCES, make_camvid_clips
from moduseg.bench.common import default_data_root

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="data root (default: ../shared/data)")
    ap.add_argument("--sequences", default=",".join(SEQUENCES))
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    made = make_camvid_clips(Path(a.data) if a.data else default_data_root(), Path(a.out),
                             a.sequences.split(","), a.shots, a.seed)
    print(json.dumps({k: {"frames": v["frames"], "shot_starts": v["shot_starts"]}
                      for k, v in made.items()}, indent=1))
