"""``python -m benchmarks STUDY [OPTIONS]``: the research studies behind docs/results.md."""

from __future__ import annotations

import importlib
import sys

import click

from moduseg.cli_options import one_line_errors

# study name -> module (each defines a click command named ``command``), imported only
# when the study runs, so ``--help`` is quick and one study's imports cannot break another
STUDIES = {
    "cross-sequence": "cross_sequence",
    "loso-diagnostics": "loso_diagnostics",
    "ablation": "ablation",
    "speed-quality": "speed_quality",
    "proposer-oracle": "proposer_oracle",
    "sam-content-crop": "sam_content_crop",
    "scale-out": "scale_out",
    "reference": "reference",
    "classes": "classes",
    "overlay-video": "overlay_video",
    "video-clips": "video_clips",
    "temporal-replay": "temporal_replay",
    "keyframe-cost": "keyframe_cost",
}


class Studies(click.Group):
    def list_commands(self, ctx):
        return sorted(STUDIES)

    def get_command(self, ctx, name):
        if name not in STUDIES:
            return None
        return importlib.import_module(f"benchmarks.{STUDIES[name]}").command

    def invoke(self, ctx):
        # a study's bad input (an output path that is a folder, ...) is one line, exit 2
        with one_line_errors(ctx):
            return super().invoke(ctx)


@click.group(cls=Studies)
def cli():
    """Research benchmarks on real data (run from the repository root)."""


def main(argv=None):
    return cli.main(args=argv, prog_name="python -m benchmarks")


if __name__ == "__main__":
    sys.exit(main())
