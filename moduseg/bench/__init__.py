"""Benchmarks of the runtime: ``moduseg bench ...`` and ``benchmarks/*.py``.

``stages`` (per-stage latency), ``reference`` (runtime vs a straightforward
reference on the same inputs), ``scaling`` (bank size and index kind),
``video`` (real clips end to end). Results: JSON, markdown and PNG plots.
"""

from .cli import bench_command  # noqa: F401
from .suites import PROFILES, SUITES, run  # noqa: F401
