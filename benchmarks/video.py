"""Real video and an image folder end to end with the default models (fps, stage medians).

Thin wrapper over ``moduseg bench video``; takes the same options, e.g.
``python benchmarks/video.py --out bench-results --threads 1`` or ``--quick``.
"""

import sys

from moduseg.bench import bench_command

if __name__ == "__main__":
    sys.exit(bench_command.main(args=["video", *sys.argv[1:]], prog_name="video.py"))
