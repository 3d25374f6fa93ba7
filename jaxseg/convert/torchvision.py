"""torchvision: ImageNet ResNets (resnet18 ... resnet152), the segmentation models
deeplabv3_resnet50/101 and fcn_resnet50/101, and the detectors maskrcnn_resnet50_fpn and
maskrcnn_resnet50_fpn_v2.

The segmentation models run the ResNet at output stride 8 (replace_stride_with_dilation
= [False, True, True]: the first block of a dilated stage keeps the previous rate);
DeepLabHead = ASPP (rates 12/24/36, image pooling last, 1x1 projection with dropout
0.5) -> 3x3 conv + BN + ReLU -> 1x1 classifier; FCNHead = 3x3 conv to C/4 + BN + ReLU
-> dropout 0.1 -> 1x1 classifier, also the auxiliary head on layer3. Logits are
upsampled bilinearly with align_corners=False.

maskrcnn_resnet50_fpn (also maskrcnn_resnet101_fpn etc., torchvision's MaskRCNN on
_resnet_fpn_extractor) becomes the detection family's "Mask R-CNN" setting
(jaxseg.models.detection.panet: neck fpn without the bottom-up path, one FPN level per
RoI, no FC fusion, no GroupNorm; frozen BN in the backbone, as torchvision's
FrozenBatchNorm2d): a checkpoint of the variables that config model.init_from starts a
Mask R-CNN or PANet run from (PANet's own layers keep their initialisation).
maskrcnn_resnet50_fpn_v2 becomes that setting with presets.mask_rcnn_v2 (config
configs/panet_coco.py:maskrcnn_v2): BatchNorm2d in the backbone, the FPN
(inner_blocks.i.1, layer_blocks.i.1), the box head's 4 convs (FastRCNNConvFCHead
box_head.{0..3}.1, then the FC box_head.5) and the mask head (mask_head.{0..3}.1), their
running statistics into batch_stats; the RPN head's two convs rpn.head.conv.{0,1}.0.
Classes: torchvision's COCO models have 91 outputs, index 0 the background and index i
COCO category id i (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused); the detector's
classes are COCO's 80 thing categories in id order (dataset coco_panoptic's first 80), so
its class t takes torchvision's row COCO_THING_IDS[t] of cls_score, bbox_pred and
mask_fcn_logits, and the background row 0. A checkpoint with another number of outputs
(fine-tuned elsewhere) keeps its rows 1:1: the --config dataset must then have as many
thing classes as the checkpoint has outputs less one.
"""
from __future__ import annotations

import re

import numpy as np

from jaxseg.config import aux_head, head, neck
from jaxseg.convert.io import ConversionError
from jaxseg.convert.tables import (Arch, backbone_keys, classifier_arch, parse_depth, prefixed, resnet_rows,
                                   shape)

# torchvision.models.ResNet: a 7x7 stem conv1/bn1, then layer1..4.
RESNET = [
    ("conv1", "backbone/stem/conv", "conv"),
    ("bn1", "backbone/stem/bn", "bn"),
    *resnet_rows(),
]

# torchvision.models.segmentation.deeplabv3.DeepLabHead, under "classifier".
DEEPLABV3_HEAD = [
    ("classifier.0.convs.0.0", "decode_head/aspp/conv1x1/conv", "conv"),
    ("classifier.0.convs.0.1", "decode_head/aspp/conv1x1/bn", "bn"),
    ("classifier.0.convs.1.0", "decode_head/aspp/atrous0/conv", "conv"),
    ("classifier.0.convs.1.1", "decode_head/aspp/atrous0/bn", "bn"),
    ("classifier.0.convs.2.0", "decode_head/aspp/atrous1/conv", "conv"),
    ("classifier.0.convs.2.1", "decode_head/aspp/atrous1/bn", "bn"),
    ("classifier.0.convs.3.0", "decode_head/aspp/atrous2/conv", "conv"),
    ("classifier.0.convs.3.1", "decode_head/aspp/atrous2/bn", "bn"),
    ("classifier.0.convs.4.1", "decode_head/aspp/image_pool/conv", "conv"),  # .0 is the pooling
    ("classifier.0.convs.4.2", "decode_head/aspp/image_pool/bn", "bn"),
    ("classifier.0.project.0", "decode_head/aspp/project/conv", "conv"),
    ("classifier.0.project.1", "decode_head/aspp/project/bn", "bn"),
    ("classifier.1", "decode_head/extra_conv/conv", "conv"),
    ("classifier.2", "decode_head/extra_conv/bn", "bn"),
    ("classifier.4", "decode_head/classifier", "conv"),
]


def fcn_head(src, dst):
  """torchvision.models.segmentation.fcn.FCNHead: Sequential(conv, BN, ReLU, Dropout, conv)."""
  return [(f"{src}.0", f"{dst}/conv/conv", "conv"), (f"{src}.1", f"{dst}/conv/bn", "bn"),
          (f"{src}.4", f"{dst}/classifier", "conv")]


# COCO's 80 thing categories by id (instances_*2017.json; the first 80 of coco_panoptic)
COCO_THING_IDS = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                  *range(72, 83), *range(84, 91))
COCO_OUTPUTS = 91  # torchvision's COCO detectors: background + ids 1..90


def fpn_rows():
  """torchvision's FeaturePyramidNetwork (inner_blocks.i / layer_blocks.i on c2..c5, as
  Conv2dNormActivation `.i.0` since 0.13, plain `.i` in older checkpoints)."""
  rows = []
  for i in range(4):
    for old in ("", ".0"):
      rows += [(f"backbone.fpn.inner_blocks.{i}{old}", f"neck/lateral{i + 2}/conv", "conv"),
               (f"backbone.fpn.layer_blocks.{i}{old}", f"neck/output{i + 2}/conv", "conv")]
  return rows


# torchvision.models.detection.MaskRCNN: RPNHead, RoIHeads' TwoMLPHead + FastRCNNPredictor,
# MaskRCNNHeads + MaskRCNNPredictor (the RPN conv and the mask convs under their names of
# 0.13 and later, and of earlier checkpoints: rpn.head.conv, mask_head.mask_fcn{k})
MASK_RCNN_HEADS = [
    ("rpn.head.conv", "rpn/conv", "conv"), ("rpn.head.conv.0.0", "rpn/conv", "conv"),
    ("rpn.head.cls_logits", "rpn/cls_logits", "conv"), ("rpn.head.bbox_pred", "rpn/bbox_pred", "conv"),
    ("roi_heads.box_head.fc6", "box_head/fc6", "linear"), ("roi_heads.box_head.fc7", "box_head/fc7", "linear"),
    ("roi_heads.box_predictor.cls_score", "box_head/cls_score", "linear"),
    ("roi_heads.box_predictor.bbox_pred", "box_head/bbox_pred", "linear"),
    ("roi_heads.mask_head.mask_fcn{k}", "mask_head/mask_fcn{k}/conv", "conv"),
    ("roi_heads.mask_head.{k}.0", "mask_head/mask_fcn{k+1}/conv", "conv"),
    ("roi_heads.mask_predictor.conv5_mask", "mask_head/conv5_mask", "conv"),  # (in, out, 2, 2) -> (2, 2, out, in)
    ("roi_heads.mask_predictor.mask_fcn_logits", "mask_head/mask_fcn_logits", "conv"),
]


PREDICTORS = MASK_RCNN_HEADS[-2:] + [
    ("roi_heads.box_predictor.cls_score", "box_head/cls_score", "linear"),
    ("roi_heads.box_predictor.bbox_pred", "box_head/bbox_pred", "linear")]

# maskrcnn_resnet50_fpn_v2: Conv2dNormActivation everywhere (.0 the conv, .1 the BatchNorm2d)
MASK_RCNN_V2 = [
    *[(f"backbone.fpn.{src}.{i}.{j}", f"neck/{dst}{i + 2}/{part}", kind) for i in range(4)
      for src, dst in (("inner_blocks", "lateral"), ("layer_blocks", "output"))
      for j, part, kind in ((0, "conv", "conv"), (1, "norm", "bn"))],
    ("rpn.head.conv.0.0", "rpn/conv", "conv"), ("rpn.head.conv.{k}.0", "rpn/conv{k+1}", "conv"),
    ("rpn.head.cls_logits", "rpn/cls_logits", "conv"), ("rpn.head.bbox_pred", "rpn/bbox_pred", "conv"),
    ("roi_heads.box_head.{k}.0", "box_head/conv{k+1}/conv", "conv"),
    ("roi_heads.box_head.{k}.1", "box_head/conv{k+1}/norm", "bn"),
    ("roi_heads.box_head.5", "box_head/fc6", "linear"),  # .4 is the Flatten
    ("roi_heads.mask_head.{k}.0", "mask_head/mask_fcn{k+1}/conv", "conv"),
    ("roi_heads.mask_head.{k}.1", "mask_head/mask_fcn{k+1}/norm", "bn"),
    *PREDICTORS,
]


def mask_rcnn_fixup(out):
  """fc6 from torchvision's (C, 7, 7) flattening to ours (7, 7, C); the predictor's class
  rows from COCO's 91-id layout to the 80 things (background first)."""
  kernel, key = out["params/box_head/fc6/kernel"]
  if kernel.shape[0] % 49:
    raise ConversionError(f"{key} {kernel.shape[::-1]}: the box head's input must be C x 7 x 7 (MultiScaleRoIAlign 7)")
  c = kernel.shape[0] // 49
  out["params/box_head/fc6/kernel"] = (kernel.reshape(c, 7, 7, -1).transpose(1, 2, 0, 3).reshape(49 * c, -1), key)
  if out["params/box_head/cls_score/bias"][0].shape[0] != COCO_OUTPUTS:
    return
  rows = np.asarray((0, *COCO_THING_IDS))
  for name, per_class in (("box_head/cls_score", 1), ("box_head/bbox_pred", 4), ("mask_head/mask_fcn_logits", 1)):
    columns = (rows[:, None] * per_class + np.arange(per_class)).reshape(-1)  # bbox_pred: 4 per class
    for leaf in ("kernel", "bias"):
      value, key = out[f"params/{name}/{leaf}"]
      out[f"params/{name}/{leaf}"] = (np.take(value, columns, axis=-1), key)


def mask_rcnn_variables(config, sd):
  """{"params/...": ShapeDtypeStruct} of the detector of `config` (its thing classes)."""
  import flax
  import jax
  import jax.numpy as jnp

  from jaxseg.families.detection import thing_classes
  from jaxseg.models.detection.detector import build_detector
  model = build_detector(config, len(thing_classes(config)), (64, 64))  # no shape depends on the canvas
  tree = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "sampling": jax.random.key(0)},
                                           jnp.zeros((1, 64, 64, 3), jnp.float32), train=False))
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def mask_rcnn_arch(name, depth, v2=False):
  from jaxseg import presets
  from jaxseg.config import base_config

  def config(sd):
    preset = presets.mask_rcnn(presets.panet(base_config(), depth))  # the Mask R-CNN setting
    if v2:
      preset = presets.mask_rcnn_v2(preset)
    keys = backbone_keys(depth, shape(sd, "backbone.body.conv1.weight")[0], "7x7")
    keys.update({k: preset[k] for k in ("family", "evals")})
    keys.update({f"{group}.{k}": preset[group][k] for group, names in (
        ("model", ("aux_heads", "dropout")), ("loss", ("weights",)), ("train", ("frozen_bn", "best_metric")))
        for k in names})
    keys["model.neck"] = neck("fpn", channels=shape(sd, "rpn.head.cls_logits.weight")[1], norm=preset.model.neck.norm,
                              bottom_up=False)
    mask_channels = shape(sd, "roi_heads.mask_predictor.conv5_mask.weight")[1]
    if v2:
      box = dict(box_head_layers="4conv1fc", box_conv_channels=shape(sd, "roi_heads.box_head.0.0.weight")[0],
                 representation=shape(sd, "roi_heads.box_head.5.weight")[0],
                 rpn_conv_depth=sum(bool(re.fullmatch(r"rpn\.head\.conv\.\d+\.0\.weight", k)) for k in sd))
    else:
      box = dict(representation=shape(sd, "roi_heads.box_head.fc6.weight")[0])
    keys["model.head"] = head("panet", adaptive_pooling=False, fc_fusion=False, head_norm=preset.model.head.head_norm,
                              mask_channels=mask_channels, **box)
    if shape(sd, "roi_heads.box_predictor.cls_score.weight")[0] == COCO_OUTPUTS:
      keys.update({"dataset.name": "coco_panoptic", "dataset.num_classes": 133,
                   "dataset.thing_classes": tuple(range(len(COCO_THING_IDS)))})
    return keys

  heads = fpn_rows() + MASK_RCNN_HEADS if not v2 else MASK_RCNN_V2
  return Arch(name, prefixed(RESNET, "backbone.body.") + heads, config, fixup=mask_rcnn_fixup,
              variables=mask_rcnn_variables)


KNOWN = ("resnet18/34/50/101/152, deeplabv3_resnet50/101, fcn_resnet50/101, maskrcnn_resnet50_fpn, "
         "maskrcnn_resnet50_fpn_v2")


def arch(name, classifier=False):
  detector = re.fullmatch(r"maskrcnn_resnet(?P<depth>\d+)_fpn(?P<v2>_v2)?", name)
  if detector and classifier:
    raise ConversionError(f"--classifier: --arch {name} is a detector, not an ImageNet classifier")
  if detector:
    return mask_rcnn_arch(name, parse_depth(name, detector, KNOWN), v2=bool(detector.group("v2")))
  m = re.fullmatch(r"(?P<head>deeplabv3_|fcn_)?resnet(?P<depth>\d+)", name)
  depth = parse_depth(name, m, KNOWN)
  if classifier:  # the whole ImageNet classifier, fc included (a PSSL ensemble member)
    if m.group("head"):
      raise ConversionError(f"--classifier: --arch {name} is a segmentation model, not an ImageNet classifier")
    return classifier_arch(name, RESNET, "fc", lambda sd: backbone_keys(depth, shape(sd, "conv1.weight")[0], "7x7"))
  if not m.group("head"):  # an ImageNet classifier: its backbone, without fc
    return Arch(name, RESNET, lambda sd: backbone_keys(depth, shape(sd, "conv1.weight")[0], "7x7"),
                skip=(r"fc\..*",), strip_prefix="backbone.", backbone_only=True)

  deeplab = m.group("head") == "deeplabv3_"
  table = prefixed(RESNET, "backbone.")
  table += DEEPLABV3_HEAD if deeplab else fcn_head("classifier", "decode_head")
  table += fcn_head("aux_classifier", "aux_heads_aux")

  def config(sd):
    keys = backbone_keys(depth, shape(sd, "backbone.conv1.weight")[0], "7x7", output_stride=8)
    has_aux = "aux_classifier.0.weight" in sd
    keys.update({
        "model.neck": neck(""),
        "model.aux_heads": {"aux": aux_head(channels=shape(sd, "aux_classifier.0.weight")[0])} if has_aux else {},
        "model.align_corners": False,  # the upsampling of these models
        "dataset.num_classes": shape(sd, "classifier.4.weight")[0],
    })
    if deeplab:
      keys.update({"model.head": head("aspp", channels=shape(sd, "classifier.1.weight")[0],
                                      rates=(6, 12, 18),  # at OS16: 12/24/36 at OS8
                                      project_kernel=1, extra_conv=True),
                   "model.dropout": 0.5})
    else:
      keys.update({"model.head": head("fcn", channels=shape(sd, "classifier.0.weight")[0]), "model.dropout": 0.1})
    return keys

  return Arch(name, table, config)
