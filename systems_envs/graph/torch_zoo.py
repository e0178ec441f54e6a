"""Small PyTorch models faithful to the architectures people export, and their ONNX files.

Each zoo entry builds, from a seed and without any download, a small version of a
well-known architecture (or a block faithful to it) in plain PyTorch, plus example
inputs. The CNN blocks follow torchvision's definitions (written here, torchvision is not
a dependency); the transformer entries are Hugging Face ``transformers`` models built from
tiny configs. They exist to test the ONNX import/export round trip on what PyTorch's
exporters actually write (SE blocks with ``ReduceMean``, HardSwish/HardSigmoid, ReLU6
``Clip``, class-token ``Gather``, masked attention as Hugging Face writes it, RMSNorm,
exact GELU through ``Erf``).

PyTorch (and ``transformers`` for the transformer entries) is an optional test extra:
``pip install -e ".[test,torch]"``. Importing this module does not import torch; the
functions that need it raise :class:`ZooError` with the install command when it is missing.

Shapes: images are NCHW float32 ``(1, 3, 32, 32)``; token inputs are int64 ``(1, 8)``
(``input_ids`` in ``[0, vocab)``, ``attention_mask`` with the last two positions masked).

    >>> paths = export_zoo("/tmp/zoo", opset=18, dynamo=True, names=["resnet", "gpt2"])
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

IMAGE_SHAPE = (1, 3, 32, 32)
SEQ_LEN = 8
VOCAB = 96
NUM_CLASSES = 10
INSTALL_HINT = 'pip install -e ".[test,torch]"'


class ZooError(RuntimeError):
    """A zoo model cannot be built or exported (missing optional dependency, unknown name)."""


class OpsetUnavailable(ZooError):
    """The exporter cannot write the requested opset for this model (it wrote another one,
    or a model that is not valid at that opset)."""


def _torch():
    try:
        import torch
    except ImportError:
        raise ZooError(f"the model zoo needs PyTorch, an optional test extra: {INSTALL_HINT}") from None
    return torch


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ZooError(f"the transformer zoo models need `transformers`, an optional test extra: {INSTALL_HINT}") \
            from None
    return transformers


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A built model: the eval-mode module, its example inputs and interface names.

    ``inputs`` maps input name -> NumPy array (float32 images or int64 token ids), in the
    order the module's ``forward`` takes them; ``output_names`` name the outputs.
    """

    name: str
    module: Any  # torch.nn.Module
    inputs: dict[str, np.ndarray]
    output_names: tuple[str, ...]

    def torch_outputs(self) -> list[np.ndarray]:
        """Outputs of the PyTorch module on ``inputs`` (float32 NumPy arrays)."""
        torch = _torch()
        with torch.no_grad():
            out = self.module(*[torch.from_numpy(v) for v in self.inputs.values()])
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in out]


# ============================================================================ CNN blocks


def _nn():
    return _torch().nn


def _randomize_bn(module, seed: int) -> None:
    """Non-trivial BatchNorm running statistics and affine parameters (so folding matters)."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(1.0 + 0.1 * torch.randn(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))


def _conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: Any = "relu"):
    nn = _nn()
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "relu6":
        layers.append(nn.ReLU6(inplace=True))
    elif act == "hardswish":
        layers.append(nn.Hardswish())
    elif act == "silu":
        layers.append(nn.SiLU())
    elif act is not None:
        raise ValueError(f"unknown activation {act!r}")
    return nn.Sequential(*layers)


def _resnet():
    """torchvision ResNet-18 layout at width 16: stem, four BasicBlocks (one downsampling
    with a 1x1 projection), global average pool, Linear head."""
    nn = _nn()

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            y = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(y)) + idt)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
            self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1), BasicBlock(16, 32, 2),
                                        BasicBlock(32, 32, 1))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, NUM_CLASSES)

        def forward(self, x):
            y = self.avgpool(self.layers(self.stem(x)))
            return self.fc(_flatten(y))

    return ResNet()


def _flatten(y):
    """``torch.flatten(y, 1)``, as torchvision's classifiers write it."""
    return _torch().flatten(y, 1)


def _squeeze_excitation(c: int, squeeze: int, scale: str):
    """torchvision's SqueezeExcitation (``adaptive_avg_pool2d`` is a ReduceMean over H, W in
    the dynamo export); ``scale`` hardsigmoid (MobileNetV3, ReLU inside) or sigmoid (SiLU inside)."""
    nn = _nn()
    torch = _torch()

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Conv2d(c, squeeze, 1)
            self.fc2 = nn.Conv2d(squeeze, c, 1)
            self.act = nn.ReLU() if scale == "hardsigmoid" else nn.SiLU()
            self.scale = nn.Hardsigmoid() if scale == "hardsigmoid" else nn.Sigmoid()

        def forward(self, x):
            s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.scale(self.fc2(self.act(self.fc1(s))))

    return SE()


def _mobilenetv3():
    """MobileNetV3 inverted residuals (expand 1x1, depthwise, SE with HardSigmoid, project
    1x1) with HardSwish and ReLU, torchvision's classifier (Linear, HardSwish, Dropout, Linear)."""
    nn = _nn()

    class InvertedResidual(nn.Module):
        def __init__(self, cin, exp, cout, k, stride, se, act):
            super().__init__()
            layers = [] if exp == cin else [_conv_bn_act(cin, exp, 1, act=act)]
            layers.append(_conv_bn_act(exp, exp, k, stride, groups=exp, act=act))
            if se:
                layers.append(_squeeze_excitation(exp, max(8, exp // 4), "hardsigmoid"))
            layers.append(_conv_bn_act(exp, cout, 1, act=None))
            self.block = nn.Sequential(*layers)
            self.use_res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return y + x if self.use_res else y

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                _conv_bn_act(3, 16, 3, 2, act="hardswish"),
                InvertedResidual(16, 16, 16, 3, 2, True, "relu"),
                InvertedResidual(16, 48, 24, 3, 1, False, "relu"),
                InvertedResidual(24, 72, 24, 5, 1, True, "hardswish"),
                _conv_bn_act(24, 96, 1, act="hardswish"),
            )
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(64, NUM_CLASSES))

        def forward(self, x):
            return self.classifier(_flatten(self.avgpool(self.features(x))))

    return MobileNetV3()


def _mobilenetv2():
    """MobileNetV2 inverted residuals with ReLU6 (exported as ``Clip(0, 6)``), linear
    bottlenecks, residuals, 1x1 head conv, global pool and classifier."""
    nn = _nn()

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hid = cin * expand
            layers = [] if expand == 1 else [_conv_bn_act(cin, hid, 1, act="relu6")]
            layers += [_conv_bn_act(hid, hid, 3, stride, groups=hid, act="relu6"), _conv_bn_act(hid, cout, 1, act=None)]
            self.conv = nn.Sequential(*layers)
            self.use_res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.conv(x)
            return x + y if self.use_res else y

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(_conv_bn_act(3, 16, 3, 2, act="relu6"), InvertedResidual(16, 16, 1, 1),
                                          InvertedResidual(16, 24, 2, 4), InvertedResidual(24, 24, 1, 4),
                                          _conv_bn_act(24, 64, 1, act="relu6"))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

        def forward(self, x):
            y = _torch().nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(_flatten(y))

    return MobileNetV2()


def _squeezenet():
    """SqueezeNet 1.1: Fire modules (squeeze 1x1, expand 1x1 and 3x3, concatenated), max
    pools with ceil_mode, a 1x1 conv classifier and global average pooling."""
    nn = _nn()
    torch = _torch()

    class Fire(nn.Module):
        def __init__(self, cin, sq, e1, e3):
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(cin, sq, 1), nn.ReLU(inplace=True))
            self.e1 = nn.Sequential(nn.Conv2d(sq, e1, 1), nn.ReLU(inplace=True))
            self.e3 = nn.Sequential(nn.Conv2d(sq, e3, 3, padding=1), nn.ReLU(inplace=True))

        def forward(self, x):
            s = self.squeeze(x)
            return torch.cat([self.e1(s), self.e3(s)], 1)

    class SqueezeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
                Fire(32, 8, 16, 16), Fire(32, 8, 16, 16), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 12, 24, 24))
            self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(48, NUM_CLASSES, 1), nn.ReLU(inplace=True),
                                            nn.AdaptiveAvgPool2d(1))

        def forward(self, x):
            return _flatten(self.classifier(self.features(x)))

    return SqueezeNet()


def _shufflenet():
    """ShuffleNetV2 units: channel split (chunk), branch (1x1, depthwise 3x3, 1x1),
    concat and channel shuffle (view/transpose/view), plus a downsampling unit."""
    nn = _nn()
    torch = _torch()

    def shuffle(x, groups):
        n, c, h, w = x.shape
        return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)

    class Unit(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride = stride
            half = cout // 2
            bin_ = cin if stride > 1 else half
            if stride > 1:
                self.branch1 = nn.Sequential(_conv_bn_act(cin, cin, 3, stride, groups=cin, act=None),
                                             _conv_bn_act(cin, half, 1))
            self.branch2 = nn.Sequential(_conv_bn_act(bin_, half, 1), _conv_bn_act(half, half, 3, stride, groups=half,
                                                                                  act=None),
                                         _conv_bn_act(half, half, 1))

        def forward(self, x):
            if self.stride == 1:
                x1, x2 = x.chunk(2, dim=1)
                out = torch.cat((x1, self.branch2(x2)), 1)
            else:
                out = torch.cat((self.branch1(x), self.branch2(x)), 1)
            return shuffle(out, 2)

    class ShuffleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(_conv_bn_act(3, 16, 3, 2), nn.MaxPool2d(3, 2, 1))
            self.stages = nn.Sequential(Unit(16, 32, 2), Unit(32, 32, 1), Unit(32, 32, 1))
            self.conv5 = _conv_bn_act(32, 64, 1)
            self.fc = nn.Linear(64, NUM_CLASSES)

        def forward(self, x):
            y = self.conv5(self.stages(self.stem(x)))
            return self.fc(y.mean([2, 3]))

    return ShuffleNet()


def _efficientnet():
    """EfficientNet MBConv blocks: expand 1x1, depthwise, SE (SiLU, Sigmoid), project,
    residual; SiLU everywhere; classifier with dropout."""
    nn = _nn()

    class MBConv(nn.Module):
        def __init__(self, cin, expand, cout, k, stride):
            super().__init__()
            exp = cin * expand
            layers = [] if expand == 1 else [_conv_bn_act(cin, exp, 1, act="silu")]
            layers += [_conv_bn_act(exp, exp, k, stride, groups=exp, act="silu"),
                       _squeeze_excitation(exp, max(1, cin // 4), "sigmoid"),
                       _conv_bn_act(exp, cout, 1, act=None)]
            self.block = nn.Sequential(*layers)
            self.use_res = stride == 1 and cin == cout

        def forward(self, x):
            y = self.block(x)
            return y + x if self.use_res else y

    class EfficientNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(_conv_bn_act(3, 16, 3, 2, act="silu"), MBConv(16, 1, 16, 3, 1),
                                          MBConv(16, 4, 24, 3, 2), MBConv(24, 4, 24, 5, 1),
                                          _conv_bn_act(24, 64, 1, act="silu"))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

        def forward(self, x):
            return self.classifier(_flatten(self.avgpool(self.features(x))))

    return EfficientNet()


def _regnet():
    """RegNetY bottleneck blocks: 1x1, grouped 3x3 (group width 8), SE (ReLU, Sigmoid),
    1x1, projection shortcut, ReLU."""
    nn = _nn()

    class YBlock(nn.Module):
        def __init__(self, cin, cout, stride, group_width=8):
            super().__init__()
            self.a = _conv_bn_act(cin, cout, 1)
            self.b = _conv_bn_act(cout, cout, 3, stride, groups=cout // group_width)
            self.se = _squeeze_excitation(cout, max(1, cin // 4), "sigmoid")
            self.c = _conv_bn_act(cout, cout, 1, act=None)
            self.proj = None if (stride == 1 and cin == cout) else _conv_bn_act(cin, cout, 1, stride, act=None)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            idt = x if self.proj is None else self.proj(x)
            return self.relu(self.c(self.se(self.b(self.a(x)))) + idt)

    class RegNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _conv_bn_act(3, 16, 3, 2)
            self.trunk = nn.Sequential(YBlock(16, 24, 2), YBlock(24, 24, 1), YBlock(24, 48, 2))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(48, NUM_CLASSES)

        def forward(self, x):
            return self.fc(_flatten(self.avgpool(self.trunk(self.stem(x)))))

    return RegNet()


def _googlenet():
    """GoogLeNet Inception blocks (1x1; 1x1->3x3; 1x1->3x3 (torchvision's variant); 3x3 max
    pool with ceil_mode -> 1x1), concatenated; BasicConv2d = conv, BN(eps 1e-3), ReLU."""
    nn = _nn()
    torch = _torch()

    def basic(cin, cout, k=1, stride=1, padding=0):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
                             nn.ReLU(inplace=True))

    class Inception(nn.Module):
        def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.b1 = basic(cin, c1)
            self.b2 = nn.Sequential(basic(cin, c3r), basic(c3r, c3, 3, padding=1))
            self.b3 = nn.Sequential(basic(cin, c5r), basic(c5r, c5, 3, padding=1))
            self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), basic(cin, pp))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(basic(3, 16, 3, 2, 1), nn.MaxPool2d(3, 2, ceil_mode=True))
            self.inc = nn.Sequential(Inception(16, 8, 8, 16, 4, 8, 8), Inception(40, 16, 8, 16, 4, 8, 8))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(48, NUM_CLASSES)

        def forward(self, x):
            return self.fc(self.dropout(_flatten(self.avgpool(self.inc(self.stem(x))))))

    return GoogLeNet()


def _densenet():
    """DenseNet dense block (BN, ReLU, 1x1, BN, ReLU, 3x3; features concatenated) and a
    transition (BN, ReLU, 1x1, 2x2 average pool), final BN, ReLU, global pool, Linear."""
    nn = _nn()
    torch = _torch()
    F = torch.nn.functional

    class DenseLayer(nn.Module):
        def __init__(self, cin, growth, bn_size=2):
            super().__init__()
            self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, bn_size * growth, 1, bias=False)
            self.norm2, self.conv2 = nn.BatchNorm2d(bn_size * growth), nn.Conv2d(bn_size * growth, growth, 3, 1, 1,
                                                                                  bias=False)

        def forward(self, feats):
            x = torch.cat(feats, 1)
            return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))

    class DenseBlock(nn.Module):
        def __init__(self, cin, n, growth):
            super().__init__()
            self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n))

        def forward(self, x):
            feats = [x]
            for layer in self.layers:
                feats.append(layer(feats))
            return torch.cat(feats, 1)

    class DenseNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
            self.block1 = DenseBlock(16, 3, 8)
            self.trans = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(inplace=True), nn.Conv2d(40, 20, 1, bias=False),
                                       nn.AvgPool2d(2, 2))
            self.block2 = DenseBlock(20, 2, 8)
            self.norm = nn.BatchNorm2d(36)
            self.fc = nn.Linear(36, NUM_CLASSES)

        def forward(self, x):
            y = F.relu(self.norm(self.block2(self.trans(self.block1(self.stem(x))))))
            return self.fc(_flatten(F.adaptive_avg_pool2d(y, 1)))

    return DenseNet()


def _convnext():
    """ConvNeXt blocks: depthwise 7x7, permute to NHWC, LayerNorm, Linear x4, exact GELU,
    Linear, layer scale, permute back, residual; LayerNorm2d downsampling; classifier."""
    nn = _nn()
    torch = _torch()

    class LayerNorm2d(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class CNBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pw1 = nn.Linear(dim, 4 * dim)
            self.act = nn.GELU()
            self.pw2 = nn.Linear(4 * dim, dim)
            self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.pw2(self.act(self.pw1(self.norm(y)))).permute(0, 3, 1, 2)
            return x + self.layer_scale * y

    class ConvNeXt(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))
            self.stage1 = CNBlock(16)
            self.down = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, 2))
            self.stage2 = CNBlock(32)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Sequential(LayerNorm2d(32, eps=1e-6), nn.Flatten(1), nn.Linear(32, NUM_CLASSES))

        def forward(self, x):
            return self.head(self.avgpool(self.stage2(self.down(self.stage1(self.stem(x))))))

    return ConvNeXt()


def _vit():
    """torchvision's VisionTransformer at width 32: patch conv, class token concat,
    position embedding, encoder blocks (LayerNorm, nn.MultiheadAttention, MLP with exact
    GELU), final LayerNorm, class-token select ``x[:, 0]`` (a scalar Gather) and head."""
    nn = _nn()
    torch = _torch()
    dim, patch, heads = 32, 8, 2
    n_tok = (IMAGE_SHAPE[2] // patch) * (IMAGE_SHAPE[3] // patch) + 1

    class EncoderBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
            self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x):
            y = self.ln_1(x)
            y, _ = self.self_attention(y, y, y, need_weights=False)
            x = x + y
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_proj = nn.Conv2d(3, dim, patch, patch)
            self.class_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
            self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, n_tok, dim))
            self.layers = nn.Sequential(EncoderBlock(), EncoderBlock())
            self.ln = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, NUM_CLASSES)

        def forward(self, x):
            n = x.shape[0]
            y = self.conv_proj(x).reshape(n, dim, -1).permute(0, 2, 1)
            y = torch.cat([self.class_token.expand(n, -1, -1), y], dim=1) + self.pos_embedding
            y = self.ln(self.layers(y))
            return self.head(y[:, 0])

    return ViT()


# ============================================================================ transformers


def _hf_wrapper(model, outputs: Sequence[str]):
    """Module returning the named fields of a Hugging Face model's output as a tuple."""
    nn = _nn()

    class HF(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            return tuple(out[k] for k in outputs)

    return HF()


_HF_COMMON = dict(vocab_size=VOCAB)


def _bert():
    t = _transformers()
    cfg = t.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       max_position_embeddings=32, type_vocab_size=2, **_HF_COMMON)
    return _hf_wrapper(t.BertModel(cfg), ("last_hidden_state", "pooler_output"))


def _distilbert():
    t = _transformers()
    cfg = t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=32,
                             **_HF_COMMON)
    return _hf_wrapper(t.DistilBertModel(cfg), ("last_hidden_state",))


def _gpt2():
    t = _transformers()
    cfg = t.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=32, use_cache=False, bos_token_id=0,
                       eos_token_id=0, **_HF_COMMON)
    return _hf_wrapper(t.GPT2LMHeadModel(cfg), ("logits",))


def _t5_encoder():
    t = _transformers()
    cfg = t.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
                     use_cache=False, **_HF_COMMON)
    return _hf_wrapper(t.T5EncoderModel(cfg), ("last_hidden_state",))


def _llama():
    t = _transformers()
    cfg = t.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, max_position_embeddings=32, use_cache=False, **_HF_COMMON)
    return _hf_wrapper(t.LlamaForCausalLM(cfg), ("logits",))


# ============================================================================ registry

IMAGE_MODELS: dict[str, Callable[[], Any]] = {
    "resnet": _resnet,
    "mobilenetv2": _mobilenetv2,
    "mobilenetv3": _mobilenetv3,
    "squeezenet": _squeezenet,
    "shufflenet": _shufflenet,
    "efficientnet": _efficientnet,
    "regnet": _regnet,
    "googlenet": _googlenet,
    "densenet": _densenet,
    "convnext": _convnext,
    "vit": _vit,
}
# name -> (builder, output names)
TEXT_MODELS: dict[str, tuple[Callable[[], Any], tuple[str, ...]]] = {
    "bert": (_bert, ("last_hidden_state", "pooler_output")),
    "distilbert": (_distilbert, ("last_hidden_state",)),
    "gpt2": (_gpt2, ("logits",)),
    "t5_encoder": (_t5_encoder, ("last_hidden_state",)),
    "llama": (_llama, ("logits",)),
}
ZOO_NAMES: tuple[str, ...] = tuple(IMAGE_MODELS) + tuple(TEXT_MODELS)


def example_inputs(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Example inputs of zoo model ``name`` (input name -> array), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    if name in IMAGE_MODELS:
        return {"image": rng.standard_normal(IMAGE_SHAPE).astype(np.float32)}
    if name in TEXT_MODELS:
        ids = rng.integers(0, VOCAB, size=(1, SEQ_LEN), dtype=np.int64)
        mask = np.ones((1, SEQ_LEN), np.int64)
        mask[:, -2:] = 0  # padded positions: the attention-mask logic is live
        return {"input_ids": ids, "attention_mask": mask}
    raise ZooError(f"unknown zoo model {name!r} (known: {', '.join(ZOO_NAMES)})")


def build(name: str, seed: int = 0) -> ZooModel:
    """Build zoo model ``name`` in eval mode with weights drawn from ``seed``."""
    torch = _torch()
    if name in IMAGE_MODELS:
        builder, outputs = IMAGE_MODELS[name], ("logits",)
    elif name in TEXT_MODELS:
        builder, outputs = TEXT_MODELS[name]
    else:
        raise ZooError(f"unknown zoo model {name!r} (known: {', '.join(ZOO_NAMES)})")
    torch.manual_seed(seed)
    module = builder()
    _randomize_bn(module, seed)
    module.eval()
    return ZooModel(name, module, example_inputs(name, seed), outputs)


def export_model(model: ZooModel, path: str | Path | None = None, opset: int = 18, dynamo: bool = True):
    """Export a built zoo model with PyTorch's ONNX exporter; return the ``onnx.ModelProto``.

    ``dynamo=True`` is the ``torch.export``-based exporter (PyTorch's default), ``False``
    the TorchScript one. Input and output names are the zoo's; all shapes are static. The
    result passes ``onnx.checker`` (full check) and loads in onnxruntime. Raises
    :class:`OpsetUnavailable` when the exporter cannot write ``opset`` for this model (it
    wrote another opset, or an invalid model), :class:`ZooError` when it fails.
    """
    import onnx

    torch = _torch()
    args = tuple(torch.from_numpy(v) for v in model.inputs.values())
    kind = "dynamo" if dynamo else "torchscript"
    buf = io.BytesIO()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notices of the dynamo exporter
        # The TorchScript exporter has no ONNX form of nn.MultiheadAttention's fused inference
        # kernel; without the fast path the module runs (and exports) its plain math.
        torch.backends.mha.set_fastpath_enabled(False)
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if dynamo:
                prog = torch.onnx.export(model.module, args, input_names=list(model.inputs),
                                         output_names=list(model.output_names), opset_version=opset, dynamo=True,
                                         external_data=False, verbose=False)
                proto = prog.model_proto
            else:
                torch.onnx.export(model.module, args, buf, input_names=list(model.inputs),
                                  output_names=list(model.output_names), opset_version=opset, dynamo=False)
                proto = onnx.load_from_string(buf.getvalue())
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ZooError(f"zoo model {model.name!r}: the {kind} exporter failed at opset {opset}: {first}") from None
    finally:
        quiet.setLevel(level)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    stamped = {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")}
    if stamped != {opset}:
        raise OpsetUnavailable(f"zoo model {model.name!r}: the {kind} exporter wrote opset {sorted(stamped)}, "
                       f"not the requested {opset}")
    try:  # the dynamo exporter's down-conversion can stamp an opset whose node forms it does not use
        onnx.checker.check_model(proto, full_check=True)
        import onnxruntime as ort

        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OpsetUnavailable(f"zoo model {model.name!r}: the {kind} exporter wrote an invalid opset-{opset} "
                               f"model: {first[:200]}") from None
    if path is not None:
        onnx.save(proto, str(path))
    return proto


def export_zoo(out_dir: str | Path, opset: int = 18, dynamo: bool = True, names: Sequence[str] | None = None,
               seed: int = 0) -> dict[str, Path]:
    """Build and export zoo models to ``out_dir/<name>.onnx``; return ``{name: path}``.

    ``names`` defaults to every zoo model (:data:`ZOO_NAMES`); the transformer entries
    need ``transformers``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names if names is not None else ZOO_NAMES:
        path = out / f"{name}.onnx"
        export_model(build(name, seed), path, opset=opset, dynamo=dynamo)
        paths[name] = path
    return paths
