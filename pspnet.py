"""PSPNet: a Pyramid Pooling Module on a dilated ResNet, one of the paper's Tab. 2 segmenters.

The recipe is mmsegmentation's PSPNet R-50-D8 (configs/_base_/models/pspnet_r50-d8.py): the ResNet
keeps stride 8 (layer3 and layer4 dilated 2 and 4, fpn.ResNet(depth, output_stride=8)), the PSP
head pools c5 into 1x1, 2x2, 3x3 and 6x6 bins, and an FCN head on c4 adds an auxiliary loss
(weight 0.4) during training only, the deep supervision of Zhao et al. Reads and writes
no files beyond an optional torchvision checkpoint (load_pretrained, as fpn.py); seg.py rebuilds
it with `segmenters.build(model_args)`.

    from pspnet import PSPNet
    model = PSPNet(num_classes=16, depth=50)
    logits = model(fpn.preprocess(images))    # (B, 16, H, W); model(x, y) -> (logits, loss)

Layout (ResNet-50; channels / 4 for ResNet-18/34, see PSPNet.__init__):
    c5 (B, 2048, H/8, W/8) -> 4 x [avg-pool to s x s, 1x1 conv 512 + BN + ReLU, upsample]
    -> concat with c5 (4096) -> 3x3 conv 512 + BN + ReLU -> Dropout2d(0.1) -> 1x1 conv K
    c4 (B, 1024, H/8, W/8) -> 3x3 conv 256 + BN + ReLU -> Dropout2d(0.1) -> 1x1 conv K (aux)

References:
    Zhao, Shi, Qi, Wang, Jia 2017, "Pyramid Scene Parsing Network", CVPR (the pyramid pooling
        module; deep supervision by an auxiliary loss with weight 0.4)
    open-mmlab/mmsegmentation mmseg/models/decode_heads/psp_head.py (PSPHead, PPM),
        decode_heads/fcn_head.py (FCNHead, num_convs=1, concat_input=False), decode_head.py
        (Dropout2d, conv_seg init), configs/_base_/models/pspnet_r50-d8.py and
        configs/pspnet/pspnet_r18-d8_*.py (the channel widths for ResNet-18)
    hszhao/semseg model/pspnet.py (the authors' PyTorch re-implementation)

Deviations from mmseg, and why:
    - The stem is torchvision's single 7x7 conv (fpn.ResNet), not ResNetV1c's three 3x3 convs, so
      torchvision's ImageNet files load (19,232 fewer parameters at ResNet-50).
    - BatchNorm, not SyncBN: seg.py's DDP keeps per-rank statistics.
    - The cross-entropy averages over the labelled pixels (torch's mean with ignore_index), as
      fpn.segmentation_loss; mmseg's default (avg_non_ignore=False) divides by every pixel.
    - configure_optimizers is fpn.py's (no weight decay on BN and biases); mmseg's default SGD
      decays every parameter. The learning rate and schedule are seg.py's config, not here.
    - Inputs must be multiples of 32 like every segmenter here (one crop size for all of Tab. 2),
      although stride 8 alone would ask for multiples of 8 only.
The 1x1 bin has BatchNorm over one value per image, so a training batch of 1 fails in BN with
"Expected more than 1 value per channel" (mmseg has the same limit).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from fpn import ResNet, check_input, configure_optimizers, load_backbone, segmentation_loss

POOL_SCALES = (1, 2, 3, 6)  # bins of the pyramid pooling module (Zhao et al.; mmseg)
AUX_WEIGHT = 0.4  # the auxiliary loss weight (Zhao et al.; mmseg's loss_weight=0.4)
DROPOUT = 0.1  # before each classifier (mmseg's dropout_ratio)


def conv_bn_relu(in_ch, out_ch, kernel_size):
    """mmcv's ConvModule with BN and ReLU: conv without bias (BN shifts), Kaiming fan-out init."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode='fan_out', nonlinearity='relu')  # mmcv kaiming_init
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def classifier(in_ch, num_classes):
    """mmseg's cls_seg: Dropout2d (whole channels), then a 1x1 conv initialised N(0, 0.01)."""
    conv_seg = nn.Conv2d(in_ch, num_classes, 1)
    nn.init.normal_(conv_seg.weight, std=0.01)
    nn.init.zeros_(conv_seg.bias)
    return nn.Sequential(nn.Dropout2d(DROPOUT), conv_seg)


class PPM(nn.Module):
    """Pyramid Pooling Module (Zhao et al.): each bin size s average-pools the map into
    s x s regions, a 1x1 conv reduces the channels, and the result is upsampled back."""

    def __init__(self, in_ch, channels):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_ch, channels, 1))
            for s in POOL_SCALES)

    def forward(self, x):
        size = x.shape[2:]
        # each branch: (B, C, h, w) -> (B, channels, s, s) -> (B, channels, h, w)
        return [F.interpolate(branch(x), size=size, mode='bilinear', align_corners=False)
                for branch in self.branches]


class PSPHead(nn.Module):
    """mmseg's PSPHead: c5 and its four pooled contexts, concatenated, a 3x3 bottleneck, the
    classifier. forward(c5) -> logits (B, K, H/8, W/8)."""

    def __init__(self, in_ch, channels, num_classes):
        super().__init__()
        self.psp_modules = PPM(in_ch, channels)
        self.bottleneck = conv_bn_relu(in_ch + len(POOL_SCALES) * channels, channels, 3)
        self.cls_seg = classifier(channels, num_classes)

    def forward(self, c5):
        x = torch.cat([c5] + self.psp_modules(c5), dim=1)  # (B, C5 + 4 * channels, h, w)
        return self.cls_seg(self.bottleneck(x))  # (B, K, h, w)


class FCNHead(nn.Module):
    """mmseg's FCNHead as PSPNet's auxiliary head (num_convs=1, concat_input=False): one 3x3
    conv-BN-ReLU and the classifier. forward(c4) -> logits (B, K, H/8, W/8)."""

    def __init__(self, in_ch, channels, num_classes):
        super().__init__()
        self.convs = conv_bn_relu(in_ch, channels, 3)
        self.cls_seg = classifier(channels, num_classes)

    def forward(self, c4):
        return self.cls_seg(self.convs(c4))


class PSPNet(nn.Module):
    """PSPNet(num_classes, depth=50): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples of 32;
    model(x, y) in training adds 0.4 x the auxiliary head's cross-entropy to the main one."""

    def __init__(self, num_classes, *, depth=50):
        super().__init__()
        self.backbone = ResNet(depth, output_stride=8)  # c4 and c5 at stride 8 (dilated)
        c4_ch, c5_ch = self.backbone.out_channels[2:]  # 1024, 2048 (ResNet-50); 256, 512 (18/34)
        # mmseg's widths are a quarter of the input channels: 512 and 256 at ResNet-50, and its
        # pspnet_r18-d8 configs set 128 and 64 for ResNet-18's 512 / 256 channels, the same rule
        self.decode_head = PSPHead(c5_ch, c5_ch // 4, num_classes)
        self.auxiliary_head = FCNHead(c4_ch, c4_ch // 4, num_classes)

    def forward(self, x, y=None, *, ignore_index=255, progress=0.0):
        check_input(x, 'PSPNet', 32)  # progress: unused, PSPNet's loss does not anneal
        c2, c3, c4, c5 = self.backbone(x)  # c4, c5: (B, 1024 / 2048, H/8, W/8) at ResNet-50
        logits = self.decode_head(c5)  # (B, K, H/8, W/8)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)
        if y is None:
            return logits
        loss = segmentation_loss(logits, y, ignore_index)
        if self.training:  # deep supervision: the auxiliary head only trains (and is not run at
            aux_logits = self.auxiliary_head(c4)  # test time, where mmseg drops it too)
            aux_logits = F.interpolate(aux_logits, size=x.shape[2:], mode='bilinear',
                                       align_corners=False)  # (B, K, H, W)
            loss = loss + AUX_WEIGHT * segmentation_loss(aux_logits, y, ignore_index)
        return logits, loss

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        return configure_optimizers(self, optimizer, learning_rate, weight_decay)

    def load_pretrained(self, path):
        load_backbone(self.backbone, path)  # a torchvision ResNet file, or 'imagenet'
