"""The segmenter's model: an FPN on a ResNet backbone, as unet.py is the generator's.

The paper (Sec. 4.5, 5.3) values generated pairs by training an FPN-ResNet50 on them; seg.py trains
it, metrics.py uses its backbone as the feature extractor of FID / sFID / IS. Reads and writes no
files beyond an optional torchvision checkpoint (load_backbone): a local file, or torchvision's
ImageNet weights fetched once into torch.hub's cache ($TORCH_HOME/hub/checkpoints). seg.py saves
`model_args` and rebuilds with `FPN(**model_args)`.

    from fpn import FPN, preprocess
    model = FPN(num_classes=16, depth=50)
    logits = model(preprocess(images))      # uint8 (B, H, W, 3) -> (B, 16, H, W), H, W % 32 == 0

References: He et al. 2016 (ResNet), torchvision models/resnet.py; Lin et al. 2017 (FPN);
Kirillov et al. 2019 (Panoptic FPN), detectron2 meta_arch/semantic_seg.py (SemSegFPNHead); SMP's
FPN (c2..c5 / p2..p5 names).
"""
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ImageNet statistics, which torchvision checkpoints expect (and a from-scratch backbone ignores)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

def preprocess(images):
    """uint8 images (B, H, W, 3) numpy/tensor or (B, 3, H, W) tensor -> float (B, 3, H, W)."""
    x = torch.from_numpy(np.array(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[-1]):
        raise ValueError(f'preprocess wants uint8 (B, H, W, 3) or (B, 3, H, W) images, '
                         f'got {x.dtype} {tuple(x.shape)}')
    if isinstance(images, np.ndarray) or x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)  # (B, H, W, 3) -> (B, 3, H, W)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
    return ((x.float() - mean) / std).contiguous()  # contiguous: the convs run in NCHW

# ResNet (He et al. 2016), torchvision's v1.5 variant (the stride sits in a Bottleneck's 3x3
# conv). Module names are torchvision/models/resnet.py's, so a torchvision state dict (minus its
# fc classifier) loads with strict checking; avgpool and fc are left out.

class BasicBlock(nn.Module):  # two 3x3 convs: ResNet-18/34
    expansion = 1  # output channels / planes
    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()  # (dilation > 1: mmseg's ResNet does it here too; torchvision refuses)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # 1x1 conv + BN on the shortcut where the shape changes

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)

class Bottleneck(nn.Module):  # 1x1 reduce, 3x3, 1x1 expand (x4): ResNet-50/101
    expansion = 4
    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)

RESNET_LAYERS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
                 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}

class ResNet(nn.Module):
    """forward(x) -> [c2, c3, c4, c5], the outputs of layer1..4 at strides 4, 8, 16, 32; with
    output_stride=8 (PSPNet, DeepLab) layer3 and layer4 trade their stride for dilation 2 and 4
    (torchvision's replace_stride_with_dilation=[False, True, True]): strides 4, 8, 8, 8. The
    weights are the same tensors either way, so an ImageNet checkpoint loads into both."""

    def __init__(self, depth=50, *, output_stride=32):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f'ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}')
        if output_stride not in (8, 32):
            raise ValueError(f'ResNet output_stride must be 8 or 32, got {output_stride}')
        block, layers = RESNET_LAYERS[depth]
        self.depth = depth  # load_backbone(..., 'imagenet') picks torchvision's weights by it
        self.output_stride = output_stride
        self.dilation = 1  # of the 3x3 convs in the layer being built (grows in dilated layers)
        dilate = output_stride == 8
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)  # the stem: stride 2 ...
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # ... and 2 again: layer1 works at stride 4
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate)
        self.out_channels = tuple(c * block.expansion for c in (64, 128, 256, 512))
        for m in self.modules():  # torchvision's init (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def _make_layer(self, block, planes, n_blocks, stride=1, dilate=False):
        previous_dilation = self.dilation
        if dilate:  # keep the resolution: the stride becomes dilation (torchvision's rule: the
            self.dilation *= stride  # first block keeps the previous dilation, the rest the new)
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            c_out = planes * block.expansion
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))
        layers = [block(self.inplanes, planes, stride, downsample, dilation=previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # (B, 256, H/4, W/4) for depth 50 (64 for 18/34)
        c3 = self.layer2(c2)  # (B, 512, H/8, W/8)
        c4 = self.layer3(c3)  # (B, 1024, H/16, W/16) (H/8 with output_stride 8)
        c5 = self.layer4(c4)  # (B, 2048, H/32, W/32) (H/8 with output_stride 8)
        return [c2, c3, c4, c5]

# torchvision's ImageNet weights (IMAGENET1K_V1, torchvision/models/resnet.py). The 8 hex digits
# of each file name begin its sha256, which torch.hub checks after a download (check_hash).
IMAGENET_URLS = {d: f'https://download.pytorch.org/models/resnet{d}-{h}.pth' for d, h in
                 ((18, 'f37072fd'), (34, 'b627a593'), (50, '0676ba61'), (101, '63fe2227'))}

def imagenet_state_dict(depth):
    """torchvision's ImageNet state dict of a ResNet-`depth`, downloaded once into torch.hub's
    cache (get_dir()/checkpoints: $TORCH_HOME/hub, default ~/.cache/torch/hub) and read from there
    afterwards. Offline (or a bad download): SystemExit with one line naming the URL and the file
    to put in place."""
    url = IMAGENET_URLS[depth]
    try:
        return torch.hub.load_state_dict_from_url(url, map_location='cpu', check_hash=True,
                                                  weights_only=True)
    except Exception as e:  # no network, a proxy page, a hash mismatch: say what to do by hand
        name = os.path.basename(url)
        dest = os.path.join(torch.hub.get_dir(), 'checkpoints', name)
        why = ' '.join(f'{type(e).__name__}: {e}'.split())  # one line, whatever the error says
        raise SystemExit(f'--backbone_ckpt=imagenet: cannot fetch {url} ({why}); download it to '
                         f'{dest} or pass a local --backbone_ckpt=/path/to/{name}')

def load_backbone(backbone, path):
    """Load a torchvision ResNet state dict (its fc.* dropped) into `backbone`, strictly: from the
    local file `path`, or with path == 'imagenet' torchvision's ImageNet weights for
    backbone.depth (imagenet_state_dict)."""
    sd = imagenet_state_dict(backbone.depth) if path == 'imagenet' else None
    src = IMAGENET_URLS[backbone.depth] if path == 'imagenet' else path
    try:  # strict: torch's error then lists the missing and unexpected keys (or wrong shapes)
        if sd is None:
            sd = torch.load(path, map_location='cpu', weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith('fc.')}
        own = backbone.state_dict()  # very old torchvision files lack BN's num_batches_tracked
        sd.update({k: v for k, v in own.items() if k.endswith('_tracked') and k not in sd})
        backbone.load_state_dict(sd, strict=True)
    except Exception as e:  # unreadable file or a mismatch: one message that names the file
        raise SystemExit(f'{src}: not a torchvision ResNet-{backbone.depth} ({e})')

# FPN (Lin et al. 2017) + the semantic branch of Panoptic FPN (Kirillov et al. 2019), as
# detectron2's SemSegFPNHead: each pyramid level is brought to stride 4 by conv3x3-GN-ReLU(-2x
# upsample) stages, the levels are summed, a 1x1 conv classifies. Like SMP's FPN and unlike Lin
# et al., no 3x3 "anti-aliasing" conv follows each merge: the head's 3x3 stages come right after,
# and dropping it saves most of the cost of the pyramid at stride 4.

class FPNHead(nn.Module):
    def __init__(self, in_channels, num_classes, *, pyramid_ch=256, seg_ch=128):
        super().__init__()
        # lateral 1x1 convs: c2..c5 (256..2048 channels for ResNet-50) -> 256 channels each
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid_ch, 1) for c in in_channels)
        self.scale_heads = nn.ModuleList()
        for level in range(4):  # stages for p2 (stride 4): 1, p3: 1, p4: 2, p5: 3 (detectron2)
            stages = []
            for k in range(max(1, level)):  # conv3x3 (no bias: GN follows) - GN - ReLU [- 2x up]
                conv = nn.Conv2d(seg_ch if k else pyramid_ch, seg_ch, 3, padding=1, bias=False)
                nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')
                stages += [conv, nn.GroupNorm(32, seg_ch), nn.ReLU(inplace=True)]
                if level > 0:
                    stages.append(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False))
            self.scale_heads.append(nn.Sequential(*stages))
        self.predictor = nn.Conv2d(seg_ch, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)  # detectron2: start near uniform logits
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features):
        c2, c3, c4, c5 = features
        up = lambda p: F.interpolate(p, scale_factor=2, mode='nearest')  # the top-down pathway
        p5 = self.lateral[3](c5)  # (B, 256, H/32, W/32)
        p4 = self.lateral[2](c4) + up(p5)  # (B, 256, H/16, W/16)
        p3 = self.lateral[1](c3) + up(p4)  # (B, 256, H/8, W/8)
        p2 = self.lateral[0](c2) + up(p3)  # (B, 256, H/4, W/4)
        x = sum(h(p) for h, p in zip(self.scale_heads, (p2, p3, p4, p5)))  # (B, 128, H/4, W/4)
        return self.predictor(x)  # (B, K, H/4, W/4)

# The segmenter interface, shared by every architecture (segmenters.ARCHS; seg.py, metrics.py,
# clean.py and bench.py use nothing else):
#   Model(num_classes, depth=...)             keyword knobs only, all saved in seg.py's model_args
#   model(x) -> logits (B, K, H, W)           x = preprocess(images), H and W multiples of 32
#   model(x, y, ignore_index=255, progress=p) -> (logits, loss): the architecture's own training
#       loss (an auxiliary head, an annealed focal term, ...), computed inside forward so that DDP
#       sees it; progress = the fraction of training done (0..1), for losses that anneal
#   model.configure_optimizers(name, lr, weight_decay), model.load_pretrained(path)

def check_input(x, name, multiple=32):
    """(B, 3, H, W) with H and W multiples of `multiple` (the largest stride), or ValueError."""
    B, C, H, W = x.shape
    if C != 3 or H % multiple or W % multiple:
        raise ValueError(f'{name} wants (B, 3, H, W) with H and W multiples of {multiple}, got '
                         f'{tuple(x.shape)}: pad or crop to '
                         f'{-H // multiple * -multiple}x{-W // multiple * -multiple}')


def segmentation_loss(logits, y, ignore_index=255):
    """Pixel-wise cross-entropy in float32 (under bf16 autocast too), ignore pixels left out."""
    return F.cross_entropy(logits.float(), y, ignore_index=ignore_index)


def configure_optimizers(model, optimizer, learning_rate, weight_decay):
    """AdamW or SGD (momentum 0.9), without weight decay on norm scales/shifts and biases (the
    1-d parameters), as nanoGPT and mmseg's recipes. AdamW is torch's fused kernel (CPU and CUDA,
    torch >= 2.4): one pass over all parameters instead of a loop of small ops. On CPU it took
    the toy FPN-ResNet18's optimizer step from 52-85 to 11-16 ms of a 150-200 ms training step
    (32x32, batch 16, 1 thread; docs/RESULTS.md, Speed). Call it after the model is on its
    device."""
    assert optimizer in {'adamw', 'sgd'}, optimizer
    params = list(model.parameters())
    groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
    if optimizer == 'adamw':
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
    return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)


class FPN(nn.Module):
    """FPN(num_classes, depth=50): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples of 32."""

    def __init__(self, num_classes, *, depth=50):
        super().__init__()
        self.backbone = ResNet(depth)
        self.head = FPNHead(self.backbone.out_channels, num_classes)

    def forward(self, x, y=None, *, ignore_index=255, progress=0.0):
        check_input(x, 'FPN')  # c5 has stride 32: other sizes break the top-down sums
        logits = self.head(self.backbone(x))  # (B, K, H/4, W/4)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)
        if y is None:
            return logits
        return logits, segmentation_loss(logits, y, ignore_index)

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        return configure_optimizers(self, optimizer, learning_rate, weight_decay)

    def load_pretrained(self, path):
        load_backbone(self.backbone, path)  # a torchvision ResNet file, or 'imagenet'
