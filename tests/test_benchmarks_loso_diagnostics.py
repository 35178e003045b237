"""The perfect-mask ceiling of loso-diagnostics: ground-truth regions as proposals."""

import numpy as np

from benchmarks.loso_diagnostics import ground_truth_proposals


def test_ground_truth_proposals_are_the_connected_regions_of_each_class():
    label = np.full((6, 8), 11, np.uint8)        # void everywhere ...
    label[0:2, 0:3] = 0                          # ... one sky region
    label[4:6, 0:2] = 2                          # two poles, not touching
    label[4:6, 5:6] = 2
    label[2:4, 3:5] = 1                          # a building touching sky only at a corner
    props = ground_truth_proposals(label, 11, (6, 8))
    assert props.image_hw == (6, 8) and props.mask_hw == (6, 8)
    assert len(props) == 4 and (props.scores == 1).all()
    areas = sorted(int(m.sum()) for m in props.masks)
    assert areas == [2, 4, 4, 6]
    union = props.masks.any(0)
    np.testing.assert_array_equal(union, label < 11)       # void is in no proposal
    for m in props.masks:                                  # each region is of one class
        assert len(np.unique(label[m])) == 1


def test_ground_truth_proposals_of_an_all_void_label():
    props = ground_truth_proposals(np.full((3, 4), 11, np.uint8), 11, (3, 4))
    assert len(props) == 0 and props.masks.shape == (0, 3, 4)
