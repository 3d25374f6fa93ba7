"""Training targets of the two stages, per image with static shapes (vmap over the batch).

RPN (Faster R-CNN Sec. 3.1.2, torchvision's Matcher(0.7, 0.3, allow_low_quality_matches)):
an anchor is positive when its best IoU with a ground-truth box is >= 0.7, negative when
< 0.3, ignored in between; and each ground truth's best anchors (every anchor tied at its
highest IoU) are positive too, matched to their own best ground truth. 256 anchors are
sampled per image, at most half positive, the rest negative.

Box head (torchvision's RoIHeads): the ground-truth boxes are appended to the proposals;
a candidate is foreground when its best IoU is >= 0.5 (it takes that box's class),
background when < 0.5; 512 are sampled per image, at most 25% foreground.

Mask head: each foreground RoI's matched ground-truth mask, RoIAligned to 28 x 28.

Sampling is a uniformly random subset, as torchvision's randperm, made static: every
candidate draws a uniform priority and the top-k of the eligible ones are taken, so the
output always has k slots and a validity mask. Ground truth the losses must not learn
from (crowd regions, padding) is left out by the caller through `gt_valid`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.detection import boxes as box_ops
from jaxseg.models.detection.roi_align import roi_align

POSITIVE, NEGATIVE, IGNORED = 1, 0, -1
UNIT_BOX = np.asarray([0.0, 0.0, 1.0, 1.0], np.float32)


def _deltas(targets, reference, use, weights):
  """encode() where `use`, 0 elsewhere; unused pairs (padding) are swapped for a unit box
  first, so no log(0) or 0 / 0 is ever computed."""
  targets = jnp.where(use[:, None], targets, UNIT_BOX)
  reference = jnp.where(use[:, None], reference, UNIT_BOX)
  return jnp.where(use[:, None], box_ops.encode(targets, reference, weights), 0.0)


def match(iou, high, low, allow_low_quality):
  """iou (N, G), -1 for padded pairs -> (labels (N,) in {1, 0, -1}, matched gt (N,) int32).

  With no valid ground truth every candidate is negative. A ground truth whose best IoU
  is 0 promotes no candidate (torchvision's rule would make every candidate of IoU 0
  positive; such a box overlaps no anchor, e.g. it lies off the canvas).
  """
  best = iou.max(axis=1)
  matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
  labels = jnp.where(best >= high, POSITIVE, jnp.where(best < low, NEGATIVE, IGNORED))
  if allow_low_quality:
    best_per_gt = iou.max(axis=0)  # (G,); -1 for padded ground truth
    is_best = (iou == best_per_gt[None, :]) & (best_per_gt[None, :] > 0)
    labels = jnp.where(is_best.any(axis=1), POSITIVE, labels)
  return labels.astype(jnp.int32), matched


def balanced_sample(key, positive, negative, num_samples, positive_fraction):
  """Masks (N,) -> (indices (num_samples,), is_positive, valid): a uniformly random
  subset of min(num_samples * positive_fraction, #positive) positives followed by
  min(num_samples - #taken positives, #negative) negatives (torchvision's
  BalancedPositiveNegativeSampler); unused slots hold index 0, valid False."""
  max_positive = int(num_samples * positive_fraction)
  if positive.shape[0] < num_samples:  # fewer candidates than slots: pad with ineligible ones
    pad = num_samples - positive.shape[0]
    positive, negative = jnp.pad(positive, (0, pad)), jnp.pad(negative, (0, pad))
  n = positive.shape[0]
  priority = jax.random.uniform(key, (n,))
  pos_score, pos_index = jax.lax.top_k(jnp.where(positive, priority, -1.0), max_positive)
  neg_score, neg_index = jax.lax.top_k(jnp.where(negative, priority, -1.0), num_samples)
  num_pos = jnp.sum(pos_score >= 0)
  num_neg = jnp.minimum(num_samples - num_pos, jnp.sum(neg_score >= 0))
  slot = jnp.arange(num_samples)
  is_positive = slot < num_pos
  from_neg = jnp.clip(slot - num_pos, 0, num_samples - 1)
  indices = jnp.where(is_positive, pos_index[jnp.minimum(slot, max_positive - 1)], neg_index[from_neg])
  valid = slot < num_pos + num_neg
  return jnp.where(valid, indices, 0).astype(jnp.int32), is_positive, valid


def rpn_targets(key, anchors, gt_boxes, gt_valid, num_samples=256, positive_fraction=0.5,
                high=0.7, low=0.3):
  """anchors (A, 4), gt_boxes (G, 4), gt_valid (G,) -> dict of the sampled anchors:
  "index" (S,) into the anchors, "objectness" (S,) 1 / 0 targets, "valid" (S,), and
  "deltas" (S, 4) regression targets (weights 1, 1, 1, 1; meaningful where objectness)."""
  iou = box_ops.pairwise_iou(anchors, gt_boxes, b_valid=gt_valid)
  labels, matched = match(iou, high, low, allow_low_quality=True)
  index, is_positive, valid = balanced_sample(key, labels == POSITIVE, labels == NEGATIVE,
                                              num_samples, positive_fraction)
  positive = is_positive & valid
  deltas = _deltas(gt_boxes[matched[index]], anchors[index], positive, box_ops.RPN_WEIGHTS)
  return {"index": index, "objectness": positive, "valid": valid, "deltas": deltas}


def sample_rois(key, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, num_samples=512,
                positive_fraction=0.25, fg_iou=0.5, weights=box_ops.BOX_HEAD_WEIGHTS):
  """proposals (P, 4) + validity, ground truth (G, 4) / classes (G,) in [0, K) / validity
  -> dict of the num_samples RoIs for the box head, foreground first:
  "boxes" (S, 4), "labels" (S,) int32 (0 = background, k + 1 = category k, torchvision's
  convention), "deltas" (S, 4) class-specific regression targets (zero on background),
  "gt_index" (S,) the matched ground truth (for the mask targets), "foreground" (S,),
  "valid" (S,)."""
  proposals = jax.lax.stop_gradient(proposals)  # targets, not a path for gradients (torchvision detaches)
  candidates = jnp.concatenate([proposals, gt_boxes.astype(proposals.dtype)], axis=0)
  candidate_valid = jnp.concatenate([proposal_valid, gt_valid], axis=0)
  iou = box_ops.pairwise_iou(candidates, gt_boxes, candidate_valid, gt_valid)
  labels, matched = match(iou, fg_iou, fg_iou, allow_low_quality=False)
  foreground = candidate_valid & (labels == POSITIVE)
  background = candidate_valid & (labels == NEGATIVE)
  index, is_fg, valid = balanced_sample(key, foreground, background, num_samples, positive_fraction)
  rois, gt_index = candidates[index], matched[index]
  is_fg = is_fg & valid
  deltas = _deltas(gt_boxes[gt_index], rois, is_fg, weights)
  return {"boxes": rois, "labels": jnp.where(is_fg, gt_classes[gt_index] + 1, 0).astype(jnp.int32),
          "deltas": deltas, "gt_index": gt_index,
          "foreground": is_fg, "valid": valid}


def mask_targets(gt_masks, rois, gt_index, mask_stride=1, size=28, sampling_ratio=2, aligned=False):
  """The mask head's targets: each RoI's ground-truth mask (G, h, w) in {0, 1} (h, w the
  canvas over `mask_stride`, jaxseg.data.instances' instance_masks) cropped to the RoI
  and resampled to size x size by RoIAlign -> (S, size, size) float32 in [0, 1], the
  soft targets of the per-pixel BCE (torchvision's project_masks_on_boxes).

  torchvision samples the masks with the adaptive grid, ceil(RoI / 28) points per bin;
  here the grid is fixed (`sampling_ratio`) to keep the shapes static, so a large RoI's
  target is read from fewer points of the mask, smoothing it less.
  """
  masks = jax.lax.stop_gradient(gt_masks).astype(jnp.float32)[..., None]
  out = roi_align(masks, jax.lax.stop_gradient(rois), gt_index, size, 1.0 / mask_stride,
                  sampling_ratio, aligned)
  return out[..., 0]
