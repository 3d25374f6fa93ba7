"""PANet on Cityscapes instances (Liu et al. 2018, Sec. 4.3, which follows Mask R-CNN's
Cityscapes protocol).

Schedule reproduced: ResNet-50-FPN PANet (bottom-up path, adaptive feature pooling,
fully-connected mask fusion, GroupNorm as the COCO configuration); the short side drawn
from {800, 1024} for training, single-scale inference at 1024 (the full 1024 x 2048
images, scored at that stored size: input.eval_label_size); 8 images per batch, lr 0.01 for 18K iterations and 0.001 for 6K more (24K),
SGD momentum 0.9, weight decay 1e-4, Detectron's warmup; flip. Trained on train_fine
(2,975 images), evaluated on val (500) with COCO's mask AP over the 8 thing classes
(person, rider, car, truck, bus, train, motorcycle, bicycle). Reported val mask AP:
36.5 from ImageNet, 41.4 with COCO pretraining (paper Table 8: 36.4 / 40.7 on test).

The ground truth is read from the cityscapes/panoptic records (python -m jaxseg.prepare
cityscapes/panoptic --manual_dir DIR): train ids 11..18 are the things; instance masks at
half resolution. Start from an ImageNet backbone (--config.model.init_from, as
configs/panet_coco.py) or from a COCO-trained work dir.

Variants (--config configs/panet_cityscapes.py:NAME): `:maskrcnn` the Mask R-CNN setting
(no bottom-up path, one FPN level per RoI, no FC fusion, no GroupNorm); `:tiny` the small
run on the instance view of `shapes` (presets.detection_tiny).
"""
from jaxseg import presets
from jaxseg.config import base_config


def get_config(variant=""):
  c = base_config()
  c.dataset.update(dict(name="cityscapes/panoptic", train_split="train", eval_split="val", num_classes=19,
                        thing_classes=tuple(range(11, 19))))
  c.input.update(dict(scale_mode="short_side", short_side_range=(800, 1024), short_side_step=224, max_long_side=2048,
                      crop_size=(1024, 2048), eval_size=(1024, 2048), eval_short_side=1024, eval_long_side=2048,
                      eval_label_size=(1024, 2048),
                      flip=True, photometric=False, cat_max_ratio=1.0, max_instances=100, instance_mask_stride=2))
  presets.panet(c, depth=50)
  presets.detection_schedule(c, lr=0.01, steps=24000, decay_steps=(18000,), batch_size=8, eval_every=4000)
  c.eval.update(dict(mode="whole", scales=(1.0,), flip=False, batch_size=4, mask_paste="torchvision"))
  return presets.variants(c, variant, "configs/panet_cityscapes.py", {
      "maskrcnn": presets.mask_rcnn,
      "tiny": presets.detection_tiny})
