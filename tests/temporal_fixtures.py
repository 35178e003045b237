"""Synthetic moving scenes and a fake per-frame segmenter for the temporal tests."""

from __future__ import annotations

import cv2
import numpy as np

from moduseg.types import IGNORE, Proposals, Segment, SegmentationResult

CLASSES = ["background", "red", "green"]


def canvas(seed: int = 0, H: int = 240, W: int = 320):
    """A textured world (smooth noise, so the flow has something to follow) with a red
    and a green rectangle; returns (rgb, labels)."""
    rng = np.random.default_rng(seed)
    noise = cv2.resize(rng.integers(0, 255, (H // 8, W // 8), dtype=np.uint8), (W, H),
                       interpolation=cv2.INTER_CUBIC)
    img = np.dstack([noise // 3, noise // 3 + 40, noise // 3 + 80]).astype(np.uint8)
    lab = np.zeros((H, W), np.uint8)
    lab[60:140, 60:150] = 1
    lab[120:200, 180:280] = 2
    tex = (noise[..., None] // 4).astype(np.uint8)
    img[lab == 1] = (np.array([200, 20, 20], np.uint8) + tex[lab == 1] // 2)
    img[lab == 2] = (np.array([20, 200, 20], np.uint8) + tex[lab == 2] // 2)
    return img, lab


def crop(world: np.ndarray, dx: int, dy: int, h: int = 180, w: int = 240, y0: int = 30,
         x0: int = 40) -> np.ndarray:
    """The window of a world seen by a camera moved by (dx, dy): content moves by (-dx, -dy)."""
    return np.ascontiguousarray(world[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w])


class ColourSegmenter:
    """Labels each pixel by its dominant colour; one proposal per class region at half
    resolution. ``flip`` makes every third call label the green region red (a
    flickering vote), to test that the memory holds the class."""

    def __init__(self, flip: bool = False):
        self.calls, self.flip = 0, flip

    def __call__(self, image, timer=None):
        self.calls += 1
        r, g = image[..., 0].astype(int), image[..., 1].astype(int)
        lab = np.zeros(image.shape[:2], np.uint8)
        lab[(r > 150) & (g < 100)] = 1
        lab[(g > 150) & (r < 100)] = 2
        if self.flip and self.calls % 3 == 0:
            lab[lab == 2] = 1
        H, W = lab.shape
        small = cv2.resize(lab, (W // 2, H // 2), interpolation=cv2.INTER_NEAREST)
        masks = np.stack([small == c for c in range(3)])
        props = Proposals(masks, np.ones(3, np.float32), (H, W))
        segs = [Segment(c, int(c) if c < 2 or not (self.flip and self.calls % 3 == 0) else 1,
                        CLASSES[c], 0.9, 1.0, int((lab == c).sum()), int((lab == c).sum()))
                for c in range(3) if masks[c].any()]
        return SegmentationResult(label_map=lab, segments=segs, timings_ms={"total": 1.0},
                                  class_names=list(CLASSES), proposals=props)


class VotingSegmenter(ColourSegmenter):
    """A ``ColourSegmenter`` that also labels given proposals (``relabel``, as
    ``Segmenter`` does for vote frames): each proposal takes the class most of the frame's
    pixels under it have by colour (the frame's own evidence); ``vote_as`` maps a class
    to another on vote frames (a mistaken vote)."""

    def __init__(self, flip: bool = False, vote_as: dict | None = None):
        super().__init__(flip)
        self.relabels, self.given, self.vote_as = 0, [], dict(vote_as or {})

    def relabel(self, image, proposals, timer=None):
        self.relabels += 1
        self.given.append(proposals)
        colour = labels_of(image)
        H, W = colour.shape
        lab = np.full((H, W), IGNORE, np.uint8)
        segs = []
        for k, m in enumerate(proposals.masks):
            full = cv2.resize(m.view(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
            if not full.any():
                continue
            c = int(np.bincount(colour[full], minlength=3).argmax())
            c = self.vote_as.get(c, c)
            lab[full] = c
            segs.append(Segment(k, c, CLASSES[c], 0.9, 1.0, int(full.sum()), int(full.sum())))
        return SegmentationResult(label_map=lab, segments=segs, timings_ms={"total": 0.5},
                                  class_names=list(CLASSES), proposals=proposals)


def labels_of(image) -> np.ndarray:
    return ColourSegmenter()(image).label_map


__all__ = ["CLASSES", "IGNORE", "ColourSegmenter", "VotingSegmenter", "canvas", "crop",
           "labels_of"]
