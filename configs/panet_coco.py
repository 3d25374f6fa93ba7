"""PANet on COCO 2017 instances (Liu et al. 2018, Sec. 4.2; the authors' code,
configs/panet/e2e_panet_R-50-FPN_2x_mask.yaml).

Schedule reproduced: ResNet-50-FPN with the bottom-up path, adaptive feature pooling and
fully-connected mask fusion, GroupNorm on the FPN and mask-head layers (the authors' GN
configuration); batch 16, SGD lr 0.02, momentum 0.9, weight decay 1e-4, Detectron's
linear warmup (500 iterations from lr / 3), the 2x schedule: 180K iterations, lr x 0.1 at
120K and 160K. Multi-scale training: the short side drawn from 400..1200 in steps of 200
(the authors' list is (1200, 1200, 1000, 800, 600, 400), 1200 twice as likely), the long
side at most 1400; single-scale testing at short side 1000, long side <= 1400 (the
authors' TEST.SCALE / MAX_SIZE); flip. Every image on one 1408 x 1408 canvas (both
orientations fit); its boxes and masks mapped back to its stored size (at most 640 x 640,
input.eval_label_size) and scored there, COCO's protocol. Trained on train2017 (118,287 images), evaluated on val2017 (5,000)
with COCO's box and mask AP (pycocotools; masks pasted as torchvision's / Detectron's
paste, eval.mask_paste). Reported val R-50: box AP 42.1, mask AP 37.8 (paper); the
authors' reimplementation 43.1 / 38.3 (2x).

The ground truth is read from the coco_panoptic records (python -m jaxseg.prepare
coco_panoptic --manual_dir DIR): 80 thing classes, the first 80 of its 133 categories
(sorted by COCO id), instance masks at half resolution (input.instance_mask_stride 2,
from which the 28 x 28 mask targets are RoIAligned). Start from an ImageNet backbone:
--config.model.init_from=DIR of `python -m jaxseg.convert` (torchvision ResNet-50),
--config.model.init_from_prefix=backbone.

Variants (--config configs/panet_coco.py:NAME, combined with ','): `:1x` 90K iterations,
steps at 60K / 80K; `:r101` ResNet-101; `:maskrcnn` the Mask R-CNN setting (no bottom-up
path, one FPN level per RoI, no FC fusion, no GroupNorm; the paper's ablation baseline,
data and schedule unchanged; torchvision's checkpoints were evaluated at short side 800,
long 1333: --config.input.eval_short_side=800 --config.input.eval_long_side=1333);
`:maskrcnn_v2` torchvision's maskrcnn_resnet50_fpn_v2 (presets.mask_rcnn_v2: BatchNorm in
the FPN and the heads, a 2-conv RPN head, the 4conv1fc box head, no frozen BN) with its
recipe (github.com/pytorch/vision pull 5773: 32 GPUs x 2 images, SGD lr 0.1, weight decay
4e-5, 400 epochs with lr x 0.1 at epochs 352 and 384, SyncBN, large-scale jitter; reported
val box AP 47.4, mask AP 41.8): batch 64, 1849 iterations an epoch (118,287 / 64), the
warmup of torchvision's references/detection/engine.py (1000 iterations from lr / 1000),
weight decay on every parameter and no doubled bias lr; large-scale jitter as torchvision's
ScaleJitter(1024, 0.1..2.0) + FixedSizeCrop(1024) + flip (input.scale_mode "fit"); evaluated
at short side 800, long 1333 (its GeneralizedRCNNTransform). Not reproduced: its
aspect-ratio grouped batches (every image here is on one square canvas); its backbone
starts from the --weights-backbone of the run (the command names none): start from
random or from an ImageNet ResNet-50 with model.init_from.
`:ms` test-time augmentation (jaxseg.models.detection.augment, Detectron's
im_detect_bbox_aug / im_detect_mask_aug: box candidates merged by union, mask
probabilities averaged): the authors publish no test-time augmentation settings for
PANet (their configs/panet test at one scale), so these are the only ones their
repository carries, Detectron's configs/baselines/e2e_mask_rcnn_X-152-32x8d-FPN-IN5k_1.44x.yaml
(TEST.SCALE 800, BBOX_AUG / MASK_AUG SCALES 400..1200 in steps of 100, MAX_SIZE 2000,
H_FLIP and SCALE_H_FLIP), as factors of the eval resize: 0.5 .. 1.5 in steps of 0.125
(with 1.0), each also flipped; here of short side 1000: 500 .. 1500, views up to 2112 x 2112.
`:tiny` the small run on the instance view of `shapes` (presets.detection_tiny).
"""
from jaxseg import presets
from jaxseg.config import base_config

# Detectron's test-time scales 400..1200 (and TEST.SCALE 800) as factors of the eval resize
MS_SCALES = tuple(s / 800 for s in range(400, 1201, 100))


def maskrcnn_v2(c):
  presets.mask_rcnn_v2(c)
  epoch = 1849  # iterations: 118,287 images at batch 64
  presets.detection_schedule(c, lr=0.1, steps=400 * epoch, decay_steps=(352 * epoch, 384 * epoch), batch_size=64,
                             warmup_steps=1000, warmup_ratio=1e-3)
  c.optim.update(dict(weight_decay=4e-5, decay_norm_and_bias=True, lr_mults=()))
  c.input.update(dict(scale_mode="fit", scale_range=(0.1, 2.0), scale_step=0.0, crop_size=(1024, 1024),
                      eval_short_side=800, eval_long_side=1333, eval_size=(1344, 1344)))
  return c


def get_config(variant=""):
  c = base_config()
  c.dataset.update(dict(name="coco_panoptic", train_split="train", eval_split="val", num_classes=133,
                        thing_classes=tuple(range(80))))
  c.input.update(dict(scale_mode="short_side", short_side_range=(400, 1200), short_side_step=200, max_long_side=1400,
                      crop_size=(1408, 1408), eval_size=(1408, 1408), eval_short_side=1000, eval_long_side=1400,
                      eval_label_size=(640, 640),
                      flip=True, photometric=False, cat_max_ratio=1.0, max_instances=100, instance_mask_stride=2))
  presets.panet(c, depth=50)
  presets.detection_schedule(c, lr=0.02, steps=180000, decay_steps=(120000, 160000), batch_size=16)
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=8, mask_paste="torchvision"))
  return presets.variants(c, variant, "configs/panet_coco.py", {
      "1x": lambda c: presets.detection_schedule(c, lr=0.02, steps=90000, decay_steps=(60000, 80000)),
      "r101": lambda c: c.model.backbone.update(dict(depth=101)),
      "maskrcnn": presets.mask_rcnn,
      "maskrcnn_v2": maskrcnn_v2,
      "ms": lambda c: c.eval.update(dict(scales=MS_SCALES, flip=True)),
      "tiny": presets.detection_tiny})
