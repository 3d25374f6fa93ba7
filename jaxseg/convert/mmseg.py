"""mmsegmentation: ResNetV1c backbones, the FCN, DeepLabV3, PSPNet, DANet and FastFCN
(JPU + PSP/ASPP/EncNet) models and STDC1/2, as saved by its runner ({"meta", "state_dict"}).

ResNetV1c = a deep stem (three 3x3 ConvModules: stem.0/1, stem.3/4, stem.6/7) and
torchvision-style Bottlenecks; "-d8"/"-d16" models dilate the last stages with
contract_dilation; its FastFCN "-d32" backbone keeps the strides and dilates them too
(dilations (1, 1, 2, 4)), unlike the FastFCN authors'. ConvModule = conv (no bias) + BN ("bn") + ReLU. Two heads
concatenate in another order than ours, fixed up below: ASPPHead puts the image pool
first ([pool, 1x1, r1, r2, r3]; ours: [1x1, r1, r2, r3, pool]) and projects with a
3x3 "bottleneck"; JPU concatenates [c2, c3, c4] (ours: [c4, c3, c2]). Upsampling is
bilinear with align_corners=False in these configs.

STDC (STDCContextPathNet): backbone.backbone is the STDCNet (stages.0/1 ConvModules,
stages.2-4 STDC modules with bottleneck_type "cat"); backbone.{conv_avg, arms, convs,
ffm} are the context path and fusion; the decode head and the two auxiliary heads are
FCNHeads (one 3x3 ConvModule, conv_seg with a bias) on the fusion, the 1/8 and the 1/16
path. Its detail head (auxiliary_head.2) predicts 2 sigmoid channels where ours
predicts 1: it is training only and is skipped (model.head.detail_head = False). Logits
are upsampled with align_corners=True.
"""
from __future__ import annotations

import re

from jaxseg.config import aux_head, head, neck
from jaxseg.convert.io import ConversionError
from jaxseg.convert.tables import Arch, backbone_keys, parse_depth, prefixed, reorder_blocks, resnet_rows, shape

RESNET_V1C = [
    ("stem.0", "backbone/stem1/conv", "conv"),
    ("stem.1", "backbone/stem1/bn", "bn"),
    ("stem.3", "backbone/stem2/conv", "conv"),
    ("stem.4", "backbone/stem2/bn", "bn"),
    ("stem.6", "backbone/stem3/conv", "conv"),
    ("stem.7", "backbone/stem3/bn", "bn"),
    *resnet_rows(),
]


def conv_module(src, dst):
  """mmcv ConvModule: .conv + .bn -> our ConvBN's conv/ and bn/."""
  return [(f"{src}.conv", f"{dst}/conv", "conv"), (f"{src}.bn", f"{dst}/bn", "bn")]


ASPP_HEAD = [  # mmseg.models.decode_heads.ASPPHead (dilations (1, 12, 24, 36))
    *conv_module("decode_head.image_pool.1", "decode_head/aspp/image_pool"),  # .0 is the pooling
    *conv_module("decode_head.aspp_modules.0", "decode_head/aspp/conv1x1"),
    *conv_module("decode_head.aspp_modules.1", "decode_head/aspp/atrous0"),
    *conv_module("decode_head.aspp_modules.2", "decode_head/aspp/atrous1"),
    *conv_module("decode_head.aspp_modules.3", "decode_head/aspp/atrous2"),
    *conv_module("decode_head.bottleneck", "decode_head/aspp/project"),
    ("decode_head.conv_seg", "decode_head/classifier", "conv"),
]

PSP_HEAD = [  # PSPHead: PPM branches for pool scales (1, 2, 3, 6), then a 3x3 bottleneck
    *conv_module("decode_head.psp_modules.0.1", "decode_head/ppm/bin1"),
    *conv_module("decode_head.psp_modules.1.1", "decode_head/ppm/bin2"),
    *conv_module("decode_head.psp_modules.2.1", "decode_head/ppm/bin3"),
    *conv_module("decode_head.psp_modules.3.1", "decode_head/ppm/bin6"),
    *conv_module("decode_head.bottleneck", "decode_head/bottleneck"),
    ("decode_head.conv_seg", "decode_head/classifier", "conv"),
]

DA_HEAD = [  # DAHead: PAM and CAM branches, a classifier on each and on their sum
    *conv_module("decode_head.pam_in_conv", "decode_head/pam_in"),
    ("decode_head.pam.query_project", "decode_head/pam/query", "conv"),
    ("decode_head.pam.key_project", "decode_head/pam/key", "conv"),
    ("decode_head.pam.value_project", "decode_head/pam/value", "conv"),
    ("decode_head.pam.gamma", "decode_head/pam", "gamma"),
    *conv_module("decode_head.pam_out_conv", "decode_head/pam_out"),
    ("decode_head.pam_conv_seg", "decode_head/pam_classifier", "conv"),
    *conv_module("decode_head.cam_in_conv", "decode_head/cam_in"),
    ("decode_head.cam.gamma", "decode_head/cam", "gamma"),
    *conv_module("decode_head.cam_out_conv", "decode_head/cam_out"),
    ("decode_head.cam_conv_seg", "decode_head/cam_classifier", "conv"),
    ("decode_head.conv_seg", "decode_head/classifier", "conv"),
]

FCN_HEAD = [  # FCNHead(num_convs=2, concat_input=True), the fcn_r*-d8 decode head
    *conv_module("decode_head.convs.0", "decode_head/conv"),
    *conv_module("decode_head.convs.{i}", "decode_head/conv{i+1}"),
    *conv_module("decode_head.conv_cat", "decode_head/conv_cat"),
    ("decode_head.conv_seg", "decode_head/classifier", "conv"),
]

ENC_HEAD = [  # EncHead(add_lateral=False) on the JPU output, with its SE layer
    *conv_module("decode_head.bottleneck", "decode_head/reduce"),
    *conv_module("decode_head.enc_module.encoding_project", "decode_head/encode_in"),
    ("decode_head.enc_module.encoding.0", "decode_head/encoding", "encoding"),
    ("decode_head.enc_module.encoding.1", "decode_head/encoding_bn", "bn"),  # BatchNorm1d over the codewords
    ("decode_head.enc_module.fc.0", "decode_head/attention", "linear"),
    ("decode_head.conv_seg", "decode_head/classifier", "conv"),
    ("decode_head.se_layer", "decode_head/se_classifier", "linear"),
]

def fcn_output(src, dst):
  """FCNHead(num_convs=1, concat_input=False): one ConvModule and conv_seg, as our FCN
  auxiliary head and STDC's Output name them."""
  return [*conv_module(f"{src}.convs.0", f"{dst}/conv"), (f"{src}.conv_seg", f"{dst}/classifier", "conv")]


FCN_AUX = fcn_output("auxiliary_head", "aux_heads_aux")

JPU_DILATIONS = (1, 2, 4, 8)
JPU_NECK = [  # FastFCN's JPU: conv_layers on (c2, c3, c4), separable dilation_layers
    *conv_module("neck.conv_layers.0.0", "neck/conv_c2"),
    *conv_module("neck.conv_layers.1.0", "neck/conv_c3"),
    *conv_module("neck.conv_layers.2.0", "neck/conv_c4"),
]
for _i, _d in enumerate(JPU_DILATIONS):
  JPU_NECK += [
      (f"neck.dilation_layers.{_i}.0.depthwise_conv.conv", f"neck/dilation{_d}/depthwise", "conv"),
      (f"neck.dilation_layers.{_i}.0.depthwise_conv.bn", f"neck/dilation{_d}/depthwise_bn", "bn"),
      *conv_module(f"neck.dilation_layers.{_i}.0.pointwise_conv", f"neck/dilation{_d}/pointwise"),
  ]


def aspp_concat_order(out):
  """mmseg's bottleneck reads [pool, 1x1, r1, r2, r3]; ours reads [1x1, r1, r2, r3, pool]."""
  key = "params/decode_head/aspp/project/conv/kernel"
  value, src = out[key]
  out[key] = (reorder_blocks(value, 2, (1, 2, 3, 4, 0)), src)


def jpu_concat_order(out):
  """mmseg's JPU concatenates [c2, c3, c4] before the separable convs; ours [c4, c3, c2].
  The depthwise conv and its BN are per channel, the pointwise conv reads them: all
  three are reordered on the concatenated axis."""
  for d in JPU_DILATIONS:
    for key, axis in ((f"params/neck/dilation{d}/depthwise/kernel", 3),
                      (f"params/neck/dilation{d}/pointwise/conv/kernel", 2),
                      *((f"{c}/neck/dilation{d}/depthwise_bn/{leaf}", 0)
                        for c, leaf in (("params", "scale"), ("params", "bias"),
                                        ("batch_stats", "mean"), ("batch_stats", "var")))):
      if key in out:
        value, src = out[key]
        out[key] = (reorder_blocks(value, axis, (2, 1, 0)), src)


STDC_NET = [  # stages.{s} for s >= 2 hold STDC modules {m}: our stage{s+1}_{m}
    *conv_module("stages.0", "backbone/stage1"),
    *conv_module("stages.1", "backbone/stage2"),
    *conv_module("stages.{s}.{m}.layers.{i}", "backbone/stage{s+1}_{m}/block{i+1}"),
    ("stages.{s}.{m}.downsample.conv", "backbone/stage{s+1}_{m}/downsample_conv", "conv"),
    ("stages.{s}.{m}.downsample.bn", "backbone/stage{s+1}_{m}/downsample_bn", "bn"),
]


STDC_SEG = [
    *prefixed(STDC_NET, "backbone.backbone."),
    *conv_module("backbone.conv_avg", "decode_head/global_context"),
    *conv_module("backbone.arms.0.conv_layer", "decode_head/arm32/conv"),  # arms.0 refines the 1/32 feature
    *conv_module("backbone.arms.0.atten_conv_layer.1", "decode_head/arm32/attention"),
    *conv_module("backbone.arms.1.conv_layer", "decode_head/arm16/conv"),
    *conv_module("backbone.arms.1.atten_conv_layer.1", "decode_head/arm16/attention"),
    *conv_module("backbone.convs.0", "decode_head/up32"),
    *conv_module("backbone.convs.1", "decode_head/up16"),
    *conv_module("backbone.ffm.conv0", "decode_head/ffm/conv"),
    ("backbone.ffm.attention.1.conv", "decode_head/ffm/squeeze", "conv"),
    ("backbone.ffm.attention.2.conv", "decode_head/ffm/excite", "conv"),
    *fcn_output("decode_head", "decode_head/seg_head"),
    *fcn_output("auxiliary_head.0", "decode_head/aux16_head"),  # in_index 2: the 1/8 context path
    *fcn_output("auxiliary_head.1", "decode_head/aux32_head"),  # in_index 1: the 1/16 one
]


def stdc_arch(name, stdc, backbone_only):
  """mmseg STDC1/2: the STDCNet alone (ImageNet weights, or the backbone of a
  segmentation checkpoint), or the whole STDC segmentation model."""
  if backbone_only:
    def config(sd):
      return {"model.backbone.name": stdc, "model.backbone.width": shape(sd, "stages.1.conv.weight")[0],
              "model.backbone.output_stride": 32, "model.eval_output_stride": 32, "model.head": head("stdc")}
    return Arch(name, STDC_NET, config, skip=(r"final_conv\..*",), strip_prefix="backbone.backbone.",
                backbone_only=True)

  def config(sd):
    context, width = shape(sd, "backbone.conv_avg.conv.weight")[0], shape(sd, "decode_head.convs.0.conv.weight")[0]
    if 2 * context != width:
      raise ConversionError(f"backbone.conv_avg has {context} channels and decode_head.convs.0 {width}: "
                            "jaxseg's STDC context path is half the head's width")
    has_aux = "auxiliary_head.0.conv_seg.weight" in sd
    stdc_head = head("stdc", channels=width, aux_heads=has_aux, detail_head=False, classifier_bias=True,
                     aux_channels=shape(sd, "auxiliary_head.0.convs.0.conv.weight")[0] if has_aux else 64)
    return {"model.backbone.name": stdc, "model.backbone.width": shape(sd, "backbone.backbone.stages.1.conv.weight")[0],
            "model.backbone.output_stride": 32, "model.eval_output_stride": 32,
            "model.neck": neck(""), "model.aux_heads": {},  # the decoder has its own auxiliary heads
            "model.head": stdc_head, "model.align_corners": True,
            "dataset.num_classes": shape(sd, "decode_head.conv_seg.weight")[0]}
  return Arch(name, STDC_SEG, config, skip=(r"auxiliary_head\.2\..*",))


def head_keys(sd, name, dilation):
  """The model.head keys of mmseg's decode head `name` in state dict `sd`."""
  bottleneck = "decode_head.bottleneck.conv.weight"
  if name == "aspp":
    return dict(channels=shape(sd, bottleneck)[0], rates=(6, 12, 18), project_kernel=3, extra_conv=False)
  if name == "encnet":
    return dict(channels=shape(sd, bottleneck)[0], reduce_kernel=shape(sd, bottleneck)[2],
                codewords=shape(sd, "decode_head.enc_module.encoding.0.codewords")[0])
  if name == "fcn":
    return dict(channels=shape(sd, "decode_head.convs.0.conv.weight")[0], dilation=dilation,
                num_convs=len({k.split(".")[2] for k in sd if k.startswith("decode_head.convs.")}),
                concat_input="decode_head.conv_cat.conv.weight" in sd)
  if name == "psp":
    return dict(channels=shape(sd, bottleneck)[0], bins=(1, 2, 3, 6), pooling="avg", reduction=True)
  return dict(cam_variant="official")  # danet; mmseg's CAM: softmax(rowmax - energy)


HEADS = {"deeplabv3": ("aspp", ASPP_HEAD), "pspnet": ("psp", PSP_HEAD), "danet": ("danet", DA_HEAD),
         "fcn": ("fcn", FCN_HEAD), "enc": ("encnet", ENC_HEAD)}
KNOWN = ("resnet{18,50,101}_v1c, {fcn,deeplabv3,pspnet,danet}_r{50,101}-d{8,16}, deeplabv3_r{50,101}-d16-mg124, "
         "fcn-d6_r{50,101}-d16, "
         "fastfcn_r{50,101}-d32_jpu_{psp,aspp,enc}, stdc{1,2} (backbone), stdc{1,2}_seg")


def arch(name):
  m = re.fullmatch(r"(stdc[12])(_seg)?", name)
  if m:
    return stdc_arch(name, m.group(1), backbone_only=not m.group(2))
  m = re.fullmatch(r"resnet(?P<depth>\d+)_v1c", name)
  if m:
    depth = parse_depth(name, m, KNOWN)
    return Arch(name, RESNET_V1C, lambda sd: backbone_keys(depth, shape(sd, "stem.6.weight")[0], "deep"),
                skip=(r"fc\..*",), strip_prefix="backbone.", backbone_only=True)
  m = re.fullmatch(r"(?P<method>fcn|deeplabv3|pspnet|danet)_r(?P<depth>\d+)-d(?P<os>8|16)", name)
  m = m or re.fullmatch(r"(?P<method>deeplabv3)_r(?P<depth>\d+)-d(?P<os>16)-(?P<mg>mg124)", name)
  m = m or re.fullmatch(r"(?P<method>fcn)-(?P<d6>d6)_r(?P<depth>\d+)-d(?P<os>16)", name)
  m = m or re.fullmatch(r"fastfcn_r(?P<depth>\d+)-d(?P<os>32)_jpu_(?P<method>psp|aspp|enc)", name)
  depth = parse_depth(name, m, KNOWN)
  method, os_ = m.group("method"), int(m.group("os"))
  multi_grid, head_dilation = bool(m.groupdict().get("mg")), 6 if m.groupdict().get("d6") else 1
  fastfcn = name.startswith("fastfcn")
  head_name, head_table = HEADS[{"psp": "pspnet", "aspp": "deeplabv3"}.get(method, method)]
  table = prefixed(RESNET_V1C, "backbone.") + head_table + FCN_AUX + (JPU_NECK if fastfcn else [])

  def config(sd):
    keys = backbone_keys(depth, shape(sd, "backbone.stem.6.weight")[0], "deep", output_stride=os_)
    has_aux = "auxiliary_head.conv_seg.weight" in sd
    keys.update({
        "model.neck": neck("jpu", channels=shape(sd, "neck.conv_layers.0.0.conv.weight")[0]) if fastfcn else neck(""),
        "model.align_corners": False,  # the upsampling of these models
        "model.dropout": 0.1,
        "dataset.num_classes": shape(sd, "decode_head.conv_seg.weight")[0],
    })
    # fcn-d6: both FCN heads' 3x3 convs (not the fusion) dilated by 6
    aux = aux_head(channels=shape(sd, "auxiliary_head.convs.0.conv.weight")[0], dilation=head_dilation) \
        if has_aux else None
    keys["model.aux_heads"] = {"aux": aux} if has_aux else {}
    if multi_grid:
      # mmseg's multi_grid gives layer4's rates themselves, (1, 2, 4), where ours multiply
      # the stage's rate: with the stage rate 1 (strides from OS16, no dilation) they agree.
      keys.update({"model.backbone.multi_grid": (1, 2, 4), "model.backbone.dilations": (1, 1, 1, 1)})
    if fastfcn:
      # mmseg's "-d32" ResNetV1c keeps the strides and still dilates layer3 / layer4
      # (dilations (1, 1, 2, 4), contract_dilation) in all its FastFCN configs; the
      # authors' backbone is not dilated, jaxseg's default.
      keys["model.backbone.dilations"] = (1, 1, 2, 4)
    keys["model.head"] = head(head_name, **head_keys(sd, head_name, head_dilation))
    return keys

  def fixup(out):
    if head_name == "aspp":
      aspp_concat_order(out)
    if fastfcn:
      jpu_concat_order(out)

  return Arch(name, table, config, fixup=fixup)
