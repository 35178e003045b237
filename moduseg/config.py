"""One configuration object for every hyper-parameter of ModuSeg.

No environment variables: a ``ModuSegConfig`` is passed explicitly, saved
inside each bank and each result, and built from a named preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import InputError

UNASSIGNED_POLICIES = ("background", "ignore", "nearest")
INDEX_KINDS = ("auto", "flat", "flat_fp16", "ivf")
PURIFICATIONS = ("fixed", "adaptive", "none")
AGGREGATIONS = ("soft", "hard")
GRANULARITIES = ("class", "component", "patch")
ASSIGNMENTS = ("pooled", "patch_vote", "patch")
VOTINGS = ("count", "weighted")


@dataclass
class BankConfig:
    """Offline: how label maps become bank vectors."""

    erosion_kernel: int = 3
    erosion_iterations: int = 20
    # fixed: erode `erosion_iterations` times; adaptive: erode at most that many
    # times while at least `adaptive_keep` of the region remains; none: no erosion.
    purification: str = "fixed"
    adaptive_keep: float = 0.5
    min_area: int = 300
    outlier_fraction: float = 0.25
    # soft: area-interpolated weights (SMFA); hard: nearest-neighbour 0/1 weights.
    aggregation: str = "soft"
    # class: one vector per (image, class); component: one per connected component;
    # patch: the patch features themselves, for patches at least `patch_purity` inside
    # the (purified) region, at most `patches_per_region` of them, spread over the region.
    granularity: str = "class"
    component_min_area: int = 300
    patch_purity: float = 0.9
    patches_per_region: int = 8
    # thin regions (poles, signs) rarely fill a patch: when no patch reaches
    # patch_purity, take the region's best-covered patches down to this coverage
    # (1.0 = off).
    patch_fallback_purity: float = 1.0
    dtype: str = "float16"
    # project the bank (and every query) onto the top `pca_dim` principal axes of the
    # bank's own vectors after centring on their mean (0 = off); `whiten` also scales
    # each axis to unit variance. Training-free: statistics of the bank only.
    pca_dim: int = 0
    whiten: bool = False
    # at most this many vectors per class, evenly spread over the build order (so over
    # the images); 0 = no cap. Frequent classes (road, sky, building) otherwise fill
    # most of a patch bank and most of every top-K.
    max_per_class: int = 0
    # subtract each image's mean patch feature before anything else, in the bank and
    # at run time (the bank records it): removes what a whole frame shares (light,
    # camera, weather), which differs between sequences more than between classes
    center_image: bool = False
    eps: float = 1e-6

    def validate(self) -> None:
        if not isinstance(self.max_per_class, int) or self.max_per_class < 0:
            raise InputError(f"bank.max_per_class must be an integer >= 0 (0 = no cap), got "
                             f"{self.max_per_class!r}")
        if not isinstance(self.pca_dim, int) or self.pca_dim < 0:
            raise InputError(f"bank.pca_dim must be an integer >= 0 (0 = off), got "
                             f"{self.pca_dim!r}")
        _check_choice("bank.purification", self.purification, PURIFICATIONS)
        _check_choice("bank.aggregation", self.aggregation, AGGREGATIONS)
        _check_choice("bank.granularity", self.granularity, GRANULARITIES)
        _check_choice("bank.dtype", self.dtype, ("float16", "float32"))
        if self.erosion_kernel < 1 or self.erosion_iterations < 0:
            raise InputError("bank.erosion_kernel must be >= 1 and erosion_iterations >= 0")
        if not 0.0 <= self.outlier_fraction < 1.0:
            raise InputError(
                f"bank.outlier_fraction must be in [0, 1), got {self.outlier_fraction}; "
                f"use 0 to keep every vector")
        if not 0.0 < self.adaptive_keep <= 1.0:
            raise InputError("bank.adaptive_keep must be in (0, 1]")
        if self.min_area < 0:
            raise InputError("bank.min_area must be >= 0")
        if not 0.0 < self.patch_purity <= 1.0 or self.patches_per_region < 1:
            raise InputError("bank.patch_purity must be in (0, 1] and patches_per_region >= 1")


@dataclass
class RuntimeConfig:
    """Online: how proposals become a label map."""

    min_objectness: float = 0.6
    min_area: int = 300
    top_k: int = 25
    nms_iou: float = 0.4
    unassigned: str = "background"
    index: str = "auto"
    # count: majority vote, ties by summed similarity (the paper);
    # weighted: votes weighted by similarity and divided by class frequency in the bank.
    voting: str = "count"
    # pooled: each proposal's SMFA vector is retrieved (the paper); patch_vote: every
    # patch is retrieved once, and each proposal takes the class with the most
    # patch votes under its soft weights (unassigned pixels reuse the patch labels);
    # patch: no proposer at all, every pixel takes its patch's label (then the
    # guided refinement snaps the map to the frame's edges).
    assignment: str = "pooled"
    nprobe: int = 32
    # edge-aware refinement of the final label map with the frame as guide (guided
    # filter of each class indicator, radius in pixels); 0 = off (the paper)
    refine_radius: int = 0
    refine_eps: float = 1e-3
    # video: reuse the previous frame's proposals when the frame changed little (mean
    # absolute grey difference on a 64x48 thumbnail below this, 0-255 scale; 0 = off),
    # for at most `reuse_max_age` frames in a row. The backbone still runs every frame.
    reuse_proposals_below: float = 0.0
    reuse_max_age: int = 1
    eps: float = 1e-6

    def validate(self) -> None:
        _check_choice("runtime.unassigned", self.unassigned, UNASSIGNED_POLICIES)
        _check_choice("runtime.index", self.index, INDEX_KINDS)
        _check_choice("runtime.voting", self.voting, VOTINGS)
        _check_choice("runtime.assignment", self.assignment, ASSIGNMENTS)
        if not isinstance(self.top_k, int) or self.top_k <= 0:
            raise InputError(f"runtime.top_k must be a positive integer, got {self.top_k!r}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise InputError(f"runtime.nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.refine_radius < 0 or self.refine_eps <= 0:
            raise InputError("runtime.refine_radius must be >= 0 (0 = off) and "
                             "runtime.refine_eps > 0")
        if self.nprobe <= 0:
            raise InputError("runtime.nprobe must be positive")
        if self.reuse_proposals_below < 0 or self.reuse_max_age < 0:
            raise InputError("runtime.reuse_proposals_below and reuse_max_age must be >= 0")


@dataclass
class ModuSegConfig:
    bank: BankConfig = field(default_factory=BankConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    # keyword options for the backbone and proposer constructors (e.g. short_side,
    # points_per_side); empty means each model's own defaults.
    backbone: dict = field(default_factory=dict)
    proposer: dict = field(default_factory=dict)
    preset: str = "paper"

    def backbone_options(self) -> dict:
        return dict(self.backbone)

    def proposer_options(self) -> dict:
        return dict(self.proposer)

    def validate(self) -> "ModuSegConfig":
        self.bank.validate()
        self.runtime.validate()
        return self

    @property
    def needs_proposer(self) -> bool:
        return self.runtime.assignment != "patch"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModuSegConfig":
        try:
            return cls(bank=BankConfig(**d.get("bank", {})),
                       runtime=RuntimeConfig(**d.get("runtime", {})),
                       backbone=dict(d.get("backbone", {})),
                       proposer=dict(d.get("proposer", {})),
                       preset=d.get("preset", "custom")).validate()
        except TypeError as e:
            raise InputError(f"configuration has an unknown key: {e}") from None

    def with_overrides(self, **dotted) -> "ModuSegConfig":
        """``cfg.with_overrides(**{"runtime.top_k": 10})`` -> a new config."""
        d = self.to_dict()
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            free = section in ("backbone", "proposer") and name
            if not free and (section not in ("bank", "runtime") or name not in d[section]):
                raise InputError(
                    f"unknown setting {key!r}; settings are bank.<name>, runtime.<name>, "
                    f"backbone.<option> or proposer.<option>: "
                    f"{sorted('bank.' + k for k in d['bank'])} "
                    f"{sorted('runtime.' + k for k in d['runtime'])}")
            d[section][name] = value
        d["preset"] = self.preset + "+custom" if dotted else self.preset
        return ModuSegConfig.from_dict(d)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}, got {value!r}")


def paper_config() -> ModuSegConfig:
    """The recipe as the ModuSeg paper states it."""
    return ModuSegConfig(preset="paper")


def default_config() -> ModuSegConfig:
    """The recommended configuration, chosen by the leave-one-sequence-out
    CamVid protocol (README, "Quality"; ``benchmarks/cross_sequence.py``).

    DINOv2 blocks 9 and 11 concatenated (intermediate features carry the
    local appearance that transfers across sequences; same forward pass). The
    bank keeps patch features of patches at least 75% inside a labelled
    region (8 per region, spread over it; a thin region with no such patch
    gives its best-covered patches down to 40%), with no erosion and no outlier
    rejection (street classes are multimodal, thin ones vanish under 20
    erosions), projected onto the bank's own 128 principal axes and whitened
    (a smaller bank and search, and no single direction dominating the
    cosine). Every patch of a frame is retrieved once (top 10, IVF: ~900
    queries a frame) and each proposal takes the class most of its soft weight
    votes for; pixels no proposal claims take their patch's label; a guided
    filter (radius 8) snaps the map to the frame's edges.
    """
    return ModuSegConfig(
        bank=BankConfig(granularity="patch", purification="none", min_area=0,
                        outlier_fraction=0.0, patch_purity=0.75, patches_per_region=8,
                        patch_fallback_purity=0.4, pca_dim=128, whiten=True),
        runtime=RuntimeConfig(assignment="patch_vote", top_k=10, unassigned="nearest",
                              index="ivf", refine_radius=8),
        backbone={"layers": (9, 11)},
        preset="default")


def fast_config() -> ModuSegConfig:
    """No proposer (SAM is not even loaded): the default's bank recipe, every patch retrieved,
    each pixel takes its patch's label and a wider guided filter (radius 16) puts the
    class edges on the frame's edges; a smaller pixel budget for the backbone.
    Chosen by the leave-one-sequence-out mean (README, "Quality").
    """
    cfg = default_config()
    cfg.runtime.assignment = "patch"
    cfg.runtime.refine_radius = 16
    cfg.backbone["pixels"] = 100_000
    cfg.preset = "fast"
    return cfg


PRESETS = {"paper": paper_config, "default": default_config, "fast": fast_config}


def preset(name: str) -> ModuSegConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]().validate()
