"""Benchmarks of the runtime: ``moduseg bench ...``.

``stages`` (per-stage latency), ``scaling`` (bank size and index kind), ``video``
(real clips end to end), ``serve`` (Triton). Results: JSON, markdown and PNG plots.
The research studies (and the runtime-vs-reference comparison, whose reference is
test code) are ``python -m benchmarks`` in the repository, not in the wheel.
"""

from .cli import bench_command  # noqa: F401
from .suites import PROFILES, SUITES, run  # noqa: F401
