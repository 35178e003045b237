"""Research benchmarks on real data (CamVid, coco128, the shared videos).

One command line: ``python -m benchmarks STUDY [OPTIONS]`` from the repository root
(``python -m benchmarks --help`` lists the studies). The suites that ship with the
package (per-stage latency, bank scaling, video) are ``moduseg bench``; these studies
need the repository's data layout (``../shared/data``) and are not part of the wheel.
"""
