"""PyTorch modules that compute what torchvision's and mmsegmentation's segmentation
models compute, with their exact state-dict key names and shapes (neither library
installs here), for tests/test_convert.py. Written from the libraries' documented
structure: torchvision.models.resnet / segmentation.{deeplabv3,fcn}, mmseg's
ResNetV1c, ASPPHead, PSPHead, DAHead, FCNHead and JPU.
"""
import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin, cout, k, dilation=1):
  return [nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
          nn.BatchNorm2d(cout), nn.ReLU()]


# ---------------------------------------------------------------- torchvision ResNet
class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
  """Stride on the 3x3 conv (ResNet v1.5), dilation on the 3x3 conv."""
  expansion = 4

  def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(out + (x if self.downsample is None else self.downsample(x)))


LAYERS = {10: (BasicBlock, (1, 1, 1, 1)), 14: (Bottleneck, (1, 1, 1, 1)), 18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
          50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
  """torchvision.models.ResNet(width_per_group=64) with a `width` in place of 64;
  `replace_stride_with_dilation` as torchvision's: the first block of a dilated
  stage keeps the previous dilation. stem="deep": mmseg's ResNetV1c stem (stem.0-8)
  in place of conv1/bn1. `dilations`: mmseg's ResNet(strides=(1, 2, 2, 2), dilations=...,
  contract_dilation=True), the strides kept and the stages dilated anyway (the first
  block of a stage at half the rate)."""

  def __init__(self, depth=50, width=64, replace_stride_with_dilation=(False, False, False),
               num_classes=1000, stem="7x7", with_fc=True, dilations=()):
    super().__init__()
    self.stage_dilations = list(dilations) if dilations else None  # popped by _make_layer, layer1 first
    block, layers = LAYERS[depth]
    self.inplanes, self.dilation, self.stem_type = width, 1, stem
    if stem == "7x7":
      self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
      self.bn1 = nn.BatchNorm2d(width)
      self.relu = nn.ReLU()
    else:
      self.stem = nn.Sequential(nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
                                nn.Conv2d(width // 2, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2),
                                nn.ReLU(), nn.Conv2d(width // 2, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                nn.ReLU())
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    self.layer1 = self._make_layer(block, width, layers[0])
    self.layer2 = self._make_layer(block, width * 2, layers[1], 2, replace_stride_with_dilation[0])
    self.layer3 = self._make_layer(block, width * 4, layers[2], 2, replace_stride_with_dilation[1])
    self.layer4 = self._make_layer(block, width * 8, layers[3], 2, replace_stride_with_dilation[2])
    if with_fc:
      self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

  def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
    previous_dilation = self.dilation
    if self.stage_dilations:
      self.dilation = self.stage_dilations.pop(0)
      previous_dilation = max(self.dilation // 2, 1)
    elif dilate:
      self.dilation *= stride
      stride = 1
    downsample = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
    layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
    self.inplanes = planes * block.expansion
    layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def features(self, x):
    """[c1, c2, c3, c4]."""
    x = self.relu(self.bn1(self.conv1(x))) if self.stem_type == "7x7" else self.stem(x)
    x = self.maxpool(x)
    out = []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      x = layer(x)
      out.append(x)
    return out


# ------------------------------------------------- torchvision segmentation models
class ASPPPooling(nn.Sequential):
  def __init__(self, cin, cout):
    super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

  def forward(self, x):
    size = x.shape[-2:]
    for mod in self:
      x = mod(x)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TvASPP(nn.Module):
  def __init__(self, cin, rates, cout=256):
    super().__init__()
    modules = [nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
    modules += [nn.Sequential(*conv_bn_relu(cin, cout, 3, r)) for r in rates]
    modules.append(ASPPPooling(cin, cout))
    self.convs = nn.ModuleList(modules)
    self.project = nn.Sequential(nn.Conv2d(len(modules) * cout, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.Dropout(0.5))

  def forward(self, x):
    return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


def tv_deeplab_head(cin, num_classes, channels=256):
  return nn.Sequential(TvASPP(cin, (12, 24, 36), channels), *conv_bn_relu(channels, channels, 3),
                       nn.Conv2d(channels, num_classes, 1))


def tv_fcn_head(cin, num_classes):
  inter = cin // 4
  return nn.Sequential(*conv_bn_relu(cin, inter, 3), nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class Backbone(nn.Module):
  """IntermediateLayerGetter's key names: the ResNet's modules without avgpool/fc."""

  def __init__(self, resnet):
    super().__init__()
    for name, module in resnet.named_children():
      if name != "fc":
        self.add_module(name, module)
    self.stem_type = resnet.stem_type

  features = ResNet.features


class TvSegmentation(nn.Module):
  """torchvision deeplabv3_resnetD / fcn_resnetD: OS8 ResNet, head on layer4,
  FCN aux head on layer3, logits upsampled to the input (align_corners=False)."""

  def __init__(self, head="deeplabv3", depth=50, width=64, num_classes=21, aspp_channels=256):
    super().__init__()
    self.backbone = Backbone(ResNet(depth, width, (False, True, True)))
    c4, c3 = width * 8 * 4, width * 4 * 4
    self.classifier = (tv_deeplab_head(c4, num_classes, aspp_channels) if head == "deeplabv3"
                       else tv_fcn_head(c4, num_classes))
    self.aux_classifier = tv_fcn_head(c3, num_classes)

  def forward(self, x):
    c4 = self.backbone.features(x)[3]
    return F.interpolate(self.classifier(c4), size=x.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- mmsegmentation
class ConvModule(nn.Module):
  def __init__(self, cin, cout, k, dilation=1, groups=1, act=True, stride=1):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation, groups=groups,
                          bias=False)
    self.bn = nn.BatchNorm2d(cout)
    self.act = act

  def forward(self, x):
    x = self.bn(self.conv(x))
    return F.relu(x) if self.act else x


def mm_resize(x, size, align_corners=False):
  return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class MMASPPHead(nn.Module):
  def __init__(self, cin, channels, num_classes, dilations=(1, 12, 24, 36)):
    super().__init__()
    self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(cin, channels, 1))
    self.aspp_modules = nn.ModuleList([ConvModule(cin, channels, 1 if d == 1 else 3, d) for d in dilations])
    self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, x):
    outs = [mm_resize(self.image_pool(x), x.shape[2:])] + [m(x) for m in self.aspp_modules]
    return self.conv_seg(self.bottleneck(torch.cat(outs, dim=1)))


class MMPSPHead(nn.Module):
  def __init__(self, cin, channels, num_classes, pool_scales=(1, 2, 3, 6)):
    super().__init__()
    self.psp_modules = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(cin, channels, 1))
                                      for s in pool_scales])
    self.bottleneck = ConvModule(cin + len(pool_scales) * channels, channels, 3)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, x):
    outs = [x] + [mm_resize(m(x), x.shape[2:]) for m in self.psp_modules]
    return self.conv_seg(self.bottleneck(torch.cat(outs, dim=1)))


class Scale(nn.Module):
  def __init__(self, value=0.0):
    super().__init__()
    self.scale = nn.Parameter(torch.tensor([value], dtype=torch.float32))

  def forward(self, x):
    return x * self.scale


class PAM(nn.Module):
  """mmseg's _SelfAttentionBlock as DANet's PAM configures it: 1x1 query/key convs to
  `channels`, value to the input width, no norms, softmax over keys, no output conv."""

  def __init__(self, cin, channels):
    super().__init__()
    self.key_project = nn.Conv2d(cin, channels, 1)
    self.query_project = nn.Conv2d(cin, channels, 1)
    self.value_project = nn.Conv2d(cin, cin, 1)
    self.gamma = Scale(0)

  def forward(self, x):
    b, c, h, w = x.shape
    query = self.query_project(x).reshape(b, -1, h * w).permute(0, 2, 1)
    key = self.key_project(x).reshape(b, -1, h * w)
    value = self.value_project(x).reshape(b, c, h * w).permute(0, 2, 1)
    sim = F.softmax(torch.matmul(query, key), dim=-1)
    context = torch.matmul(sim, value).permute(0, 2, 1).reshape(b, c, h, w)
    return self.gamma(context) + x


class CAM(nn.Module):
  def __init__(self):
    super().__init__()
    self.gamma = Scale(0)

  def forward(self, x):
    b, c, h, w = x.shape
    q = x.view(b, c, -1)
    energy = torch.bmm(q, q.permute(0, 2, 1))
    energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
    out = torch.bmm(F.softmax(energy_new, dim=-1), x.view(b, c, -1)).view(b, c, h, w)
    return self.gamma(out) + x


class MMDAHead(nn.Module):
  def __init__(self, cin, channels, num_classes, pam_channels):
    super().__init__()
    self.pam_in_conv = ConvModule(cin, channels, 3)
    self.pam = PAM(channels, pam_channels)
    self.pam_out_conv = ConvModule(channels, channels, 3)
    self.pam_conv_seg = nn.Conv2d(channels, num_classes, 1)
    self.cam_in_conv = ConvModule(cin, channels, 3)
    self.cam = CAM()
    self.cam_out_conv = ConvModule(channels, channels, 3)
    self.cam_conv_seg = nn.Conv2d(channels, num_classes, 1)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, x):
    pam = self.pam_out_conv(self.pam(self.pam_in_conv(x)))
    cam = self.cam_out_conv(self.cam(self.cam_in_conv(x)))
    return self.conv_seg(pam + cam)


class MMFCNHead(nn.Module):
  def __init__(self, cin, channels, num_classes, num_convs=1, concat_input=False):
    super().__init__()
    self.convs = nn.Sequential(*[ConvModule(cin if i == 0 else channels, channels, 3) for i in range(num_convs)])
    if concat_input:
      self.conv_cat = ConvModule(cin + channels, channels, 3)
    self.concat_input = concat_input
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)

  def forward(self, x):
    y = self.convs(x)
    return self.conv_seg(self.conv_cat(torch.cat([x, y], dim=1)) if self.concat_input else y)


class Encoding(nn.Module):
  """mmseg's Encoding, with the explicit (B, N, K, C) residuals: a = softmax(scale *
  |x - c|^2), e_k = sum_i a_ik (x_i - c_k)."""

  def __init__(self, channels, num_codes):
    super().__init__()
    self.codewords = nn.Parameter(torch.empty(num_codes, channels))
    self.scale = nn.Parameter(torch.empty(num_codes))

  def forward(self, x):
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
    residual = x[:, :, None, :] - self.codewords[None, None]  # (B, N, K, C)
    a = F.softmax(self.scale * residual.pow(2).sum(-1), dim=2)
    return (a[..., None] * residual).sum(1)  # (B, K, C)


class EncModule(nn.Module):
  def __init__(self, channels, num_codes):
    super().__init__()
    self.encoding_project = ConvModule(channels, channels, 1)
    self.encoding = nn.Sequential(Encoding(channels, num_codes), nn.BatchNorm1d(num_codes), nn.ReLU())
    self.fc = nn.Sequential(nn.Linear(channels, channels), nn.Sigmoid())

  def forward(self, x):
    feat = self.encoding(self.encoding_project(x)).mean(dim=1)
    return feat, F.relu(x + x * self.fc(feat)[:, :, None, None])


class MMEncHead(nn.Module):
  def __init__(self, cin, channels, num_classes, num_codes=32):
    super().__init__()
    self.bottleneck = ConvModule(cin, channels, 3)
    self.enc_module = EncModule(channels, num_codes)
    self.conv_seg = nn.Conv2d(channels, num_classes, 1)
    self.se_layer = nn.Linear(channels, num_classes)

  def forward(self, x):
    return self.conv_seg(self.enc_module(self.bottleneck(x))[1])


class DepthwiseSeparableConvModule(nn.Module):
  def __init__(self, cin, cout, dilation):
    super().__init__()
    self.depthwise_conv = ConvModule(cin, cin, 3, dilation, groups=cin, act=False)
    self.pointwise_conv = ConvModule(cin, cout, 1)

  def forward(self, x):
    return self.pointwise_conv(self.depthwise_conv(x))


class MMJPU(nn.Module):
  def __init__(self, in_channels, mid, dilations=(1, 2, 4, 8)):
    super().__init__()
    self.conv_layers = nn.ModuleList([nn.Sequential(ConvModule(c, mid, 3)) for c in in_channels])
    self.dilation_layers = nn.ModuleList([nn.Sequential(DepthwiseSeparableConvModule(len(in_channels) * mid, mid, d))
                                          for d in dilations])

  def forward(self, inputs):  # (c2, c3, c4) -> (c2, c3, jpu)
    feats = [conv(x) for conv, x in zip(self.conv_layers, inputs)]
    h, w = feats[0].shape[2:]
    feats = [feats[0]] + [mm_resize(f, (h, w)) for f in feats[1:]]
    feat = torch.cat(feats, dim=1)
    return (*inputs[:-1], torch.cat([layer(feat) for layer in self.dilation_layers], dim=1))


class MMEncoderDecoder(nn.Module):
  """mmseg EncoderDecoder with a ResNetV1c (-d8: dilations (1, 1, 2, 4), contract
  dilation; FastFCN -d32: the same dilations with the strides kept, + JPU).
  Inference: decode head logits resized to the input."""

  def __init__(self, head="deeplabv3", depth=50, width=64, num_classes=19, fastfcn=False, jpu_channels=16,
               d32_dilations=(1, 1, 2, 4)):
    super().__init__()
    self.backbone = ResNet(depth, width, (False, False, False) if fastfcn else (False, True, True), stem="deep",
                           with_fc=False, dilations=d32_dilations if fastfcn else ())
    c2, c3, c4 = width * 2 * 4, width * 4 * 4, width * 8 * 4
    self.neck = MMJPU((c2, c3, c4), jpu_channels) if fastfcn else None
    cin = 4 * jpu_channels if fastfcn else c4
    if head == "deeplabv3":
      self.decode_head = MMASPPHead(cin, cin // 4, num_classes)
    elif head == "pspnet":
      self.decode_head = MMPSPHead(cin, cin // 4, num_classes)
    elif head == "fcn":
      self.decode_head = MMFCNHead(cin, cin // 4, num_classes, num_convs=2, concat_input=True)
    elif head == "encnet":
      self.decode_head = MMEncHead(cin, cin // 4, num_classes, num_codes=8)
    else:
      self.decode_head = MMDAHead(cin, cin // 4, num_classes, cin // 32)
    self.auxiliary_head = MMFCNHead(c3, c3 // 4, num_classes)

  def forward(self, x):
    c1, c2, c3, c4 = self.backbone.features(x)
    if self.neck is not None:
      c4 = self.neck((c2, c3, c4))[-1]
    return mm_resize(self.decode_head(c4), x.shape[2:])


# ---------------------------------------------------------------- mmsegmentation STDC
class MMSTDCModule(nn.Module):
  """bottleneck_type "cat": layers.0 1x1 to N/2, then 3x3 convs to N/4, N/8, N/8; with
  stride 2 a depthwise "downsample" ConvModule follows layers.0 and an average pool
  takes layers.0's output into the concatenation."""

  def __init__(self, cin, cout, stride, num_convs=4):
    super().__init__()
    self.stride = stride
    self.layers = nn.ModuleList([ConvModule(cin, cout // 2, 1)])
    if stride == 2:
      self.downsample = ConvModule(cout // 2, cout // 2, 3, groups=cout // 2, act=False, stride=2)
      self.skip = nn.AvgPool2d(3, 2, 1)
    for i in range(1, num_convs):
      self.layers.append(ConvModule(cout // 2 ** i, cout // 2 ** (i + 1 if i != num_convs - 1 else i), 3))

  def forward(self, x):
    x0 = self.layers[0](x)
    x = self.downsample(x0) if self.stride == 2 else x0
    outs = [self.skip(x0) if self.stride == 2 else x0]
    for layer in self.layers[1:]:
      x = layer(x)
      outs.append(x)
    return torch.cat(outs, dim=1)


class MMSTDCNet(nn.Module):
  def __init__(self, modules=(2, 2, 2), width=64):
    super().__init__()
    channels = (width // 2, width, width * 4, width * 8, width * 16)
    self.stages = nn.ModuleList([ConvModule(3, channels[0], 3, stride=2), ConvModule(channels[0], channels[1], 3, stride=2)])
    for s, n in enumerate(modules):
      self.stages.append(nn.Sequential(*[MMSTDCModule(channels[s + 1] if m == 0 else channels[s + 2], channels[s + 2],
                                                      2 if m == 0 else 1) for m in range(n)]))

  def forward(self, x):
    outs = []
    for stage in self.stages:
      x = stage(x)
      outs.append(x)
    return outs[2:]  # 1/8, 1/16, 1/32


class PlainConv(nn.Module):  # mmcv ConvModule without a norm: .conv, no bias here
  def __init__(self, cin, cout, act):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 1, bias=False)
    self.act = act

  def forward(self, x):
    return F.relu(self.conv(x)) if self.act else self.conv(x)


class MMARM(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    self.conv_layer = ConvModule(cin, cout, 3)
    self.atten_conv_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(cout, cout, 1, act=False), nn.Sigmoid())

  def forward(self, x):
    x = self.conv_layer(x)
    return x * self.atten_conv_layer(x)


class MMSTDCFFM(nn.Module):
  def __init__(self, cin, cout, scale_factor=4):
    super().__init__()
    self.conv0 = ConvModule(cin, cout, 1)
    self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), PlainConv(cout, cout // scale_factor, True),
                                   PlainConv(cout // scale_factor, cout, False), nn.Sigmoid())

  def forward(self, spatial, context):
    x = self.conv0(torch.cat([spatial, context], dim=1))
    return x * self.attention(x) + x


class MMSTDCContextPathNet(nn.Module):
  def __init__(self, modules, width, context):
    super().__init__()
    self.backbone = MMSTDCNet(modules, width)
    self.arms = nn.ModuleList([MMARM(width * 16, context), MMARM(width * 8, context)])
    self.convs = nn.ModuleList([ConvModule(context, context, 3), ConvModule(context, context, 3)])
    self.conv_avg = ConvModule(width * 16, context, 1)
    self.ffm = MMSTDCFFM(width * 4 + context, 2 * context)

  def forward(self, x):
    outs = self.backbone(x)
    feature_up = F.interpolate(self.conv_avg(F.adaptive_avg_pool2d(outs[-1], 1)), outs[-1].shape[2:], mode="nearest")
    arms_out = []
    for i in range(2):
      x_arm = self.arms[i](outs[-1 - i]) + feature_up
      feature_up = self.convs[i](F.interpolate(x_arm, outs[-2 - i].shape[2:], mode="nearest"))
      arms_out.append(feature_up)
    return [outs[0], *arms_out, self.ffm(outs[0], arms_out[1])]


class MMSTDCDetailHead(MMFCNHead):  # STDCHead: an FCNHead with 2 channels and its Laplacian kernels
  def __init__(self, cin, channels):
    super().__init__(cin, channels, 2)
    self.register_buffer("laplacian_kernel", torch.tensor([-1, -1, -1, -1, 8, -1, -1, -1, -1.0]).reshape(1, 1, 3, 3))
    self.fusion_kernel = nn.Parameter(torch.tensor([[0.6], [0.3], [0.1]]).reshape(1, 3, 1, 1), requires_grad=False)


class MMSTDCSegmentor(nn.Module):
  """mmseg's STDC EncoderDecoder: the decode head on the fusion, logits resized to the
  input with align_corners=True."""

  def __init__(self, modules=(2, 2, 2), width=64, context=128, aux=64, num_classes=19):
    super().__init__()
    self.backbone = MMSTDCContextPathNet(modules, width, context)
    self.decode_head = MMFCNHead(2 * context, 2 * context, num_classes)
    self.auxiliary_head = nn.ModuleList([MMFCNHead(context, aux, num_classes), MMFCNHead(context, aux, num_classes),
                                         MMSTDCDetailHead(width * 4, aux)])

  def forward(self, x):
    return F.interpolate(self.decode_head(self.backbone(x)[3]), x.shape[2:], mode="bilinear", align_corners=True)


# ---------------------------------------------------------------- timm deep stem
class TimmResNetC(ResNet):
  """timm resnet50c: conv1 = Sequential(conv, BN, ReLU, conv, BN, ReLU, conv), bn1."""

  def __init__(self, depth=50, width=64):
    super().__init__(depth, width)
    self.conv1 = nn.Sequential(nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
                               nn.Conv2d(width // 2, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2),
                               nn.ReLU(), nn.Conv2d(width // 2, width, 3, 1, 1, bias=False))


# ---------------------------------------------------------------- random weights
def randomize(module, seed=0):
  """Random weights, BN affine parameters and BN running statistics (so a wrong
  mean/var mapping or eps shows), scaled to keep activations O(1) through the net."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      if name.endswith("encoding.0.scale"):  # negative and small: soft assignments to nearby codewords
        p.copy_(-0.1 * torch.rand(p.shape, generator=g))
      elif name.endswith("scale"):
        p.copy_(0.5 + torch.rand(p.shape, generator=g))
      elif p.ndim == 4:
        fan_in = p.shape[1] * p.shape[2] * p.shape[3]
        p.copy_(torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5)
      elif p.ndim == 2:  # Linear: signed, so that a sigmoid after it (EncNet's attention) does not saturate
        p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1]) ** 0.5)
      elif name.endswith("weight"):
        p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
      else:
        p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in module.named_buffers():
      if name.endswith("running_mean"):
        b.copy_(0.1 * torch.randn(b.shape, generator=g))
      elif name.endswith("running_var"):
        b.copy_(0.5 + torch.rand(b.shape, generator=g))
  return module.eval()
