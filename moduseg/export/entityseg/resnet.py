"""ResNet backbone with detectron2's names (``stem.conv1``, ``res2.0.conv1.norm``...).

Frozen batch norm, stride on the 3x3 conv (``STRIDE_IN_1X1: False`` as the
EntitySeg / Mask2Former R-50 configs set).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .common import Conv2d, FrozenBatchNorm2d
from .config import ResNetConfig


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, stride_in_1x1: bool):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = (Conv2d(cin, cout, 1, stride=stride, bias=False,
                                norm=FrozenBatchNorm2d(cout)) if cin != cout else None)
        self.conv1 = Conv2d(cin, bottleneck, 1, stride=s1, bias=False,
                            norm=FrozenBatchNorm2d(bottleneck))
        self.conv2 = Conv2d(bottleneck, bottleneck, 3, stride=s3, padding=1, bias=False,
                            norm=FrozenBatchNorm2d(bottleneck))
        self.conv3 = Conv2d(bottleneck, cout, 1, bias=False, norm=FrozenBatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.conv2(F.relu(self.conv1(x))))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class BasicStem(nn.Module):
    def __init__(self, cout: int):
        super().__init__()
        self.conv1 = Conv2d(3, cout, 7, stride=2, padding=3, bias=False,
                            norm=FrozenBatchNorm2d(cout))

    def forward(self, x):
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig):
        super().__init__()
        self.stem = BasicStem(cfg.stem_out)
        cin = cfg.stem_out
        for i, depth in enumerate(cfg.depths):
            cout = cfg.res2_out * 2 ** i
            blocks = [BottleneckBlock(cin if j == 0 else cout, cout, cout // 4,
                                      1 if (i == 0 or j > 0) else 2, cfg.stride_in_1x1)
                      for j in range(depth)]
            self.add_module(f"res{i + 2}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):
        x = self.stem(x)
        outs = {}
        for i in range(4):
            x = getattr(self, f"res{i + 2}")(x)
            outs[f"res{i + 2}"] = x
        return outs
