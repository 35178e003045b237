"""EntitySeg's inference post-processing in PyTorch, step for step.

This is the reference the numpy runtime (``moduseg.runtime.proposers.entityseg``)
is tested against. It follows ``MaskFormer.instance_inference_nonoverlap`` of
EntitySeg / CropFormer:

1. mask logits ``[Q, h, w]`` are bilinearly upsampled to the padded network
   input, cropped to the resized image, and resized to the original image
   (detectron2 ``sem_seg_postprocess``);
2. ``p_q = softmax(class_logits_q)[entity]`` (the no-object logit is dropped),
   the ``top_k`` queries by ``p_q`` are kept (detectron2's
   ``TEST.DETECTIONS_PER_IMAGE``, 100);
3. queries are painted in increasing ``p_q`` onto one id map wherever their
   mask logit is > 0, so each pixel belongs to the highest-``p_q`` query that
   claims it: entity masks ``M_q`` never overlap;
4. ``score_q = p_q * sum_{x in M_q} s(s(l_q(x))) / (|M_q| + 1e-6)`` where
   ``s`` is the logistic sigmoid and ``l_q`` the upsampled mask logit. The
   sigmoid is applied twice in the reference code (the stored "logits" are
   already sigmoids); we keep it so scores and thresholds such as
   ``tau_obj = 0.6`` mean what they mean for EntitySeg. Because
   ``s(s(l)) in (0.5, 0.7311)`` for ``l > 0``, ``score_q < 0.7311 * p_q`` and a
   query with an empty mask scores 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def upsample_masks(mask_logits: torch.Tensor, input_hw, resized_hw, image_hw) -> torch.Tensor:
    """``[Q, h, w]`` logits -> ``[Q, H, W]`` at the original image size."""
    x = F.interpolate(mask_logits[None], size=tuple(input_hw), mode="bilinear",
                      align_corners=False)
    x = x[:, :, :resized_hw[0], :resized_hw[1]]
    x = F.interpolate(x, size=tuple(image_hw), mode="bilinear", align_corners=False)
    return x[0]


def entity_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, top_k: int = 100):
    """Non-overlapping entities from one image's outputs (masks at image size).

    Returns ``(masks [K, H, W] bool, scores [K], query_index [K])`` in
    decreasing class probability, one row per kept query (empty masks kept).
    """
    probs = class_logits.softmax(-1)[:, :-1]
    num_classes = probs.shape[1]
    k = min(top_k, probs.numel())
    top_scores, top_idx = probs.flatten().topk(k, sorted=False)
    query = torch.div(top_idx, num_classes, rounding_mode="trunc")
    logits = mask_logits[query]
    binary = logits > 0
    H, W = logits.shape[-2:]
    mask_id = torch.zeros((H, W), dtype=torch.long)
    sorted_scores, ranks = torch.sort(top_scores)
    for r in ranks.tolist():                       # low to high: higher wins
        mask_id[binary[r]] = r + 1
    masks, scores, queries = [], [], []
    for j in range(len(ranks) - 1, -1, -1):
        r = int(ranks[j])
        m = mask_id == r + 1
        conf = (logits[r].sigmoid().sigmoid() * m).sum() / (m.sum() + EPS)
        masks.append(m)
        scores.append(sorted_scores[j] * conf)
        queries.append(int(query[r]))
    return torch.stack(masks), torch.stack(scores), torch.tensor(queries)
