"""Per-stage latency of one frame (decode ... rasterisation), median/p90/p99.

Thin wrapper over ``moduseg bench stages``; takes the same options, e.g.
``python benchmarks/runtime_stages.py --out bench-results --threads 1`` or ``--quick``.
"""

import sys

from moduseg.bench import bench_command

if __name__ == "__main__":
    sys.exit(bench_command.main(args=["stages", *sys.argv[1:]], prog_name="runtime_stages.py"))
