"""Runtime vs the straightforward reference on the same inputs: identical labels, per-stage speed-ups.

Thin wrapper over ``moduseg bench reference``; takes the same options, e.g.
``python benchmarks/reference_compare.py --out bench-results --threads 1`` or ``--quick``.
"""

import sys

from moduseg.bench import bench_command

if __name__ == "__main__":
    sys.exit(bench_command.main(args=["reference", *sys.argv[1:]], prog_name="reference_compare.py"))
