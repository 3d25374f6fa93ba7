"""Blocks the paper configs share, so that each `configs/*.py` states only what its
paper sets: a benchmark's dataset and evaluation protocol, the augmentation, the
atrous ResNet, the SGD + poly schedule, the inference mode, and the variants
(`:ms`, `:tiny`, ...). Each block writes the config keys it names, nothing else.
"""
from __future__ import annotations

from jaxseg.config import aux_head, head, neck, tiny_variant

MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # multi-scale evaluation of the toolboxes


def dataset(c, name):
  """The benchmark's splits, classes and evaluation canvas (jaxseg.prepare NAME)."""
  if name == "ade20k":
    c.dataset.update(dict(name="ade20k", train_split="train", eval_split="val", num_classes=150))
    # ADE20K protocol (mmseg's Resize(scale=(2048, 512), keep_ratio=True)): each val
    # image resized to short side 512, the long side capped at 2048, padded to a canvas
    # that holds either orientation; the prediction is resized back to the label as
    # stored (at most eval_label_size) and scored there. Sliding windows are placed per
    # image, so the large canvas costs no extra windows, only memory: the (B, 2048, 2048,
    # 150) float32 window sum and scores, 2 x 2.5 GB per image of a device's share of
    # eval.batch_size (pspnet_ade20k's compiled predict: 4.7 GiB at 1 image, 37.6 at 8).
    c.input.update(dict(eval_short_side=512, eval_long_side=2048, eval_size=(2048, 2048),
                        eval_label_size=(2048, 2048)))
  elif name == "cityscapes":  # full-resolution evaluation
    c.dataset.update(dict(name="cityscapes", train_split="train", eval_split="val", num_classes=19))
    c.input.eval_size = (1024, 2048)
  elif name == "voc_aug":  # train_aug: VOC train + SBD (10,582 images); VOC images are at most 500x500
    c.dataset.update(dict(name="voc_aug", train_split="train_aug", eval_split="val", num_classes=21))
    c.input.eval_size = (512, 512)
  elif name == "pascal_context/59":
    # 59 classes, everything else ignored, as the official code counts them;
    # "pascal_context/60" keeps the rest as a background class 0 (num_classes 60).
    c.dataset.update(dict(name="pascal_context/59", train_split="train", eval_split="val", num_classes=59))
    c.input.eval_size = (512, 512)  # PASCAL Context images are at most 500x500
  else:
    raise ValueError(f"presets.dataset: no preset for '{name}'")
  return c


def augment(c, crop, scale_range=(0.5, 2.0), scale_step=0.0, photometric=False, cat_max_ratio=1.0):
  """Random scale (continuous, or in steps), crop, flip, optional photometric distortion."""
  c.input.update(dict(crop_size=tuple(crop), scale_range=tuple(scale_range), scale_step=scale_step,
                      photometric=photometric, cat_max_ratio=cat_max_ratio))
  return c


def pspnet_augment(c):
  """PSPNet's extra augmentations (paper Sec. 5.1 and the authors' code): random
  rotation within +-10 degrees (p 0.5, the label's uncovered canvas ignored) and a
  5x5 Gaussian blur (p 0.5)."""
  c.input.update(dict(rotate_degrees=10.0, rotate_prob=0.5, blur_prob=0.5, blur_kernel=5, blur_sigma=(0.0, 0.0)))
  return c


def resnet(c, depth, output_stride=8, multi_grid=(), stem="deep", eval_output_stride=None):
  """The atrous ResNet backbone, evaluated at `eval_output_stride` (default: the same)."""
  c.model.backbone.update(dict(depth=depth, stem=stem, output_stride=output_stride, multi_grid=tuple(multi_grid)))
  c.model.eval_output_stride = eval_output_stride or output_stride
  return c


def sgd_poly(c, lr, steps, eval_every, batch_size=16, ckpt_every=2000, power=0.9, momentum=0.9,
             weight_decay=1e-4):
  """SGD with momentum, lr * (1 - t / T) ** power, over `steps` of `batch_size`."""
  c.optim.update(dict(lr=lr, power=power, momentum=momentum, weight_decay=weight_decay))
  c.train.update(dict(batch_size=batch_size, steps=steps, eval_every=eval_every, ckpt_every=ckpt_every))
  return c


def slide(c, crop, stride, batch_size):
  """Sliding-window inference of `crop` windows every `stride` pixels."""
  c.eval.update(dict(mode="slide", crop_size=tuple(crop), stride=tuple(stride), batch_size=batch_size))
  return c


def variants(c, variant, path, extra=None):
  """Applies the ','-separated tokens of `variant`: "ms" (multi-scale + flip), "tiny"
  (jaxseg.config.tiny_variant, the smoke settings) and the config's own `extra`
  {token: function(c)}, which may also replace "ms" or "tiny"."""
  known = {"ms": lambda c: c.eval.update(dict(scales=MS_SCALES, flip=True)), "tiny": tiny_variant, **(extra or {})}
  for token in filter(None, variant.split(",")):
    if token not in known:
      raise ValueError(f"unknown variant '{token}' of {path} (known: {', '.join(known)}; "
                       "combine with ',', e.g. ms,tiny)")
    known[token](c)
  return c


def fastfcn(c):
  """FastFCN's model (Wu et al. 2019): ResNet-50, deep stem, NO dilation (output
  stride 32, also at evaluation); the Joint Pyramid Upsampling neck on c2, c3, c4
  (512 channels per level, 2048 out at OS8) replaces c4; the PSP head on it and the
  FCN auxiliary head (weight 0.2, the official --aux default); neck and heads at
  lr x10."""
  resnet(c, 50, output_stride=32)  # the point of FastFCN: no dilated convolutions
  c.model.neck = neck("jpu", channels=512)
  c.model.head = head("psp", channels=512, bins=(1, 2, 3, 6))
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, aux=0.2)
  c.optim.head_lr_mult = 10.0  # everything outside params/backbone: the JPU and the heads
  # The official code's augmentation: short side = 520 x the drawn ratio (base size
  # 520), and a Gaussian blur of random sigma in (0, 1) with p 0.5.
  c.input.update(dict(base_size=520, blur_prob=0.5, blur_kernel=0, blur_sigma=(0.0, 1.0)))
  return c


def fastfcn_encnet(c):
  """The paper's main head on the JPU: Context Encoding (32 codewords) + SE loss 0.2."""
  c.model.head = head("encnet", channels=512, codewords=32)
  c.loss.weights.se = 0.2


def fastfcn_aspp(c):
  """DeepLabv3's head on the JPU (rates 12, 24, 36 at its OS8)."""
  c.model.head = head("aspp", channels=256)


FASTFCN_HEADS = {"encnet": fastfcn_encnet, "aspp": fastfcn_aspp}  # FastFCN's other heads, as variants


def mcibi(c):
  """DeepLabv3 + MCIBI (Jin et al. 2021): C = 512 pixel representations and memory
  rows, the FCN auxiliary head at 0.4, alpha = 0.4 (CE of the class distribution W),
  beta = 1 (CE of H2 on the memory rows)."""
  c.model.head = head("mcibi", channels=512)
  c.model.aux_heads = dict(aux=aux_head(channels=256))
  c.loss.weights = dict(seg=1.0, aux=0.4, dataset_context=0.4, memory=1.0)
  return c


# PSSL (Li et al. 2022): pretraining on ImageNet's pseudo labels, the released recipe
# (PaddleSeg configs/pssl/stdc1_seg_pssl.yml).
PSSL_CLASSES = 1001  # the 1000 ImageNet classes + background (1000)
PSSL_IGNORE = 1001  # the released crop pads labels with 1001


def pssl_pretraining(c, dataset="pssl_generated"):
  """PSSL's released pretraining: ImageNet train with 1001-class pseudo labels (the
  generated ones, or "imagenet_pssl/released"), uint16 labels with ignore 1001; short
  side 256 x a ratio in 0.5-2.0, crop 256, flip, photometric distortion (standing in for
  the released brightness/contrast/saturation 0.2 jitter); CE with background weight
  0.1; SGD momentum 0.9, weight decay 4e-5, lr 0.01 held constant (the released
  StepDecay steps at 2.5M iterations: never), backbone lr x0.1, the rest x1; global
  batch 96 (12 x 8 GPUs). 10 epochs are 133,450 iterations; the authors fine-tune from
  the epoch-5 checkpoint (iteration 66,725), which under a constant lr is the end of a
  66,725-step run: train.steps. Checkpoints every epoch (13,345); no evaluation (no
  masks to score: config.evals is empty)."""
  c.dataset.update(dict(name=dataset, train_split="train", eval_split="train", num_classes=PSSL_CLASSES,
                        ignore_index=PSSL_IGNORE))
  c.input.update(dict(crop_size=(256, 256), base_size=256, scale_range=(0.5, 2.0), scale_step=0.0, flip=True,
                      photometric=True, cat_max_ratio=1.0, rotate_degrees=0.0, blur_prob=0.0,
                      eval_size=(256, 256)))
  c.loss.class_weights = (1.0,) * (PSSL_CLASSES - 1) + (0.1,)  # w(background) = 0.1
  c.loss.ohem = False
  c.optim.update(dict(name="sgd", lr=0.01, momentum=0.9, weight_decay=4e-5, schedule="step", decay_steps=(),
                      warmup_steps=0, poly_after_warmup=False, head_lr_mult=1.0))
  c.optim.lr_mults = ((r"^backbone/", 0.1),)
  c.train.update(dict(batch_size=96, steps=66725, ckpt_every=13345, eval_every=13345, keep_checkpoints=5))
  c.evals = {}
  return c


def pssl_tiny(c):
  """The `:tiny` smoke variant of a PSSL pretraining config: tiny_variant's model
  sizes and steps, on the same 1001-class dataset (64x64 crops)."""
  dataset = c.dataset.name
  tiny_variant(c)
  pssl_pretraining(c, dataset)
  c.input.update(dict(crop_size=(64, 64), base_size=64, eval_size=(64, 64)))
  c.optim.lr = 0.05
  c.train.update(dict(batch_size=8, steps=4, log_every=2, eval_every=4, ckpt_every=2))
  return c


# OneFormer (Jain et al. 2023): the authors' configs (github.com/SHI-Labs/OneFormer,
# configs/<dataset>/oneformer_R50_*.yaml and swin/oneformer_swin_large_*.yaml).
ONEFORMER_NO_DECAY = ("norm", r"(^|/)bn(/|$)", "relative_position_bias_table", "transformer_decoder/query_embed",
                      "transformer_decoder/level_embed", "prompt_ctx", "token_embedding")


def oneformer(c, dataset, num_classes, steps, eval_every=5000, object_mask_threshold=0.8):
  """OneFormer R-50 (the universal family): detectron2's R-50 (7x7 stem, frozen BN,
  strides in the 3x3 convs); 150 queries, 6 deformable encoder layers, 9 decoder layers
  (oneformer.CONFIG); losses CE 2.0 (no object 0.1), mask BCE 5.0, dice 5.0 on 12,544
  points, contrastive 0.5; AdamW lr 1e-4, weight decay 0.05 (none on norms, the Swin
  relative position tables and the nn.Embedding tables, as the authors' build_optimizer;
  biases decayed), backbone lr x0.1, poly 0.9, no warmup, gradient clipping to global
  norm 0.01 (CLIP_GRADIENTS full_model), batch 16. Evaluation every 5000 steps (the
  authors' EVAL_PERIOD): PQ, mask AP and mIoU, each with its task token.

  The authors' FullModelGradientClippingOptimizer hands clip_grad_norm_ the parameter
  iterator its nan_to_num loop has already consumed, so their runs never clip: set
  optim.grad_clip=0 to train as they did."""
  c.family = "universal"
  c.dataset.update(dict(name=dataset, train_split="train", eval_split="val", num_classes=num_classes))
  c.model.backbone.update(dict(name="resnet", depth=50, width=64, stem="7x7", output_stride=32, multi_grid=()))
  c.model.eval_output_stride = 32
  c.model.neck = neck("")
  c.model.head = head("oneformer")
  c.model.aux_heads = {}
  c.train.frozen_bn = ("^backbone/",)  # detectron2's RESNETS.NORM default, FrozenBN
  c.loss.weights = {"class": 2.0, "mask": 5.0, "dice": 5.0, "contrastive": 0.5}
  c.input.update(dict(flip=True, photometric=True, cat_max_ratio=1.0, max_instances=100, instance_mask_stride=1))
  c.optim.update(dict(name="adamw", lr=1e-4, weight_decay=0.05, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8,
                      decay_norm_and_bias=True, no_decay=ONEFORMER_NO_DECAY, schedule="poly", power=0.9,
                      warmup_steps=0, grad_clip=0.01, head_lr_mult=1.0))
  c.optim.lr_mults = ((r"^backbone/", 0.1),)
  c.train.update(dict(batch_size=16, steps=steps, eval_every=eval_every, ckpt_every=eval_every,
                      best_metric="pq"))
  c.evals = dict(panoptic_quality=dict(every=0, object_mask_threshold=object_mask_threshold, overlap_threshold=0.8),
                 coco_ap=dict(every=0, iou_types=("segm",), max_detections=150),
                 confusion=dict(every=0))
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=8))
  return c


def oneformer_swin_l(c, queries=250):
  """The Swin-L variant: Swin-L (C = 192, window 12: the ImageNet-22K 384 checkpoint),
  drop path 0.3, `queries` object queries (250 on ADE20K and Cityscapes, 150 on COCO)
  and as many detections per image; SyncBN does not apply (LayerNorm)."""
  from jaxseg.models.backbones.swin import PRESETS
  c.model.backbone.update(dict(name="swin", drop_path_rate=0.3, **PRESETS["swin_l_384"]))
  c.model.head.queries = queries
  c.evals.coco_ap.max_detections = queries
  c.train.frozen_bn = ()
  return c


def oneformer_tiny(c):
  """The `:tiny` variant of a OneFormer config, a short real run on panoptic `shapes` (8
  classes, 5 things; 1,200 train and 200 val images of 112..160 px): ResNet-10 at width
  8 (BN trained), d = 64, 16 queries (4 context embeddings, 12 texts), one encoder
  layer, 3 decoder layers, one text layer, 256 points; 64 x 64 crops of the image scaled
  by 0.5..1.0; AdamW lr 1e-3 (the backbone at x1: no pretrained weights), poly, no
  warmup, 1,000 steps of 8 images; evaluation on the whole image (160 x 160 canvas)
  every 250 steps. The config's own evaluation thresholds stay (object mask threshold
  0.5 on ADE20K, 0.8 on Cityscapes and COCO). Tests shorten it (train.steps etc.).

  Measured (configs/oneformer_ade20k.py:tiny from the CLI with
  --config.dataset.eval_split='val[:50]' for the evaluations during training; PQ with the
  panoptic token, mIoU the semantic one, mask AP the instance one), on 2 CPU cores that
  other jobs loaded to a load average of 15..30: 61 min wall, 12.7 min of CPU time (user
  10.4 + system 2.3) for the whole run, compilation and the four evaluations included, so
  at most 13 min on 2 idle cores:

    step   PQ     mIoU   mask AP   wall min (loaded)
     250   0.478  0.665  0.148     18.6  (of which ~6 compiling)
     500   0.620  0.800  0.239     30.5
     750   0.670  0.834  0.284     44.3
    1000   0.679  0.858  0.282     61.0

  and, from its last checkpoint, on all 200 val images (--mode eval
  --config.dataset.eval_split=val): PQ 0.679 (things 0.597, stuff 0.814), mIoU 0.860,
  mask AP 0.293. (The evaluations during training predate the canvas's mean-colour
  padding and the cut to the image: on the same 50 images these give PQ 0.660, mIoU
  0.848, mask AP 0.285.)"""
  c.dataset.update(dict(name="shapes_panoptic", train_split="train", eval_split="val", num_classes=8))
  c.model.backbone.update(dict(name="resnet", depth=10, width=8, stem="7x7", drop_path_rate=0.0))
  c.model.head = head("oneformer", dim=64, mask_dim=64, groups=8, encoder_layers=1, encoder_heads=4,
                      encoder_ffn_dim=128, heads=4, decoder_layers=3, queries=16, ffn_dim=128, text_layers=1,
                      text_width=64, n_ctx=4, train_points=256)  # text heads: width / 64
  c.train.frozen_bn = ()
  c.input.update(dict(crop_size=(64, 64), scale_mode="ratio", scale_range=(0.5, 1.0), scale_step=0.0,
                      eval_size=(160, 160), eval_short_side=0, eval_long_side=0, eval_label_size=(160, 160),
                      max_instances=12, instance_mask_stride=1))  # shapes' images: at most 160 x 160
  c.optim.update(dict(lr=1e-3, warmup_steps=0))
  c.optim.lr_mults = ()
  c.evals.coco_ap.max_detections = 16
  c.train.update(dict(batch_size=8, steps=1000, log_every=25, eval_every=250, ckpt_every=250, tensorboard_images=0))
  c.eval.batch_size = 50
  return c


# PANet (Liu et al. 2018) and its Mask R-CNN setting: the detection family
# (jaxseg/families/detection.py, jaxseg/models/detection/detector.py).
DETECTION_LOSSES = ("rpn_objectness", "rpn_box", "box_class", "box_regression", "mask")


def panet(c, depth=50, norm="gn"):
  """The PANet detector: ResNet-`depth` (torchvision's 7x7 stem, not dilated, frozen
  BN as Detectron's ImageNet-initialised backbones), FPN P2..P6 of 256 channels with
  the bottom-up path N2..N6, adaptive feature pooling (max) in the box and mask heads,
  the mask head's fully-connected fusion; GroupNorm on the FPN and mask-head convs (the
  authors' GN configuration). Every loss term weighs 1; box and mask AP (COCO's
  protocol) pick the best checkpoint by mask AP."""
  c.family = "detection"
  c.model.backbone.update(dict(depth=depth, stem="7x7", output_stride=32, multi_grid=()))
  c.model.eval_output_stride = 32
  c.model.neck = neck("fpn", channels=256, norm=norm, bottom_up=True)
  c.model.head = head("panet", adaptive_pooling=True, fusion="max", fc_fusion=True, head_norm=norm)
  c.model.aux_heads = {}
  c.model.dropout = 0.0
  c.loss.weights = {k: 1.0 for k in DETECTION_LOSSES}
  c.train.frozen_bn = ("^backbone/",)
  c.train.best_metric = "mask_ap"
  c.evals = dict(coco_ap=dict(every=0, iou_types=("bbox", "segm")))
  return c


def mask_rcnn(c):
  """The Mask R-CNN setting of a PANet config (the paper's ablation baseline): no
  bottom-up path, each RoI pooled from one FPN level, no fully-connected fusion, no
  GroupNorm; data and schedule unchanged."""
  c.model.neck.update(dict(bottom_up=False, norm="none"))
  c.model.head.update(dict(adaptive_pooling=False, fc_fusion=False, head_norm="none"))
  return c


def mask_rcnn_v2(c):
  """torchvision's maskrcnn_resnet50_fpn_v2 (the improved Mask R-CNN of Li et al. 2021,
  "Benchmarking Detection Transfer Learning with Vision Transformers"): the Mask R-CNN
  setting with BatchNorm in the FPN and in the heads' convs, two convs in the RPN head,
  the 4conv1fc box head (4 conv3x3 256 + BN, one FC 1024), and no frozen BN."""
  mask_rcnn(c)
  c.model.neck.norm = "bn"
  c.model.head.update(dict(rpn_conv_depth=2, box_head_layers="4conv1fc", head_norm="bn"))
  c.train.frozen_bn = ()
  return c


def detection_schedule(c, lr, steps, decay_steps, batch_size=16, eval_every=10000, warmup_steps=500,
                       warmup_ratio=1 / 3):
  """Detectron's solver (the PANet authors' code): SGD momentum 0.9, weight decay 1e-4
  on the conv / fc kernels (none on biases and GroupNorm), biases at twice the lr
  (BIAS_DOUBLE_LR), linear warmup from `warmup_ratio` x lr over `warmup_steps` (500
  iterations from 1/3), lr x 0.1 at each of `decay_steps`."""
  c.optim.update(dict(name="sgd", lr=lr, momentum=0.9, weight_decay=1e-4, decay_norm_and_bias=False,
                      schedule="step", decay_steps=tuple(decay_steps), decay_gamma=0.1, warmup_steps=warmup_steps,
                      warmup="linear", warmup_ratio=warmup_ratio, head_lr_mult=1.0, lr_mults=((r"bias$", 2.0),)))
  c.train.update(dict(batch_size=batch_size, steps=steps, eval_every=eval_every, ckpt_every=min(eval_every, 5000)))
  return c


def detection_tiny(c):
  """The `:tiny` variant of a detection config: a run from scratch on the instance view
  of `shapes` (shapes_panoptic, things disk .. cross), sized for 20 minutes on 2 CPU
  cores (its target: mask AP >= 0.5; the tests override train.steps and the canvas).
  128 x 128 canvases (multi-scale short side 96..128 for training, images scaled to a
  long side of 128 for evaluation and scored at their stored size, at most 160 x 160), ResNet-10 at width 8 with BN trained, the FPN at 32
  channels, the box head's FCs at 256, the mask head (and a conv box head) at 64; few proposals, RoIs
  and detections. SGD lr 0.02 at batch 8 (the paper's 0.02 at 16), Detectron's linear
  warmup over 50 steps, 800 steps with lr x 0.1 at 600 and 733; evaluated once, at the
  end, on the 200 val images. The model's structure (bottom-up path, adaptive pooling,
  FC fusion, or the Mask R-CNN setting) stays the config's, without GroupNorm: at these
  widths its 32 groups hold one FPN channel or two mask-head channels each, and PANet
  :tiny with it ended 0.023 mask AP lower (0.490 vs 0.513, seed 1) and 16% slower."""
  c.dataset.update(dict(name="shapes_panoptic", train_split="train", eval_split="val", num_classes=8,
                        thing_classes=(1, 2, 3, 4, 5)))
  c.input.update(dict(scale_mode="short_side", short_side_range=(96, 128), short_side_step=0, max_long_side=128,
                      crop_size=(128, 128), eval_size=(128, 128), eval_short_side=0, eval_long_side=128,
                      eval_label_size=(160, 160), max_instances=8, instance_mask_stride=1, photometric=False, cat_max_ratio=1.0))
  c.model.backbone.update(dict(depth=10, width=8))
  c.model.neck.channels = 32
  for part, key in ((c.model.neck, "norm"), (c.model.head, "head_norm")):  # GroupNorm out, BatchNorm (v2) kept
    if part[key] == "gn":
      part[key] = "none"
  c.model.head.update(dict(representation=256, mask_channels=64, box_conv_channels=64,
                           anchor_sizes=(16, 32, 64, 128, 256),
                           rpn_pre_nms_top_n_train=256, rpn_post_nms_top_n_train=128, rpn_pre_nms_top_n_test=128,
                           rpn_post_nms_top_n_test=64, rpn_batch_size=64, roi_batch_size=32, mask_rois=8,
                           detections=16, detections_pre_nms=128))
  c.train.frozen_bn = ()
  c.optim.update(dict(lr=0.02, warmup_steps=50, decay_steps=(600, 733)))
  c.train.update(dict(batch_size=8, steps=800, log_every=25, eval_every=800, ckpt_every=400, tensorboard_images=0))
  c.eval.update(dict(batch_size=25))
  return c
