"""torchvision: ImageNet ResNets (resnet18 ... resnet152) and the segmentation models
deeplabv3_resnet50/101 and fcn_resnet50/101.

The segmentation models run the ResNet at output stride 8 (replace_stride_with_dilation
= [False, True, True]: the first block of a dilated stage keeps the previous rate);
DeepLabHead = ASPP (rates 12/24/36, image pooling last, 1x1 projection with dropout
0.5) -> 3x3 conv + BN + ReLU -> 1x1 classifier; FCNHead = 3x3 conv to C/4 + BN + ReLU
-> dropout 0.1 -> 1x1 classifier, also the auxiliary head on layer3. Logits are
upsampled bilinearly with align_corners=False.
"""
from __future__ import annotations

import re

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


KNOWN = "resnet18/34/50/101/152, deeplabv3_resnet50/101, fcn_resnet50/101"


def arch(name, classifier=False):
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
