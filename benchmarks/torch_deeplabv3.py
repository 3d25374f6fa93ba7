"""A plain PyTorch DeepLabv3 with the layout of torchvision's `deeplabv3_resnet*`
(7x7 stem, bottleneck ResNet at output stride 8, ASPP rates 12/24/36 + image pooling,
3x3 conv, classifier; FCN auxiliary head on layer3). Used by the speed benchmark as
the PyTorch side where torchvision cannot be installed (it has no CPU wheel here);
where torchvision imports, the benchmark uses torchvision's own model instead.
"""
import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin, cout, k=3, stride=1, dilation=1, relu=True):
  layers = [nn.Conv2d(cin, cout, k, stride, dilation * (k - 1) // 2, dilation, bias=False),
            nn.BatchNorm2d(cout)]
  return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class Bottleneck(nn.Module):
  def __init__(self, cin, width, stride, dilation):
    super().__init__()
    self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride, dilation),
                              conv_bn(width, width * 4, 1, relu=False))
    self.down = conv_bn(cin, width * 4, 1, stride, relu=False) if stride != 1 or cin != width * 4 else None

  def forward(self, x):
    return F.relu(self.body(x) + (x if self.down is None else self.down(x)))


class DeepLabV3(nn.Module):
  def __init__(self, depth=50, num_classes=21):
    super().__init__()
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
    # (width, stride, dilation of the first block, dilation of the others): OS8
    plan = [(64, 1, 1, 1), (128, 2, 1, 1), (256, 1, 1, 2), (512, 1, 2, 4)]
    stages, cin = [], 64
    for n, (width, stride, first, rest) in zip(blocks, plan):
      layers = [Bottleneck(cin, width, stride, first)]
      layers += [Bottleneck(width * 4, width, 1, rest) for _ in range(n - 1)]
      stages.append(nn.Sequential(*layers))
      cin = width * 4
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.aspp = nn.ModuleList([conv_bn(2048, 256, 1)] + [conv_bn(2048, 256, 3, dilation=r) for r in (12, 24, 36)])
    self.pool = conv_bn(2048, 256, 1)
    self.project = nn.Sequential(conv_bn(5 * 256, 256, 1), nn.Dropout(0.5))
    self.head = nn.Sequential(conv_bn(256, 256, 3), nn.Conv2d(256, num_classes, 1))
    self.aux = nn.Sequential(conv_bn(1024, 256, 3), nn.Dropout(0.1), nn.Conv2d(256, num_classes, 1))

  def forward(self, x):
    size = x.shape[-2:]
    c3 = self.layer3(self.layer2(self.layer1(self.stem(x))))
    c4 = self.layer4(c3)
    pooled = self.pool(F.adaptive_avg_pool2d(c4, 1)).expand(-1, -1, *c4.shape[-2:])
    y = self.project(torch.cat([b(c4) for b in self.aspp] + [pooled], 1))
    out = {"out": F.interpolate(self.head(y), size, mode="bilinear", align_corners=False)}
    if self.training:
      out["aux"] = F.interpolate(self.aux(c3), size, mode="bilinear", align_corners=False)
    return out
