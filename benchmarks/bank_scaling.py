"""Bank scaling: search latency, recall@25 and memory for flat, fp16 and IVF (and GPU) indexes.

Thin wrapper over ``moduseg bench scaling``; takes the same options, e.g.
``python benchmarks/bank_scaling.py --out bench-results --threads 1`` or ``--quick``.
"""

import sys

from moduseg.bench import bench_command

if __name__ == "__main__":
    sys.exit(bench_command.main(args=["scaling", *sys.argv[1:]], prog_name="bank_scaling.py"))
