"""PyTorch modules that compute what torchvision's ResNets and segmentation models
compute, with their exact state-dict key names and shapes (torchvision does not install
here), for tests/test_convert.py; written from torchvision.models.resnet /
segmentation.{deeplabv3,fcn}. `randomize` gives any reference model random weights and
BN statistics (also the real mmsegmentation models of tests/test_convert_mmseg.py);
`report` is the parity check the transformers-reference tests share.
"""
import numpy as np
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


# ---------------------------------------------------------------- timm deep stem
class TimmResNetC(ResNet):
  """timm resnet50c: conv1 = Sequential(conv, BN, ReLU, conv, BN, ReLU, conv), bn1."""

  def __init__(self, depth=50, width=64):
    super().__init__(depth, width)
    self.conv1 = nn.Sequential(nn.Conv2d(3, width // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(),
                               nn.Conv2d(width // 2, width // 2, 3, 1, 1, bias=False), nn.BatchNorm2d(width // 2),
                               nn.ReLU(), nn.Conv2d(width // 2, width, 3, 1, 1, bias=False))


# ---------------------------------------------------------------- comparison
def report(name, ours, theirs, tol=1e-4):
  """Prints and asserts max |ours - theirs| <= tol x max(1, max |theirs|)."""
  ours, theirs = np.asarray(ours), np.asarray(theirs)
  assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
  diff, scale = float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
  print(f"\n[{name}] max abs diff {diff:.2e}, relative to max |ref| {diff / scale:.2e} (max |ref| {scale:.2f})")
  assert diff <= tol * max(1.0, scale)


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
