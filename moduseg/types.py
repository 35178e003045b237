"""Typed values that flow between the stages.

Backbone -> ``FeatureMap``; proposer -> ``Proposals``; bank builder ->
``Bank``; runtime -> ``SegmentationResult``. Stages only exchange these, so
any backbone or proposer plugs in through the ``Backbone`` and ``Proposer``
protocols without the runtime importing a concrete model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import BankError, InputError
from .labels import IGNORE, UNKNOWN, UNKNOWN_NAME  # noqa: F401 - label values, re-exported


@dataclass(frozen=True)
class GridGeometry:
    """Where the backbone's patch grid lies on the original image.

    The image (``image_hw``) was resized to ``resized_hw`` and placed at the
    top-left of a zero-padded network input of ``grid_hw * patch`` pixels.
    Every mask-to-grid projection goes through this, so SMFA weights line up
    with the padded grid whatever the resize policy.
    """

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    grid_hw: tuple[int, int]
    patch: int

    def __post_init__(self):
        (H, W), (rh, rw), (h, w) = self.image_hw, self.resized_hw, self.grid_hw
        if min(H, W, rh, rw, h, w, self.patch) <= 0:
            raise InputError(f"GridGeometry needs positive sizes, got {self}")
        if rh > h * self.patch or rw > w * self.patch:
            raise InputError(
                f"GridGeometry: resized image {self.resized_hw} does not fit the "
                f"padded grid {self.grid_hw} x patch {self.patch}")

    @property
    def padded_hw(self) -> tuple[int, int]:
        return (self.grid_hw[0] * self.patch, self.grid_hw[1] * self.patch)

    @classmethod
    def unpadded(cls, image_hw, grid_hw, patch) -> "GridGeometry":
        """The grid covers the image exactly (image stretched to the grid)."""
        return cls(tuple(image_hw), (grid_hw[0] * patch, grid_hw[1] * patch),
                   tuple(grid_hw), patch)


@dataclass
class FeatureMap:
    """Patch features ``[D, h, w]`` (float32) and the grid they sit on."""

    features: np.ndarray
    geometry: GridGeometry
    # the same features still on the GPU (``runtime.cuda.smfa_gpu.DeviceFeatures``,
    # e.g. a TensorRT output buffer), for a device pooler; None on the host path
    device: object = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        f = self.features
        if not isinstance(f, np.ndarray) or f.ndim != 3:
            raise InputError(
                f"FeatureMap.features must be a [D, h, w] array, got "
                f"{getattr(f, 'shape', type(f))}")
        if tuple(f.shape[1:]) != tuple(self.geometry.grid_hw):
            raise InputError(
                f"FeatureMap.features grid {f.shape[1:]} does not match the geometry's "
                f"grid {self.geometry.grid_hw}")

    @property
    def dim(self) -> int:
        return int(self.features.shape[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.geometry.image_hw

    def check_finite(self, what: str = "backbone features") -> None:
        if not np.isfinite(self.features).all():
            bad = int((~np.isfinite(self.features)).sum())
            raise InputError(
                f"{what} contain {bad} NaN or infinite values; check the model file and "
                f"the input image (an FP16 engine overflowing is a common cause)")


@dataclass
class Proposals:
    """Class-agnostic masks ``[P, Hm, Wm]`` covering the whole image.

    ``Hm, Wm`` may be lower than the image resolution (for example SAM's
    low-resolution logits); ``image_hw`` states the image they describe.
    Scores are objectness in [0, 1].
    """

    masks: np.ndarray
    scores: np.ndarray
    image_hw: tuple[int, int]

    def __post_init__(self):
        m, s = self.masks, np.asarray(self.scores, dtype=np.float32)
        if not isinstance(m, np.ndarray) or m.ndim != 3:
            raise InputError(
                f"Proposals.masks must be a [P, H, W] array, got "
                f"{getattr(m, 'shape', type(m))}; stack single masks with np.stack")
        if s.ndim != 1 or s.shape[0] != m.shape[0]:
            raise InputError(
                f"Proposals.scores must have one score per mask: {s.shape} scores for "
                f"{m.shape[0]} masks")
        if m.dtype != np.bool_:
            m = m.astype(bool)
        self.masks, self.scores = m, s
        self.image_hw = (int(self.image_hw[0]), int(self.image_hw[1]))

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def mask_hw(self) -> tuple[int, int]:
        return (int(self.masks.shape[1]), int(self.masks.shape[2]))

    def areas(self) -> np.ndarray:
        """Mask areas in image pixels (scaled when masks are low resolution)."""
        (H, W), (h, w) = self.image_hw, self.mask_hw
        return self.masks.reshape(len(self), h * w).sum(1) * (H * W / float(h * w))

    def select(self, keep) -> "Proposals":
        return Proposals(self.masks[keep], self.scores[keep], self.image_hw)

    @classmethod
    def empty(cls, image_hw, mask_hw=None) -> "Proposals":
        mh, mw = mask_hw or image_hw
        return cls(np.zeros((0, mh, mw), bool), np.zeros(0, np.float32), image_hw)


@dataclass(frozen=True)
class BackboneIdentity:
    """What a bank's vectors were computed with; banks refuse other backbones."""

    name: str
    input_size: str
    patch_size: int
    feature_dim: int
    weights_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneIdentity":
        return cls(name=str(d["name"]), input_size=str(d["input_size"]),
                   patch_size=int(d["patch_size"]), feature_dim=int(d["feature_dim"]),
                   weights_sha256=str(d["weights_sha256"]))


# the default backbone input: about 480 x 360 pixels, no fixed short side
DEFAULT_SHORT_SIDE = None
DEFAULT_PIXELS = 480 * 360


def is_int(v) -> bool:
    """An integer as parsed JSON gives it (``True`` is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def input_size_tag(policy: str, short_side: int | None,
                   fixed_hw: tuple[int, int] | None = None, pixels: int | None = None,
                   normalize: str = "dataset") -> str:
    """How inputs are sized (and, unless ``dataset``, normalised), as recorded in
    ``BackboneIdentity.input_size``: a bank only matches inputs prepared alike."""
    norm = "" if normalize == "dataset" else f":norm-{normalize}"
    if fixed_hw is not None:
        return f"{policy}:fixed{int(fixed_hw[0])}x{int(fixed_hw[1])}{norm}"
    if not short_side and pixels:
        return f"{policy}:pixels{int(pixels)}{norm}"
    return f"{policy}:short{int(short_side) if short_side else 'native'}{norm}"


def check_identity(have: BackboneIdentity, want: BackboneIdentity, where="bank",
                   fix: str | None = None) -> None:
    """A bank only matches the backbone (and input policy) that built it."""
    diffs = [f"{k}: bank has {getattr(have, k)!r}, backbone is {getattr(want, k)!r}"
             for k in ("name", "input_size", "patch_size", "feature_dim", "weights_sha256")
             if getattr(have, k) != getattr(want, k)]
    if diffs:
        raise BankError(
            f"{where} was built with a different backbone ({'; '.join(diffs)}); "
            + (fix or "rebuild the bank with this backbone or load the backbone the bank "
                      "was built with"))


@dataclass
class Bank:
    """Labelled prototype vectors with the identity of their backbone.

    ``vectors`` are L2-normalised rows; ``labels`` index ``class_names``;
    ``image_ids`` records where each vector came from. With a ``projection``
    (``[D, d]``, fitted on the bank's own vectors, ``bank.pca_dim``) the rows
    live in the projected space: a backbone feature ``f`` is compared as
    ``normalise((normalise(f) - projection_mean) @ projection)``.
    """

    vectors: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    backbone: BackboneIdentity
    image_ids: np.ndarray
    background_index: int | None = None
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    projection: np.ndarray | None = None
    projection_mean: np.ndarray | None = None
    # one RGB colour per class (e.g. CamVid's own), when the bank's source had them
    palette: list | None = None
    # how the vectors were stored on disk ("int8": dequantised on load), None = as is
    quantization: str | None = None
    # per class: where its vectors came from (``bank build`` / ``bank add`` records);
    # empty for banks written before provenance was recorded
    provenance: dict = field(default_factory=dict)
    # the ``unknown`` calibration (``runtime.calibrate``), None until computed
    calibration: dict | None = None

    def __post_init__(self):
        v = self.vectors
        if v.ndim != 2:
            raise InputError(f"Bank.vectors must be [N, D], got {v.shape}")
        self.labels = np.asarray(self.labels, dtype=np.int32)
        self.image_ids = np.asarray(self.image_ids, dtype=str)
        if len(self.labels) != len(v) or len(self.image_ids) != len(v):
            raise InputError(
                f"Bank: {len(v)} vectors but {len(self.labels)} labels and "
                f"{len(self.image_ids)} image ids")
        if len(v) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise InputError(
                f"Bank labels must index the {len(self.class_names)} class names")
        if self.palette is not None and (
                len(self.palette) != len(self.class_names)
                or any(len(c) != 3 or not all(0 <= int(x) <= 255 for x in c)
                       for c in self.palette)):
            raise InputError(f"Bank palette must give one RGB colour (0-255) per class "
                             f"({len(self.class_names)} classes)")
        if (self.projection is None) != (self.projection_mean is None):
            raise InputError("Bank.projection and projection_mean come together")
        if self.projection is not None:
            D = self.backbone.feature_dim
            if (self.projection.shape != (D, v.shape[1])
                    or self.projection_mean.shape != (D,)):
                raise InputError(
                    f"Bank projection {self.projection.shape} / mean "
                    f"{self.projection_mean.shape} do not map the backbone's {D} dims to the "
                    f"vectors' {v.shape[1]}")
        elif v.shape[1] != self.backbone.feature_dim:
            raise InputError(
                f"Bank vectors have dim {v.shape[1]} but the backbone "
                f"{self.backbone.name} has feature dim {self.backbone.feature_dim}")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def centers_images(self) -> bool:
        """Built with ``bank.center_image``: queries must be centred per image too."""
        return bool(self.config.get("bank", {}).get("center_image", False))

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {n: int(c) for n, c in zip(self.class_names, counts)}


@dataclass
class Segment:
    """One painted (or rejected) proposal."""

    proposal: int
    label: int
    class_name: str
    confidence: float
    objectness: float
    area: int                  # full-resolution pixels of the proposal
    painted_pixels: int = 0    # full-resolution pixels it won when painted (before fill/refine)


@dataclass
class SegmentationResult:
    """A label map (``IGNORE`` where nothing was assigned) and how it was made."""

    label_map: np.ndarray
    segments: list[Segment]
    timings_ms: dict[str, float]
    class_names: list[str]
    # the proposals the segments index (``Segment.proposal``), so a writer can
    # tie each segment to its pixels; not part of ``to_json``
    proposals: Proposals | None = None
    # ``[H, W]`` index into ``segments`` of the segment painted at each pixel, before
    # the unassigned fill and the refinement (-1: none); ``segments.json``'s masks
    # are each segment's pixels of the final label map, found from it
    owners: np.ndarray | None = None

    def to_json(self) -> dict:
        return {
            "image_hw": list(self.label_map.shape),
            "class_names": list(self.class_names),
            "segments": [asdict(s) for s in self.segments],
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
        }

    def to_coco(self) -> list[dict]:
        """Per segment: class, confidence, objectness, areas, bounding box and the
        COCO RLE of its mask (``moduseg.coco.segment_records``)."""
        from .coco import segment_records
        return segment_records(self)

    def plot(self, image: np.ndarray, palette: np.ndarray | None = None, *,
             legend_h: int | None = None, untinted: tuple[int, ...] = (),
             alpha: float | None = None) -> np.ndarray:
        """``image`` (RGB uint8) with the class colours blended in (weight ``alpha``,
        default ``render.ALPHA``), class borders and a legend strip below
        (``moduseg.render.render_overlay``)."""
        from .render import check_opacity, class_palette, render_overlay
        if palette is None:
            palette = class_palette(self.class_names)
        return render_overlay(image, self.label_map, palette, self.class_names, legend_h,
                              untinted, alpha=check_opacity(alpha))

    def save(self, path, image: np.ndarray | None = None,
             palette: np.ndarray | None = None) -> Path:
        """Write the label map as a palettised PNG at ``path`` (pixel = class index),
        or, given the ``image`` and a ``.jpg``/``.jpeg`` path, its overlay."""
        from .io import write_image, write_label_png
        from .render import class_palette
        path = Path(path)
        if palette is None:
            palette = class_palette(self.class_names)
        if path.suffix.lower() in (".jpg", ".jpeg"):
            if image is None:
                raise InputError(f"{path}: an overlay needs the image; give image=..., or a "
                                 f".png path for the label map")
            write_image(path, self.plot(image, palette))
        else:
            write_label_png(path, self.label_map, palette)
        return path


@runtime_checkable
class Backbone(Protocol):
    """Image (H, W, 3 uint8 RGB) -> patch features on a known grid."""

    identity: BackboneIdentity

    def __call__(self, image: np.ndarray) -> FeatureMap: ...


@runtime_checkable
class Proposer(Protocol):
    """Image (H, W, 3 uint8 RGB) -> class-agnostic masks with objectness."""

    name: str

    def __call__(self, image: np.ndarray) -> Proposals: ...
