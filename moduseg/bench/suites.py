"""Named suites and profiles (quick for CI, default under 10 min here, full)."""

from __future__ import annotations

import shlex
import sys
import time
from datetime import datetime, timezone

from ..errors import InputError

SUITES = ("stages", "scaling", "video")

PROFILES: dict[str, dict[str, dict]] = {
    "quick": {
        "stages": dict(proposals=(10, 25), frames=3, warmup=1, bank_size=2_000, dim=64,
                       n_scenes=1, models="off"),
        "scaling": dict(sizes=(500, 2_000), dims=(32,), repeats=1, n_clusters=32),
        "video": dict(max_frames=1, folder_frames=1, batch_sizes=(1,), build_limit=4,
                      temporal_frames=3, clips=False),
    },
    "default": {
        "stages": dict(proposals=(25, 50, 100, 200), frames=20, warmup=3, model_frames=2),
        "scaling": dict(sizes=(1_000, 10_000, 100_000), dims=(384, 1152), repeats=3),
        "video": dict(max_frames=2, folder_frames=2, batch_sizes=(1, 2), temporal_frames=60),
    },
    "full": {
        "stages": dict(proposals=(25, 50, 100, 200, 400), frames=100, warmup=5,
                       model_frames=10),
        "scaling": dict(sizes=(1_000, 10_000, 100_000, 1_000_000), dims=(384, 1152),
                        repeats=5),
        "video": dict(max_frames=30, folder_frames=30, batch_sizes=(1, 2, 4),
                      temporal_frames=120),
    },
}


def suite_options(suite: str, profile: str, overrides: dict | None = None) -> dict:
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    opts = dict(PROFILES[profile][suite])
    opts.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return opts


def run_suite(suite: str, opts: dict, progress: bool = True) -> dict:
    if suite == "stages":
        from .stages import run_stages
        return run_stages(show_progress=progress, **opts)
    if suite == "scaling":
        from .scaling import run_scaling
        return run_scaling(show_progress=progress, **opts)
    if suite == "video":
        from .video import run_video
        return run_video(show_progress=progress, **opts)
    raise InputError(f"unknown suite {suite!r}; choose from {SUITES} or all")


def run(suites, profile: str = "default", overrides: dict | None = None,
        threads: int | None = None, progress: bool = True, command: str | None = None) -> dict:
    """Run the named suites; ``overrides`` maps suite -> options. Returns the result dict."""
    from .stats import machine_info, set_threads

    set_threads(threads)
    everything = suites in ("all", ["all"], ("all",))
    names = list(SUITES) if everything else list(suites)
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    if everything and not (overrides.get("stages") or {}).get("models"):
        # the video suite runs the models anyway: take their stage times from it
        overrides.setdefault("stages", {})["models"] = "off"
    res = {"schema": "moduseg-bench/1",
           "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": command or " ".join(shlex.quote(a) for a in sys.argv),
           "profile": profile, "threads": threads, "machine": machine_info(),
           "suites": {}, "seconds": {}}
    for name in names:
        opts = suite_options(name, profile, (overrides or {}).get(name))
        t0 = time.perf_counter()
        res["suites"][name] = run_suite(name, opts, progress)
        res["suites"][name].setdefault("options", {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in opts.items()
                                                   if not k.startswith("data")})
        res["seconds"][name] = round(time.perf_counter() - t0, 1)
    merge_model_stages(res["suites"])
    return res


def merge_model_stages(suites: dict) -> None:
    """Fill the one-frame table's backbone/proposer rows from the video suite's CamVid
    folder run when the stages suite did not run the models itself."""
    st, vid = suites.get("stages"), suites.get("video") or {}
    src = (vid.get("folder") or {}).get("stages")
    if not st or not src or "backbone" in st["frame"]["stages"]:
        return
    frame = st["frame"]["stages"]
    merged = {k: frame[k] for k in ("decode", "preprocess") if k in frame}
    for k in ("backbone", "proposer"):
        if k in src:
            merged[k] = dict(src[k], note="from the video suite (CamVid val folder, includes "
                                          "preprocessing)" if k == "backbone" else
                             "from the video suite (CamVid val folder)")
    merged.update({k: v for k, v in frame.items() if k not in merged and k != "total"})
    merged["total"] = {"median": round(sum(v["median"] for k, v in merged.items()
                                           if v.get("median") is not None), 4),
                       "note": "sum of stage medians"}
    st["frame"]["stages"] = merged
    for k in ("backbone", "proposer"):
        st.get("skipped", {}).pop(k, None)
