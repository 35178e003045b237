"""The SAM decoder's cell list: content cells plus pooled, weighted padding cells.

Known answers: the layout's blocks tile the padding exactly once, with the
mean position and log size; the strip maps back to the grid; on the real
decoder, all 64x64 cells in order equal the grid decoder, and one cell of
log weight ``log 3`` equals three identical cells.
"""

from pathlib import Path

import numpy as np
import pytest

from moduseg.models.defaults import default_model_paths

from moduseg.errors import InputError, ModelNotFoundError
from moduseg.graphs import sam_decoder as surgery
from moduseg.runtime.proposers.sam_cells import cell_layout, gather_cells, strip_to_grid


def _centres():
    return (np.arange(64) + 0.5) / 64 * 2 - 1


def test_pool_one_is_every_cell_in_place():
    lay = cell_layout((48, 64), 1)
    assert lay.n_cells == 64 * 64
    np.testing.assert_array_equal(lay.content_index, np.arange(48 * 64))
    np.testing.assert_array_equal(np.sort(lay.block_order), np.arange(48 * 64, 64 * 64))
    assert (lay.log_weight == 0).all()
    c = _centres()
    i = np.concatenate([lay.content_index, lay.block_order])
    np.testing.assert_allclose(lay.coords[0], np.stack([c[i % 64], c[i // 64]], 1), atol=1e-6)


@pytest.mark.parametrize("content, pool, blocks, sizes", [
    ((28, 64), 4, 9 * 16, {16}),          # bikes.mp4: 36 padding rows
    ((30, 64), 4, 9 * 16, {16, 8}),        # 34 rows: the last block row has 2 rows
    ((64, 28), 4, 16 * 9, {16}),           # portrait: padding right of the content
    ((48, 64), 0, 0, set()),               # content only
])
def test_blocks_tile_the_padding_once(content, pool, blocks, sizes):
    lay = cell_layout(content, pool)
    ch, cw = content
    assert len(lay.content_index) == ch * cw and len(lay.block_sizes) == blocks
    assert set(lay.block_sizes.tolist()) == sizes
    cells = np.concatenate([lay.content_index, lay.block_order])
    if pool:
        np.testing.assert_array_equal(np.sort(cells), np.arange(64 * 64))  # each cell once
    np.testing.assert_allclose(lay.log_weight[ch * cw:], np.log(lay.block_sizes), atol=1e-6)
    if blocks:                              # a block sits at the mean of its cells
        c = _centres()
        first = lay.block_order[:lay.block_sizes[0]]
        np.testing.assert_allclose(lay.coords[0, ch * cw],
                                   [c[first % 64].mean(), c[first // 64].mean()], atol=1e-6)


def test_gather_means_blocks_and_strip_maps_back():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((1, 8, 64, 64)).astype(np.float32)
    lay = cell_layout((28, 64), 4)
    strip = gather_cells(emb, lay)
    assert strip.shape == (1, 8, 1, lay.n_cells)
    np.testing.assert_array_equal(strip[0, :, 0, :28 * 64], emb[0, :, :28].reshape(8, -1))
    np.testing.assert_allclose(strip[0, :, 0, 28 * 64], emb[0, :, 28:32, 0:4].mean((1, 2)),
                               atol=1e-6)
    for f in (1, 2, 4):     # each cell's f x f logits side by side, as the decoder emits
        grid = rng.standard_normal((2, 3, 28 * f, 64 * f)).astype(np.float32)
        cells = grid.reshape(2, 3, 28, f, 64, f).transpose(0, 1, 3, 2, 4, 5)
        cells = cells.reshape(2, 3, f, 28 * 64, f)
        pad = np.zeros((2, 3, f, lay.n_cells - 28 * 64, f), np.float32)
        out = np.concatenate([cells, pad], 3).reshape(2, 3, f, f * lay.n_cells)
        np.testing.assert_array_equal(strip_to_grid(out, lay), grid)


def test_bad_layouts_are_refused():
    with pytest.raises(InputError, match="content cells"):
        cell_layout((0, 64), 4)
    with pytest.raises(InputError, match="pool"):
        cell_layout((48, 64), -1)
    with pytest.raises(InputError, match="does not match"):
        strip_to_grid(np.zeros((1, 3, 1, 10), np.float32), cell_layout((48, 64), 4))


def test_decoder_without_a_positional_grid_is_refused():
    from onnx import TensorProto, helper

    def graph(name):
        return helper.make_model(helper.make_graph(
            [helper.make_node("Identity", [name], ["y"])], "g",
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 256, 64, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256, 64, 64])]))

    with pytest.raises(InputError, match="image_embeddings"):
        surgery.cell_list_input(graph("x"))
    with pytest.raises(InputError, match="positional-encoding"):
        surgery.cell_list_input(graph("image_embeddings"))


# -- the real decoder ----------------------------------------------------------------------

def _decoder_path() -> Path:
    try:
        return default_model_paths()[1]
    except ModelNotFoundError as e:
        pytest.skip(f"SAM decoder not installed: {e}")


def _session(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _prompts(b=3):
    rng = np.random.default_rng(0)
    coords = np.zeros((b, 2, 2), np.float32)
    coords[:, 0] = rng.uniform(40, 700, (b, 2))
    return {"point_coords": coords,
            "point_labels": np.tile(np.array([[1.0, -1.0]], np.float32), (b, 1)),
            "has_mask_input": np.zeros(1, np.float32)}


def _run_cells(sess, strip, coords, log_weight):
    names = {i.name for i in sess.get_inputs()}
    feed = dict(_prompts(), image_embeddings=strip, cell_coords=coords,
                cell_log_weight=log_weight,
                mask_input=np.zeros((1, 1, 4, 4 * strip.shape[3]), np.float32))
    return sess.run(None, {k: v for k, v in feed.items() if k in names})


@pytest.fixture(scope="module")
def embedding():
    rng = np.random.default_rng(1)
    return (rng.standard_normal((1, 256, 64, 64)) * 0.5).astype(np.float32)


@pytest.mark.models
@pytest.mark.parametrize("stride", [1, 4])
def test_all_cells_in_order_equal_the_grid_decoder(tmp_path_factory, embedding, stride):
    dec = _decoder_path()
    d = tmp_path_factory.mktemp("sam_cells")
    grid = _session(surgery.batched_decoder_path(dec, d, mask_stride=stride))
    cells = _session(surgery.batched_decoder_path(dec, d, mask_stride=stride, cells=True))
    feed = dict(_prompts(), image_embeddings=embedding,
                mask_input=np.zeros((1, 1, 256, 256), np.float32))
    names = {i.name for i in grid.get_inputs()}
    ref_masks, ref_ious = grid.run(None, {k: v for k, v in feed.items() if k in names})
    lay = cell_layout((64, 64), 1)
    masks, ious = _run_cells(cells, gather_cells(embedding, lay), lay.coords, lay.log_weight)
    np.testing.assert_allclose(ious, ref_ious, atol=1e-4)
    np.testing.assert_allclose(strip_to_grid(masks, lay), ref_masks, atol=2e-3)


@pytest.mark.models
def test_a_log_weight_counts_as_identical_cells(tmp_path, embedding):
    sess = _session(surgery.batched_decoder_path(_decoder_path(), tmp_path, mask_stride=4,
                                                 cells=True))
    lay = cell_layout((40, 64), 0)
    content = gather_cells(embedding, lay)
    extra = embedding[:, :, 60:61, 5:6].reshape(1, 256, 1, 1)
    xy = lay.coords[:, :1] * 0 + np.float32([[[-0.5, 0.9]]])
    three = _run_cells(sess, np.concatenate([content] + [extra] * 3, 3),
                       np.concatenate([lay.coords] + [xy] * 3, 1),
                       np.zeros(lay.n_cells + 3, np.float32))
    one = _run_cells(sess, np.concatenate([content, extra], 3),
                     np.concatenate([lay.coords, xy], 1),
                     np.concatenate([lay.log_weight, np.float32([np.log(3)])]))
    n = lay.n_cells
    np.testing.assert_allclose(one[1], three[1], atol=1e-4)
    np.testing.assert_allclose(one[0][..., :n], three[0][..., :n], atol=2e-3)
    # and the weight matters: the same single cell unweighted answers differently
    plain = _run_cells(sess, np.concatenate([content, extra], 3),
                       np.concatenate([lay.coords, xy], 1), np.zeros(n + 1, np.float32))
    assert np.abs(plain[0][..., :n] - three[0][..., :n]).max() > 10 * 2e-3
