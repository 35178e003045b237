"""Hot-swap: a changed bank file is picked up between frames; a bad one is refused."""

import threading

import numpy as np

from moduseg.bank.builder import build_bank
from moduseg.bank.edit import drop_class
from moduseg.bank.store import save_bank
from moduseg.config import BankConfig, RuntimeConfig
from moduseg.app.hotswap import BankWatcher
from moduseg.runtime.pipeline import Segmenter
from moduseg.types import BackboneIdentity, Bank

from synthetic import ColourBackbone, dataset, gt_proposals, scene

CFG = BankConfig(min_area=0, erosion_iterations=0, outlier_fraction=0.0)


class GtProposer:
    name = "gt"

    def __init__(self, label):
        self.label = label

    def __call__(self, image):
        return gt_proposals(self.label)


def _world(tmp_path):
    bank = build_bank(dataset(6), ColourBackbone(), CFG)
    path = save_bank(bank, tmp_path / "bank.npz")
    image, label = scene(42)
    seg = Segmenter(ColourBackbone(), GtProposer(label), bank,
                    RuntimeConfig(min_area=0, min_objectness=0.0, top_k=1), parallel=False)
    return bank, path, seg, image, label


def _replace(path, bank):
    """Write beside and rename into place, as the docs say."""
    tmp = save_bank(bank, path.with_name("next.npz"))
    tmp.replace(path)


def test_a_changed_bank_is_used_from_the_next_frame(tmp_path):
    bank, path, seg, image, label = _world(tmp_path)
    msgs = []
    w = BankWatcher(path, seg, interval=0.0, report=msgs.append)
    before = seg(image)
    assert not w.poll()                                   # nothing changed
    _replace(path, drop_class(bank, "class1"))
    assert w.poll() and w.swaps == 1 and "now using it" in msgs[-1]
    after = seg(image)
    assert before.class_names == bank.class_names
    assert after.class_names == ["background", "class2", "class3", "class4"]
    assert not w.poll()


def test_a_corrupted_bank_is_refused_and_the_old_one_kept(tmp_path):
    bank, path, seg, image, label = _world(tmp_path)
    msgs = []
    w = BankWatcher(path, seg, interval=0.0, report=msgs.append)
    good = seg(image).label_map
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])               # truncated in place
    assert not w.poll()
    assert len(msgs) == 1 and "cannot be used" in msgs[0] and "still using" in msgs[0]
    assert "\n" not in msgs[0]
    assert seg.bank is bank
    np.testing.assert_array_equal(seg(image).label_map, good)
    assert not w.poll() and len(msgs) == 1                 # not retried until it changes
    _replace(path, bank)                                   # a whole file again
    assert w.poll()


def test_a_bank_of_another_backbone_is_refused(tmp_path):
    bank, path, seg, image, label = _world(tmp_path)
    msgs = []
    w = BankWatcher(path, seg, interval=0.0, report=msgs.append)
    other = Bank(bank.vectors, bank.labels, bank.class_names,
                 BackboneIdentity("colour-test", "native", 8, 5, "e" * 64), bank.image_ids)
    _replace(path, other)
    assert not w.poll() and "different backbone" in msgs[0]
    assert seg.bank is bank


def test_a_frame_in_flight_finishes_on_the_bank_it_started_with(tmp_path):
    bank, path, seg, image, label = _world(tmp_path)
    started, release = threading.Event(), threading.Event()
    real = seg.backbone

    class SlowBackbone:
        identity = real.identity

        def __call__(self, im):
            started.set()
            release.wait(10)
            return real(im)

    seg.backbone = SlowBackbone()
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", seg(image)))
    t.start()
    started.wait(10)
    seg.swap_bank(drop_class(bank, "class1"))              # swapped mid-frame
    release.set()
    t.join(10)
    assert out["r"].class_names == bank.class_names        # the old bank, whole
    seg.backbone = real
    assert seg(image).class_names == ["background", "class2", "class3", "class4"]


def test_the_watcher_only_stats_the_file_every_interval(tmp_path):
    bank, path, seg, image, label = _world(tmp_path)
    w = BankWatcher(path, seg, interval=10.0, report=lambda m: None)
    assert not w.poll(now=100.0)
    _replace(path, drop_class(bank, "class1"))
    assert not w.poll(now=105.0)                           # within the interval
    assert w.poll(now=111.0)


def test_the_served_bank_model_swaps_between_batches(tmp_path, monkeypatch):
    """``moduseg serve``'s bank model: a changed bank file is used from the next batch;
    a corrupted one is refused and the batch runs on the old bank."""
    import sys
    import types

    from moduseg.serve import triton_models as tm

    class Tensor:
        def __init__(self, name, arr):
            self.name, self.arr = name, arr

        def as_numpy(self):
            return self.arr

    class Response:
        def __init__(self, output_tensors=(), error=None):
            self.tensors = {t.name: t.arr for t in output_tensors}
            self.error = error

    pb = types.SimpleNamespace(
        Tensor=Tensor, InferenceResponse=Response,
        TritonError=lambda msg, *a: msg,
        get_input_tensor_by_name=lambda r, n: Tensor(n, r[n]))
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    bank, path, seg, image, label = _world(tmp_path)
    model = tm.BankModel()
    model.seg = seg
    msgs = []
    model.watcher = tm.watch_bank({"bank_source": str(path)}, seg)
    model.watcher.report, model.watcher.interval = msgs.append, 0.0
    assert tm.watch_bank({"bank_source": str(path), "watch_bank": "0"}, seg) is None
    fmap = seg.backbone(image)
    g = fmap.geometry
    req = {"features": fmap.features, "image": image,
           "geometry": np.array([*g.image_hw, *g.resized_hw, *g.grid_hw, g.patch]),
           "masks": gt_proposals(label).masks, "scores": np.ones(len(np.unique(label)))}
    first = model.execute([req])[0]
    assert first.error is None
    assert sorted(np.unique(first.tensors["class"]).tolist()) == [1, 2, 3, 4]   # bg unpainted
    data = path.read_bytes()
    path.write_bytes(data[:100])                            # corrupted in place
    again = model.execute([req])[0]
    assert again.error is None and "cannot be used" in msgs[-1]
    np.testing.assert_array_equal(again.tensors["label_map"], first.tensors["label_map"])
    _replace(path, drop_class(bank, "class1"))
    swapped = model.execute([req, req])
    assert "now using it" in msgs[-1] and seg.bank.class_names[1] == "class2"
    # each answer names the classes its label values index: the bank that answered
    assert [n.decode() for n in first.tensors["class_names"]] == list(bank.class_names)
    assert [n.decode() for n in swapped[0].tensors["class_names"]] == \
        [n for n in bank.class_names if n != "class1"]
    # class1 gone: its region now takes another class, so the map differs
    assert not np.array_equal(swapped[0].tensors["label_map"], first.tensors["label_map"])
    np.testing.assert_array_equal(swapped[0].tensors["label_map"],
                                  swapped[1].tensors["label_map"])
