"""The "Mask R-CNN" setting against torchvision's own Mask R-CNN (torchvision.models.detection),
with random weights converted by `python -m jaxseg.convert --from torchvision`:

  parity     maskrcnn_resnet50_fpn (its builder's modules: ResNet-50 with FrozenBatchNorm2d,
             _resnet_fpn_extractor, MaskRCNN) on one 192 x 256 image given to both already
             normalised (GeneralizedRCNNTransform's resize and padding bypassed): P2..P6, the RPN's
             objectness and deltas, the proposals, the box head's logits and deltas and the mask
             head's logits on torchvision's own proposals and detections, and the detections
             (boxes, classes, scores, 28 x 28 masks) to 1e-4 of the largest value.
  parity v2  the same for maskrcnn_resnet50_fpn_v2 (its builder, weights=None: BatchNorm2d in the
             backbone, FPN and heads, random running statistics and affine terms, eval mode; the
             2-conv RPN head, the 4conv1fc box head) in the setting configs/panet_coco.py:maskrcnn_v2.
  import     a small torchvision MaskRCNN saved as a .pth: `python -m jaxseg.convert` -> config
             model.init_from of the Mask R-CNN setting gives its detections; PANet starts from the
             same checkpoint with its own layers at initialisation.

torchvision runs through tests/torchvision_reference.py (its own RoIAlign fallback, NMS in numpy)
where its compiled operators do not load.
"""
import json

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import torchvision_reference

if not torchvision_reference.install():
  pytest.skip("torchvision is not installed", allow_module_level=True)

import torch  # noqa: E402
import torchvision  # noqa: E402
from torchvision.models.detection import MaskRCNN  # noqa: E402
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.image_list import ImageList  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402
from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: E402

from jaxseg.convert import convert_state_dict  # noqa: E402
from jaxseg.convert.__main__ import main as convert_main  # noqa: E402
from jaxseg.convert.init_from import merge, read_variables  # noqa: E402
from jaxseg.convert.torchvision import COCO_THING_IDS  # noqa: E402
from jaxseg.models.detection.box_head import BoxHead  # noqa: E402
from jaxseg.models.detection.detector import build_detector  # noqa: E402
from jaxseg.models.detection.mask_head import MaskHead  # noqa: E402
from jaxseg.models.detection.panet import PANet  # noqa: E402
from tests.conftest import load_config  # noqa: E402
from tests.torch_reference import report  # noqa: E402

H, W = 192, 256
ROWS = np.asarray((0, *COCO_THING_IDS))  # torchvision's outputs that the 80 thing classes keep
UNUSED = np.setdiff1d(np.arange(91), ROWS)


def randomize(model, seed=0):
  """Random weights, non-zero biases and FrozenBatchNorm2d statistics and affine terms (its
  buffers), scaled to keep activations O(1); then a spread of RPN logits, proposal deltas and
  class scores that gives the detector proposals and detections to compare: RPN logits
  within +-10 (no probability saturates to a tie), a few classes above the 0.05 score
  threshold. COCO's 10 unused ids get logit -1e4, as a trained model's never score (their
  softmax terms are exactly 0, so the 80-class conversion computes the same probabilities).
  BatchNorm2d (the v2 model's) is randomised as FrozenBatchNorm2d, its affine terms included."""
  g = torch.Generator().manual_seed(seed)
  bn = (FrozenBatchNorm2d, torch.nn.BatchNorm2d)
  norm_params = {id(p) for m in model.modules() if isinstance(m, bn) for p in m.parameters()}
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, bn):
        n = module.weight.shape[0]
        module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=g))
        module.bias.copy_(0.1 * torch.randn(n, generator=g))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=g))
        module.running_var.copy_(0.5 + torch.rand(n, generator=g))
    for name, p in model.named_parameters():
      if id(p) in norm_params:
        continue
      if p.ndim == 4:  # convs and the mask deconv (in, out, 2, 2)
        fan_in = p.shape[1] * p.shape[2] * p.shape[3] if "conv5_mask" not in name else p.shape[0]
        p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif p.ndim == 2:
        p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1]) ** 0.5)
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    # the features grow to a std of ~20 through the random ResNet: scale the predictors down
    model.rpn.head.cls_logits.weight.mul_(0.1)
    model.rpn.head.bbox_pred.weight.mul_(0.02)
    model.roi_heads.box_predictor.cls_score.weight.mul_(0.2)
    model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
    model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(0.1)
    model.roi_heads.box_predictor.cls_score.bias[UNUSED] = -1e4
  return model.eval()


def numpy_state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def torchvision_outputs(model, x):
  """Every intermediate the parity test compares, from torchvision's own modules; x (1, 3, H, W)
  already normalised."""
  with torch.no_grad():
    features = model.backbone(x)
    images = ImageList(x, [(H, W)])
    objectness, deltas = model.rpn.head(list(features.values()))
    proposals, _ = model.rpn(images, features)
    detections, _ = model.roi_heads(features, proposals, images.image_sizes)
    heads = model.roi_heads
    pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
    logits, box_deltas = heads.box_predictor(heads.box_head(pooled))
    boxes = detections[0]["boxes"]
    mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, [boxes], images.image_sizes)))
  n = x.shape[0]
  return {"features": [features[k].permute(0, 2, 3, 1).numpy() for k in ("0", "1", "2", "3", "pool")],
          "objectness": [o.permute(0, 2, 3, 1).reshape(n, -1).numpy() for o in objectness],
          "deltas": [d.view(n, -1, 4, *d.shape[2:]).permute(0, 3, 4, 1, 2).reshape(n, -1, 4).numpy() for d in deltas],
          "proposals": proposals[0].numpy(), "class_logits": logits.numpy(),
          "box_deltas": box_deltas.view(len(logits), -1, 4).numpy(),
          "mask_logits": mask_logits.permute(0, 2, 3, 1).numpy(),
          "boxes": boxes.numpy(), "labels": detections[0]["labels"].numpy(), "scores": detections[0]["scores"].numpy(),
          "masks": detections[0]["masks"][:, 0].numpy()}


def heads_on(model, variables, pyramid, proposals, boxes):
  """Our box head on `proposals` and our mask head on `boxes` (each padded, one image), pooled
  from our P2..P5 as the model pools them."""
  box_head = BoxHead(model.num_classes, model.representation, adaptive=False, norm=model.head_norm,
                     layers=model.box_head_layers, conv_channels=model.box_conv_channels)
  mask_head = MaskHead(model.num_classes, model.mask_channels, adaptive=False, fc_fusion=False, norm=model.head_norm)
  pool = lambda b, size: model.apply(variables, pyramid, b, jnp.zeros(len(b), jnp.int32), size, method=PANet.pool)
  part = lambda name: {k: v[name] for k, v in variables.items() if name in v}  # params (+ batch_stats)
  logits, deltas = box_head.apply(part("box_head"), pool(proposals, model.box_pool), False)
  masks = mask_head.apply(part("mask_head"), pool(boxes, model.mask_pool), False)
  return logits, deltas, masks


def pad(x, n):
  return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)])


POST = 300  # proposals per image: torchvision's eager RoIAlign holds (RoIs, C, 7, 7, 2, 2) at once


def test_maskrcnn_resnet50_fpn_parity():
  torch.manual_seed(0)
  # maskrcnn_resnet50_fpn(weights=...) builds exactly this (FrozenBatchNorm2d: a pretrained backbone)
  resnet = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)
  tv = randomize(MaskRCNN(_resnet_fpn_extractor(resnet, 3), num_classes=91, rpn_post_nms_top_n_test=POST))
  check_parity(tv, "maskrcnn_resnet50_fpn", "maskrcnn")


def test_maskrcnn_resnet50_fpn_v2_parity():
  torch.manual_seed(0)
  post = 150  # half of POST: the test's cost is mostly torchvision's eager RoIAlign
  tv = torchvision.models.detection.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                             rpn_post_nms_top_n_test=post)
  assert isinstance(tv.backbone.body.bn1, torch.nn.BatchNorm2d) and len(tv.rpn.head.conv) == 2
  randomize(tv)
  with torch.no_grad():  # the conv head's BatchNorm keeps its features O(1): spread the class scores
    tv.roi_heads.box_predictor.cls_score.weight.mul_(3.0)  # (several classes detected, scores up to ~0.5)
  variables = check_parity(tv, "maskrcnn_resnet50_fpn_v2", "maskrcnn_v2", post)
  # the running statistics of every BatchNorm2d became batch_stats (backbone, FPN, box and mask heads)
  stats = flax.traverse_util.flatten_dict(variables["batch_stats"], sep="/")
  for key in ("neck/lateral2/norm/mean", "neck/output5/norm/var", "box_head/conv4/norm/var",
              "mask_head/mask_fcn1/norm/mean"):
    assert key in stats, key
  np.testing.assert_array_equal(stats["box_head/conv1/norm/var"], tv.roi_heads.box_head[0][1].running_var.numpy())


def check_parity(tv, arch, variant, post=POST):
  """torchvision's model `tv` (random, eval) against its conversion by `--arch arch` into the
  config variant `variant`; returns the converted variables."""
  x = torch.rand(1, 3, H, W)
  x = tv.transform.normalize(x[0])[None]  # ImageNet mean / std, as GeneralizedRCNNTransform
  want = torchvision_outputs(tv, x)

  config, variables, _ = convert_state_dict(numpy_state_dict(tv), "torchvision", arch,
                                            load_config("panet_coco", variant))
  config.model.head.update(dict(rpn_post_nms_top_n_test=post, detections_pre_nms=post * 80))  # every candidate
  model = build_detector(config, 80, (H, W))
  images = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
  capture = lambda module, method: module.name in ("neck", "rpn")
  out, state = jax.jit(lambda v, i: model.apply(v, i, train=False, capture_intermediates=capture))(variables, images)
  features = state["intermediates"]["neck"]["__call__"][0]
  objectness, deltas = state["intermediates"]["rpn"]["__call__"][0]

  for level in range(5):
    report(f"P{level + 2}", features[f"p{level + 2}"], want["features"][level])
    report(f"RPN objectness P{level + 2}", objectness[level], want["objectness"][level])
    report(f"RPN deltas P{level + 2}", deltas[level], want["deltas"][level])
  valid = np.asarray(out["proposal_valid"][0])
  assert valid.sum() == len(want["proposals"]) > 100
  report("proposals", np.asarray(out["proposals"][0])[valid], want["proposals"])

  # the heads on torchvision's own proposals and detections, from our P2..P5
  d = len(want["boxes"])
  assert 5 < d <= 100 and len(np.unique(want["scores"])) == d  # no score ties
  pyramid = [features[f"p{level}"] for level in (2, 3, 4, 5)]
  logits, box_deltas, mask_logits = jax.jit(lambda *a: heads_on(model, variables, *a))(
      pyramid, pad(want["proposals"], post), pad(want["boxes"], 100))
  p = len(want["proposals"])
  report("box head class logits", np.asarray(logits)[:p], want["class_logits"][:, ROWS])
  report("box head deltas", np.asarray(box_deltas)[:p], want["box_deltas"][:, ROWS])
  report("mask head logits", np.asarray(mask_logits)[:d], want["mask_logits"][..., ROWS])

  # the detections: the same boxes, classes and scores in the same order, and their masks
  kept = np.asarray(out["valid"][0])
  assert kept.sum() == d
  np.testing.assert_array_equal(ROWS[np.asarray(out["classes"][0])[kept] + 1], want["labels"])
  assert len(np.unique(want["labels"])) > 1
  report("detection boxes", np.asarray(out["boxes"][0])[kept], want["boxes"])
  report("detection scores", np.asarray(out["scores"][0])[kept], want["scores"])
  report("detection masks", np.asarray(out["masks"][0])[kept], want["masks"])
  return variables


def small_maskrcnn():
  """torchvision's MaskRCNN from its own modules at a small size: ResNet-18 (FrozenBatchNorm2d)
  with a 32-channel FPN, a 64-wide box head and a 32-wide mask head, COCO's 91 outputs."""
  resnet = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)
  backbone = BackboneWithFPN(resnet, {f"layer{i}": str(i - 1) for i in range(1, 5)}, [64, 128, 256, 512], 32)
  model = MaskRCNN(backbone, num_classes=None, box_head=TwoMLPHead(32 * 7 * 7, 64),
                   box_predictor=FastRCNNPredictor(64, 91), mask_head=MaskRCNNHeads(32, [32] * 4, 1),
                   mask_predictor=MaskRCNNPredictor(32, 32, 91), min_size=H, max_size=W,
                   rpn_post_nms_top_n_test=100)
  return randomize(model, seed=1)


def small_config(variant):
  config = load_config("panet_coco", variant)
  config.model.backbone.depth = 18
  config.model.neck.channels = 32
  config.model.head.update(dict(representation=64, mask_channels=32, rpn_post_nms_top_n_test=100,
                                detections_pre_nms=100 * 80))
  return config


def zeros_like_variables(model):
  tree = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "sampling": jax.random.key(0)},
                                           jnp.zeros((1, H, W, 3)), train=False))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def test_convert_maskrcnn_checkpoint_and_start_from_it(tmp_path):
  from jaxseg.models.detection.paste import paste_masks
  from tests.conftest import ROOT
  torch.manual_seed(1)
  tv = small_maskrcnn()
  torch.save(tv.state_dict(), tmp_path / "maskrcnn.pth")
  out = str(tmp_path / "converted")
  assert convert_main(["--from", "torchvision", "--arch", "maskrcnn_resnet18_fpn", "--input",
                       str(tmp_path / "maskrcnn.pth"), "--output", out, "--config",
                       f"{ROOT}/configs/panet_coco.py:maskrcnn"]) == 0
  converted = json.load(open(f"{out}/converted.json"))
  assert len(converted["loaded"]) == len(tv.state_dict()) - len(converted["skipped"]) and converted["variables_only"]
  written = json.load(open(f"{out}/config.json"))
  assert written["family"] == "detection" and written["model"]["head"]["adaptive_pooling"] is False
  assert written["model"]["neck"]["bottom_up"] is False and written["dataset"]["thing_classes"] == list(range(80))

  # the Mask R-CNN setting started from it (config model.init_from) detects what torchvision detects,
  # through torchvision's whole forward (GeneralizedRCNNTransform at this size resizes nothing)
  image = torch.rand(3, H, W)
  with torch.no_grad():
    want = tv([image])[0]
  config = small_config("maskrcnn")
  model = build_detector(config, 80, (H, W))
  variables, report_ = merge(zeros_like_variables(model), read_variables(out))
  assert not report_["missing"] and not report_["skipped"]
  x = tv.transform.normalize(image).permute(1, 2, 0)[None].numpy()
  got = jax.jit(lambda v, i: model.apply(v, i, train=False))(variables, jnp.asarray(x))
  kept = np.asarray(got["valid"][0])
  assert kept.sum() == len(want["scores"]) > 5
  np.testing.assert_array_equal(ROWS[np.asarray(got["classes"][0])[kept] + 1], want["labels"].numpy())
  report("boxes", np.asarray(got["boxes"][0])[kept], want["boxes"].numpy())
  report("scores", np.asarray(got["scores"][0])[kept], want["scores"].numpy())
  # masks pasted into the image (eval.mask_paste "torchvision") against torchvision's paste
  pasted = np.asarray(paste_masks(got["masks"][0][kept], got["boxes"][0][kept], (H, W), "torchvision"))
  differ = pasted != (want["masks"][:, 0].numpy() > 0.5)
  print(f"\n[pasted masks] {differ.sum()} of {differ.size} pixels differ")
  assert differ.mean() < 1e-4 and pasted.any()

  # PANet starts from the same checkpoint: what it shares loads, its own layers stay initialised
  config = small_config("")
  config.model.head.head_norm = "none"  # GroupNorm's 32 groups do not divide the FC fusion's 16 channels
  panet = build_detector(config, 80, (H, W))
  _, shared = merge(zeros_like_variables(panet), read_variables(out))
  for key in ("params/backbone/stem/conv/kernel", "batch_stats/backbone/stem/bn/mean", "params/rpn/conv/kernel",
              "params/box_head/fc7/kernel", "params/box_head/cls_score/kernel",
              "params/mask_head/mask_fcn2/conv/kernel",
              "params/mask_head/mask_fcn_logits/kernel", "params/neck/lateral2/conv/kernel"):
    assert key in shared["loaded"], key
  assert any(k.startswith("params/box_head/fc6/fc1_level0") for k in shared["missing"])
  assert any(k.startswith("params/neck/down2") for k in shared["missing"])
  assert any(k.startswith("params/mask_head/mask_fc/") for k in shared["missing"])
  assert "params/box_head/fc6/kernel (not in this model)" in shared["skipped"]


def test_convert_reads_older_key_names_and_names_a_class_mismatch():
  """torchvision's released COCO checkpoint predates its Conv2dNormActivation names
  (backbone.fpn.inner_blocks.0.weight, rpn.head.conv.weight, roi_heads.mask_head.mask_fcn1.weight):
  both spellings convert alike. A dataset of other thing classes than COCO's 80 is refused."""
  from jaxseg.convert.io import ConversionError
  sd = numpy_state_dict(small_maskrcnn())
  old = {}
  for key, value in sd.items():
    key = key.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
    for i in range(4):
      key = key.replace(f"blocks.{i}.0.", f"blocks.{i}.").replace(f"mask_head.{i}.0.", f"mask_head.mask_fcn{i + 1}.")
    old[key] = value
  assert set(old) != set(sd)
  _, new_vars, _ = convert_state_dict(sd, "torchvision", "maskrcnn_resnet18_fpn")
  _, old_vars, _ = convert_state_dict(old, "torchvision", "maskrcnn_resnet18_fpn")
  flat = lambda v: flax.traverse_util.flatten_dict(v, sep="/")
  assert flat(new_vars).keys() == flat(old_vars).keys()
  for key, value in flat(new_vars).items():
    np.testing.assert_array_equal(value, flat(old_vars)[key])
  with pytest.raises(ConversionError, match="predicts 133 classes.*'shapes_panoptic' has 8"):
    convert_state_dict(sd, "torchvision", "maskrcnn_resnet18_fpn", load_config("panet_coco", "maskrcnn,tiny"))
