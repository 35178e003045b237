"""Every benchmark suite (``moduseg bench all``): under 10 minutes on 2 CPU cores by default.

``python benchmarks/run_all.py --out bench-results`` (``--quick`` for seconds,
``--full`` for the 1M-vector banks and more frames).
"""

import sys

from moduseg.bench import bench_command

if __name__ == "__main__":
    sys.exit(bench_command.main(args=["all", *sys.argv[1:]], prog_name="run_all.py"))
