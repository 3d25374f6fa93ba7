"""PANet (Liu et al. 2018) and its "Mask R-CNN" setting: the whole two-stage detector with
static shapes, in the order the pieces run:

  features   c1..c4 = backbone(images);  P2..P6 = FPN;  N2..N6 = bottom-up path (PANet)
  RPN        objectness, deltas = RPNHead(each level)            (rpn.py; on N2..N6 with the
             bottom-up path, as the authors' code, else P2..P6)
  proposals  per image: top-k per level -> decode -> clip -> NMS 0.7 -> top-k   (proposals.py)
  training   RPN targets: 256 anchors, <= 50% positive                          (targets.py)
             RoIs: proposals + ground truth, 512 sampled, <= 25% foreground
             box head on the RoIs; mask head on the first `mask_rois` RoIs of each image
             (the foreground ones come first) with 28 x 28 mask targets
  inference  box head on the proposals -> per-class decode (weights 10, 10, 5, 5), clip,
             softmax score > 0.05, side >= 0.01 -> batched per-class NMS 0.5 -> top 100
             -> mask head on the detections -> the detected class's mask probabilities

RoI features: `adaptive_pooling` (PANet Sec. 3.2) pools every RoI from all of N2..N5 and
fuses after the heads' first layer; without it each RoI is pooled from one level by the
canonical rule k = floor(4 + log2(sqrt(wh) / 224)) in [2, 5] (pooling.assign_levels).

The Mask R-CNN setting (torchvision's maskrcnn_resnet50_fpn) is the same module with
  neck=FPN(bottom_up=False), adaptive_pooling=False, fc_fusion=False   (MASK_RCNN below)
and its parameter tree follows torchvision's names: backbone, neck, rpn (conv, cls_logits,
bbox_pred), box_head (fc6, fc7, cls_score, bbox_pred), mask_head (mask_fcn1..4, conv5_mask,
mask_fcn_logits), so a checkpoint maps 1:1 (kernels transposed; fc6 permuted from
(C, 7, 7) to (7, 7, C) flattening). torchvision's maskrcnn_resnet50_fpn_v2 is that setting
with FPN(norm="bn"), rpn_conv_depth=2 (rpn/conv2), box_head_layers="4conv1fc" (box_head
conv1..4, fc6) and head_norm="bn": BatchNorm in the FPN and the heads' convs.

Interface
---------
  model = PANet(backbone=ResNet(..), neck=FPN(bottom_up=True, ..), num_classes=K,
                image_size=(H, W), **options)       # H, W divisible by 64; options below
  variables = model.init({"params": key, "sampling": key}, images, targets, train=True)
  out = model.apply(variables, images, targets, image_sizes=None, train=True,
                    rngs={"sampling": key}, mutable=["batch_stats"])
  losses = jaxseg.models.detection.losses.detection_losses(out)   # {"loss": total, parts..}

  images      (B, H, W, 3) normalised, the fixed canvas
  targets     training only: the batch entries of jaxseg.data.instances
              instance_boxes (B, M, 4) xyxy canvas pixels, instance_classes (B, M) in [0, K),
              instance_masks (B, M, H / s, W / s) in {0, 1}, instance_valid (B, M),
              instance_iscrowd (B, M). Crowd entries are left out of the targets
              (torchvision's COCO pipeline drops them).
  image_sizes (B, 2) (height, width) of each image inside the canvas (boxes are clipped
              to it); None: the whole canvas
  train=True  needs the "sampling" rng (anchor and RoI sampling); returns
    "rpn":  {"logits" (B, S), "deltas" (B, S, 4): the sampled anchors' predictions,
             "objectness" (B, S) bool targets, "target_deltas" (B, S, 4), "valid" (B, S)}
    "box":  {"class_logits" (B, R, K + 1), "deltas" (B, R, K + 1, 4), "labels" (B, R)
             (0 background, k + 1 category k), "target_deltas" (B, R, 4), "valid" (B, R)}
    "mask": {"logits" (B, Rm, 28, 28) of each RoI's ground-truth class, "targets"
             (B, Rm, 28, 28) in [0, 1], "valid" (B, Rm) (foreground RoIs)}
    "proposals" (B, P, 4), "proposal_valid" (B, P)
  train=False returns
    "boxes" (B, D, 4) xyxy canvas pixels, "classes" (B, D) int32 in [0, K), "scores" (B, D),
    "valid" (B, D), "masks" (B, D, 28, 28) probabilities of each box's class (to be pasted
    into the box), "proposals", "proposal_valid"; D = `detections` (100), best first;
    with_candidates=True also "candidates" {"boxes" (B, P, K, 4), "scores" (B, P, K),
    "valid" (B, P, K)}: every (proposal, class) pair before the NMS
  boxes=(B, D, 4), classes=(B, D) (inference): the mask head alone on these boxes (canvas
    pixels) -> {"masks" (B, D, 28, 28) probabilities of each box's class}. Both serve
    the test-time augmentation (jaxseg.models.detection.augment).

Every shape is fixed by the options, so one compiled step serves every batch.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.models.detection import anchors as anchor_ops
from jaxseg.models.detection import boxes as box_ops
from jaxseg.models.detection import targets as target_ops
from jaxseg.models.detection.box_head import BoxHead
from jaxseg.models.detection.mask_head import MaskHead
from jaxseg.models.detection.nms import batched_nms
from jaxseg.models.detection.pooling import assign_levels, pool_all_levels
from jaxseg.models.detection.proposals import propose
from jaxseg.models.detection.roi_align import multilevel_roi_align
from jaxseg.models.detection.rpn import RPNHead

RPN_LEVELS = (2, 3, 4, 5, 6)
ROI_LEVELS = (2, 3, 4, 5)
MASK_RCNN = dict(adaptive_pooling=False, fc_fusion=False)  # with neck=FPN(bottom_up=False)
TARGET_KEYS = ("instance_boxes", "instance_classes", "instance_masks", "instance_valid",
               "instance_iscrowd")


def mask_grid_shift(stride, aligned):
  """The shift (pixels) that maps RoIs onto masks kept at `stride`: mask cell j holds the
  canvas pixel j s + s // 2 (jaxseg.data.instances), so a box in canvas pixels, minus this
  shift, scaled by 1 / s, lands on the cells' own coordinates (RoIAlign's convention:
  cell j at j, or at j + 1/2 when aligned). 0 for stride 1."""
  return stride // 2 if not aligned else stride // 2 + 0.5 - stride / 2


def candidates(logits, deltas, proposals, proposal_valid, image_sizes, score_threshold=0.05):
  """Box-head outputs -> every (proposal, class) candidate: logits (B, P, K + 1), deltas
  (B, P, K + 1, 4), proposals (B, P, 4) + validity, image_sizes (B, 2) -> boxes
  (B, P, K, 4) decode(deltas_k, proposal) with the weights (10, 10, 5, 5), clipped to the
  image; scores (B, P, K) the softmax probability of k; valid (B, P, K): score >
  score_threshold and both sides >= 0.01 (torchvision's RoIHeads.postprocess_detections)."""
  scores = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]  # drop the background
  safe = jnp.where(proposal_valid[..., None], proposals, target_ops.UNIT_BOX)
  boxes = box_ops.decode(deltas[:, :, 1:], safe[:, :, None], box_ops.BOX_HEAD_WEIGHTS)
  boxes = box_ops.clip(boxes, image_sizes[:, 0, None, None], image_sizes[:, 1, None, None])
  valid = proposal_valid[..., None] & (scores > score_threshold) & box_ops.large_enough(boxes, 1e-2)
  return boxes, scores, valid


def select(boxes, scores, valid, nms_threshold=0.5, detections=100, pre_nms=1000):
  """Candidates (B, P, K, 4), (B, P, K), (B, P, K) -> detections: boxes (B, D, 4), classes
  (B, D) in [0, K), scores (B, D), valid (B, D), best first. NMS runs per class (IoU >
  nms_threshold suppresses) and keeps the best `detections`. Only the `pre_nms` best
  candidates enter the NMS, which changes nothing unless more than pre_nms - detections of
  them are suppressed (NMS visits by score, so lower candidates never affect higher ones)."""
  p, k = scores.shape[1:]

  def per_image(boxes, scores, valid):
    boxes, scores, valid = boxes.reshape(-1, 4), scores.reshape(-1), valid.reshape(-1)  # proposal-major
    classes = jnp.tile(jnp.arange(k, dtype=jnp.int32), p)
    _, top = jax.lax.top_k(jnp.where(valid, scores, -1.0), min(pre_nms, scores.shape[0]))
    keep, kept = batched_nms(boxes[top], scores[top], classes[top], valid[top], nms_threshold, detections)
    pick = top[keep]
    return (jnp.where(kept[:, None], boxes[pick], 0.0), jnp.where(kept, classes[pick], 0),
            jnp.where(kept, scores[pick], 0.0), kept)

  return jax.vmap(per_image)(boxes, scores, valid)


def postprocess(logits, deltas, proposals, proposal_valid, image_sizes, score_threshold=0.05,
                nms_threshold=0.5, detections=100, pre_nms=1000):
  """Box-head outputs -> detections (torchvision's RoIHeads.postprocess_detections, static):
  `candidates`, then `select` (shapes there)."""
  return select(*candidates(logits, deltas, proposals, proposal_valid, image_sizes, score_threshold),
                nms_threshold, detections, pre_nms)


class PANet(nn.Module):
  backbone: nn.Module  # {"c1": 1/4, .., "c4": 1/32}
  neck: nn.Module  # jaxseg.models.necks.fpn.FPN; bottom_up=True for PANet
  num_classes: int  # K, without the background
  image_size: Tuple[int, int]  # the canvas (H, W)
  adaptive_pooling: bool = True
  fusion: str = "max"  # adaptive pooling's fusion: "max" | "sum"
  fc_fusion: bool = True
  head_norm: str = "none"  # "none" | "gn" | "bn": the box head's FCs (2fc) or convs (4conv1fc), the mask head's convs
  box_head_layers: str = "2fc"  # "2fc" | "4conv1fc" (torchvision's v2 FastRCNNConvFCHead), box_head.py
  box_conv_channels: int = 256  # the 4conv1fc head's convs
  representation: int = 1024
  mask_channels: int = 256
  bn_momentum: float = 0.9  # of head_norm "bn" (the family passes model.bn_momentum)
  # RPN (torchvision's defaults)
  rpn_conv_depth: int = 1  # conv3x3 + ReLU layers before the predictors (torchvision's v2: 2)
  anchor_sizes: Sequence[int] = anchor_ops.SIZES
  aspect_ratios: Sequence[float] = anchor_ops.ASPECT_RATIOS
  rpn_pre_nms_top_n_train: int = 2000
  rpn_post_nms_top_n_train: int = 2000
  rpn_pre_nms_top_n_test: int = 1000
  rpn_post_nms_top_n_test: int = 1000
  rpn_nms_threshold: float = 0.7
  rpn_fg_iou: float = 0.7
  rpn_bg_iou: float = 0.3
  rpn_batch_size: int = 256
  rpn_positive_fraction: float = 0.5
  # RoI heads
  roi_batch_size: int = 512
  roi_positive_fraction: float = 0.25
  roi_fg_iou: float = 0.5
  mask_rois: int = 128  # per image; 512 x 25% = 128 keeps every foreground RoI
  box_pool: int = 7
  mask_pool: int = 14
  sampling_ratio: int = 2
  aligned: bool = False
  # inference
  score_threshold: float = 0.05
  nms_threshold: float = 0.5
  detections: int = 100
  detections_pre_nms: int = 1000  # the best class scores entering the per-class NMS
  dtype: Any = jnp.float32

  def setup_check(self):
    if self.mask_rois > self.roi_batch_size:
      raise ValueError(f"mask_rois {self.mask_rois} exceeds roi_batch_size {self.roi_batch_size}")
    if self.fusion not in ("max", "sum"):
      raise ValueError(f"fusion must be 'max' or 'sum', got '{self.fusion}'")
    if self.head_norm not in ("none", "gn", "bn"):
      raise ValueError(f"head_norm must be 'none', 'gn' or 'bn', got '{self.head_norm}'")

  def pool(self, pyramid, boxes, image_index, size):
    """(R, 4) RoIs -> (R, s, s, C) from one level each, or (L, R, s, s, C) from all levels."""
    scales = [1.0 / 2 ** level for level in ROI_LEVELS]
    if self.adaptive_pooling:
      return pool_all_levels(pyramid, boxes, image_index, size, scales, self.sampling_ratio, self.aligned)
    levels = assign_levels(boxes, ROI_LEVELS[0], ROI_LEVELS[-1]) - ROI_LEVELS[0]
    return multilevel_roi_align(pyramid, boxes, image_index, levels, size, scales, self.sampling_ratio,
                                self.aligned)

  @nn.compact
  def __call__(self, images, targets=None, image_sizes=None, train: bool = False, boxes=None, classes=None,
               with_candidates: bool = False):
    self.setup_check()
    b, h, w = images.shape[:3]
    if (h, w) != tuple(self.image_size):
      raise ValueError(f"images are {h}x{w}, the model's canvas (image_size) is {tuple(self.image_size)}")
    if image_sizes is None:
      image_sizes = jnp.tile(jnp.asarray([[h, w]], jnp.float32), (b, 1))
    image_sizes = jnp.asarray(image_sizes, jnp.float32)

    # features: FPN (+ PANet's bottom-up path)
    features = self.neck(self.backbone(images, train), train)
    prefix = "n" if getattr(self.neck, "bottom_up", False) else "p"
    rpn_levels = [features[f"{prefix}{level}"] for level in RPN_LEVELS]
    roi_levels = rpn_levels[:len(ROI_LEVELS)]
    mask_head = MaskHead(self.num_classes, self.mask_channels, self.adaptive_pooling, self.fusion,
                         self.fc_fusion, self.head_norm, self.bn_momentum, self.dtype, name="mask_head")
    if boxes is not None:  # the mask head alone, on given boxes of this canvas (test-time augmentation)
      return {"masks": self.mask_probabilities(roi_levels, boxes, classes, mask_head)}

    # RPN: objectness and deltas per anchor, proposals per image
    strides = [2 ** level for level in RPN_LEVELS]
    anchors = anchor_ops.pyramid_anchors((h, w), strides, self.anchor_sizes, self.aspect_ratios)
    objectness, deltas = RPNHead(len(self.aspect_ratios), self.rpn_conv_depth, self.dtype, name="rpn")(rpn_levels)
    for level, (o, a) in enumerate(zip(objectness, anchors)):
      if o.shape[1] != a.shape[0]:
        raise ValueError(f"level P{RPN_LEVELS[level]}: {o.shape[1]} RPN outputs but {a.shape[0]} anchors")
    pre = self.rpn_pre_nms_top_n_train if train else self.rpn_pre_nms_top_n_test
    post = self.rpn_post_nms_top_n_train if train else self.rpn_post_nms_top_n_test
    proposals, _, proposal_valid = jax.vmap(
        lambda o, d, size: propose(o, d, anchors, (size[0], size[1]), pre, post, self.rpn_nms_threshold)
    )(objectness, deltas, image_sizes)
    box_head = BoxHead(self.num_classes, self.representation, self.adaptive_pooling, self.fusion,
                       self.head_norm, self.box_head_layers, self.box_conv_channels, self.bn_momentum,
                       self.dtype, name="box_head")
    out = {"proposals": proposals, "proposal_valid": proposal_valid}
    if train:
      return {**out, **self.training_outputs(roi_levels, objectness, deltas, anchors, proposals,
                                             proposal_valid, targets, box_head, mask_head)}
    return {**out, **self.detect(roi_levels, proposals, proposal_valid, image_sizes, box_head, mask_head,
                                 with_candidates)}

  def training_outputs(self, pyramid, objectness, deltas, anchors, proposals, proposal_valid, targets,
                       box_head, mask_head):
    if targets is None or any(k not in targets for k in TARGET_KEYS):
      missing = list(TARGET_KEYS) if targets is None else [k for k in TARGET_KEYS if k not in targets]
      raise ValueError(f"training needs the ground-truth batch entries {missing}")
    gt_boxes = jnp.asarray(targets["instance_boxes"], jnp.float32)
    gt_classes = jnp.asarray(targets["instance_classes"], jnp.int32)
    gt_masks = targets["instance_masks"]
    gt_valid = jnp.asarray(targets["instance_valid"], bool) & (jnp.asarray(targets["instance_iscrowd"]) == 0)
    b, m = gt_boxes.shape[:2]
    h, w = self.image_size
    if gt_masks.shape[:2] != (b, m) or h % gt_masks.shape[2] or w % gt_masks.shape[3] or \
        h // gt_masks.shape[2] != w // gt_masks.shape[3]:
      raise ValueError(f"instance_masks {gt_masks.shape} must be (B, M, H / s, W / s) for boxes "
                       f"{gt_boxes.shape} and the canvas {h}x{w}")
    stride = h // gt_masks.shape[2]
    rpn_key, roi_key = jax.random.split(self.make_rng("sampling"))

    # RPN targets over the anchors of all levels (Faster R-CNN: 256 per image, <= 1/2 positive)
    all_anchors = jnp.asarray(np.concatenate(anchors))
    rpn = jax.vmap(partial(target_ops.rpn_targets, num_samples=self.rpn_batch_size,
                           positive_fraction=self.rpn_positive_fraction, high=self.rpn_fg_iou,
                           low=self.rpn_bg_iou), in_axes=(0, None, 0, 0))(
        jax.random.split(rpn_key, b), all_anchors, gt_boxes, gt_valid)
    take = jax.vmap(lambda x, i: x[i])
    rpn_out = {"logits": take(jnp.concatenate(objectness, axis=1), rpn["index"]),
               "deltas": take(jnp.concatenate(deltas, axis=1), rpn["index"]),
               "objectness": rpn["objectness"], "target_deltas": rpn["deltas"], "valid": rpn["valid"]}

    # RoIs for the box head (512 per image, <= 25% foreground, foreground first)
    rois = jax.vmap(partial(target_ops.sample_rois, num_samples=self.roi_batch_size,
                            positive_fraction=self.roi_positive_fraction, fg_iou=self.roi_fg_iou))(
        jax.random.split(roi_key, b), proposals, proposal_valid, gt_boxes, gt_classes, gt_valid)
    r = self.roi_batch_size
    image_index = jnp.repeat(jnp.arange(b), r)
    logits, box_deltas = box_head(self.pool(pyramid, rois["boxes"].reshape(-1, 4), image_index, self.box_pool), True)
    box_out = {"class_logits": logits.reshape(b, r, -1), "deltas": box_deltas.reshape(b, r, -1, 4),
               "labels": rois["labels"], "target_deltas": rois["deltas"], "valid": rois["valid"]}

    # mask head on the foreground RoIs, with their ground truth's mask cropped to 28 x 28
    rm = self.mask_rois
    mask_boxes, mask_labels = rois["boxes"][:, :rm], rois["labels"][:, :rm]
    mask_size = 2 * self.mask_pool
    shift = mask_grid_shift(stride, self.aligned)
    mask_targets = jax.vmap(partial(target_ops.mask_targets, mask_stride=stride, size=mask_size,
                                    sampling_ratio=self.sampling_ratio, aligned=self.aligned))(
        gt_masks, mask_boxes - shift, rois["gt_index"][:, :rm])
    mask_logits = mask_head(self.pool(pyramid, mask_boxes.reshape(-1, 4), jnp.repeat(jnp.arange(b), rm),
                                      self.mask_pool), True)
    mask_logits = jnp.take_along_axis(mask_logits, mask_labels.reshape(-1, 1, 1, 1), axis=-1)[..., 0]
    mask_out = {"logits": mask_logits.reshape(b, rm, mask_size, mask_size), "targets": mask_targets,
                "valid": rois["foreground"][:, :rm]}
    return {"rpn": rpn_out, "box": box_out, "mask": mask_out}

  def detect(self, pyramid, proposals, proposal_valid, image_sizes, box_head, mask_head, with_candidates=False):
    b, p = proposals.shape[:2]
    logits, deltas = box_head(self.pool(pyramid, proposals.reshape(-1, 4), jnp.repeat(jnp.arange(b), p),
                                        self.box_pool), False)
    found = candidates(logits.reshape(b, p, -1), deltas.reshape(b, p, -1, 4), proposals, proposal_valid,
                       image_sizes, self.score_threshold)
    det_boxes, det_classes, det_scores, det_valid = select(*found, self.nms_threshold, self.detections,
                                                           self.detections_pre_nms)
    masks = self.mask_probabilities(pyramid, det_boxes, det_classes, mask_head)
    out = {"boxes": det_boxes, "classes": det_classes, "scores": det_scores, "valid": det_valid,
           "masks": jnp.where(det_valid[..., None, None], masks, 0.0)}
    if with_candidates:  # every (proposal, class) box and score before the NMS (test-time augmentation)
      out["candidates"] = dict(zip(("boxes", "scores", "valid"), found))
    return out

  def mask_probabilities(self, pyramid, boxes, classes, mask_head):
    """boxes (B, D, 4) canvas pixels, classes (B, D) -> (B, D, 28, 28) mask probabilities of
    each box's class."""
    b, d = classes.shape
    mask_logits = mask_head(self.pool(pyramid, boxes.reshape(-1, 4), jnp.repeat(jnp.arange(b), d),
                                      self.mask_pool), False)
    mask_logits = jnp.take_along_axis(mask_logits, (classes.reshape(-1, 1, 1, 1) + 1), axis=-1)[..., 0]
    s = 2 * self.mask_pool
    return jax.nn.sigmoid(mask_logits).reshape(b, d, s, s)
