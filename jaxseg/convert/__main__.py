"""python -m jaxseg.convert --from SOURCE --arch NAME --input FILE --output DIR [--config FILE.py]

  --from torchvision --arch resnet101 --input resnet101-63fe2227.pth --output weights/tv_r101
  --from torchvision --arch deeplabv3_resnet101 --input deeplabv3_resnet101_coco.pth --output runs/tv_dlv3
  --from mmseg --arch pspnet_r50-d8 --input pspnet_r50-d8_512x1024_40k_cityscapes.pth \\
      --config configs/pspnet_cityscapes.py --output runs/mmseg_psp
  --from mmseg --arch stdc1_seg --input stdc1_512x1024_80k_cityscapes.pth \\
      --config configs/stdc1_cityscapes.py --output runs/mmseg_stdc1
  --from timm --arch resnet50.a1_in1k --input model.safetensors --output weights/timm_r50
  --from transformers --arch microsoft/resnet-50 --input model.safetensors --output weights/hf_r50
  --from transformers --arch microsoft/swin-large-patch4-window12-384-in22k --input model.safetensors \
      --output weights/hf_swin_l        (SwinModel / SwinBackbone / a OneFormer checkpoint's backbone)
  --from timm --arch swin_large_patch4_window12_384 --input model.safetensors --output weights/timm_swin_l
      (also the Microsoft release's .pth and, as "backbone.*", the OneFormer authors' checkpoints)
  --from transformers --arch oneformer --input oneformer_ade20k_swin_large/model.safetensors --output runs/hf_oneformer
      (the whole OneFormerForUniversalSegmentation, its text mapper where the checkpoint has one; the
      attention heads from the config.json beside the file, else 8)
  --from torchvision --arch resnet50 --classifier --input resnet50-11ad3fa6.pth --output members/tv_r50
  --from torchvision --arch maskrcnn_resnet50_fpn --input maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth \
      --config configs/panet_coco.py:maskrcnn --output weights/tv_maskrcnn
      (the detection family's Mask R-CNN setting, COCO's 80 things; config model.init_from=weights/tv_maskrcnn
      starts a Mask R-CNN or PANet run from it)

--config (optional) supplies the dataset, input and evaluation settings written to
OUTPUT/config.json; the model keys come from the checkpoint.
"""
from __future__ import annotations

import argparse
import sys

from jaxseg.convert import SOURCES, convert, load_config_file
from jaxseg.errors import UserError


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m jaxseg.convert", description=__doc__.split("\n\n")[0])
  p.add_argument("--from", dest="source", required=True, choices=sorted(SOURCES))
  p.add_argument("--arch", required=True, help="architecture of the checkpoint (e.g. resnet101, "
                 "deeplabv3_resnet101, maskrcnn_resnet50_fpn, pspnet_r50-d8, stdc1_seg, resnet50c, microsoft/resnet-50, swin, oneformer, "
                 "swin_large_patch4_window12_384)")
  p.add_argument("--input", required=True, help=".pth/.pt/.bin or .safetensors file")
  p.add_argument("--output", required=True, help="directory to create")
  p.add_argument("--config", default=None, help="config file for the non-model settings")
  p.add_argument("--classifier", action="store_true", help="keep the ImageNet classifier (fc): an ensemble "
                 "member of python -m jaxseg.pssl.generate (torchvision, timm, transformers ResNets)")
  args = p.parse_args(argv)
  try:
    config = load_config_file(args.config) if args.config else None
    report = convert(args.source, args.arch, args.input, args.output, config, args.classifier)
  except UserError as e:
    print(f"jaxseg.convert: error: {e}", file=sys.stderr)
    return 2
  what = "classifier" if report["classifier"] else "backbone" if report["backbone_only"] else "model"
  print(f"converted {len(report['loaded'])} tensors of the {args.arch} {what} to {args.output}; "
        f"skipped {len(report['skipped'])}: {', '.join(report['skipped'][:8])}"
        + (" ..." if len(report["skipped"]) > 8 else ""))
  print(f"full report: {args.output}/converted.json")
  return 0


if __name__ == "__main__":
  sys.exit(main())
