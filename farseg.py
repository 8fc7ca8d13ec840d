"""FarSeg: the foreground-aware relation network for aerial imagery, one of the Tab. 2 segmenters.

Zheng et al. answer the large, varied background of overhead scenes two ways. A foreground-scene
(F-S) relation module scores every pixel of each FPN level against a scene embedding (c5 pooled
to one vector), and gates the re-encoded level by that score, so features that agree with the
scene (objects) are kept and background is damped. An annealed softmax focal loss shifts the
training signal from plain cross-entropy at the start to a normalised focal loss (hard pixels,
mostly foreground) by the end. Reads and writes no files beyond an optional torchvision checkpoint
(load_pretrained, as fpn.py); seg.py rebuilds it with `segmenters.build(model_args)`.

    from farseg import FarSeg
    model = FarSeg(num_classes=16, depth=50)
    logits, loss = model(fpn.preprocess(images), y, progress=it / max_iters)   # (B, 16, H, W)

Layout (ResNet-50):
    c2..c5 -> FPN (1x1 laterals, nearest 2x top-down sums, 3x3 outputs) -> p2..p5, 256 channels
    scene u = global-average-pool(c5) (B, 2048, 1, 1)
    F-S relation, per level i: r_i = sigmoid(<phi_i(u), content_i(p_i)>) over channels,
        z_i = r_i * reencode_i(p_i)
    light-weight decoder: per level, [3x3 conv 128 + BN + ReLU + 2x bilinear up] until stride 4
        (one conv without upsampling for p2), mean of the four, 1x1 conv K, 4x bilinear up

References:
    Zheng, Zhong, Wang, Ma 2020, "Foreground-Aware Relation Network for Geospatial Object
        Segmentation in High Spatial Resolution Remote Sensing Imagery", CVPR (the F-S
        relation module, the light-weight decoder, foreground-aware optimisation)
    Z-Zheng/FarSeg module/farseg.py (SceneRelation, AssymetricDecoder, FarSeg), module/loss.py
        (annealing_softmax_focalloss, cosine_annealing), configs/isaid/farseg50.py (the recipe);
        the FPN is Z-Zheng/SimpleCV simplecv/module/fpn.py (maskrcnn-benchmark's)
    microsoft/torchgeo torchgeo/models/farseg.py (a peer: the same model without the loss)

Deviations from the reference, and why:
    - The loss divides by the number of labelled pixels; the reference divides by that plus the
      batch size (its guard against an all-ignore batch, a relative change of B / labelled
      pixels, ~4e-6 at 512x512), so that at progress 0 the loss is exactly fpn.py's
      cross-entropy. Its normaliser's denominator is clamped above 0 (the reference gives NaN on
      an all-ignore batch).
    - The annealing runs over `annealing_end` of training, a fraction of seg.py's max_iters
      (default 1: the whole run). The reference anneals over a fixed max_step=10000 of its 60000
      iterations, i.e. annealing_end=1/6.
    - configure_optimizers is fpn.py's (no weight decay on BN and biases); the reference's SGD
      decays every parameter. Its poly schedule, lr 0.007 and gradient clip 35 belong to
      seg.py's config, not here.
    - The backbone is fpn.ResNet (torchvision's, no fc). torchgeo counts torchvision's unused
      fc (2,049,000 parameters at ResNet-50) and classifies with a 3x3 conv; the reference
      (here) a 1x1 conv.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from fpn import ResNet, check_input, configure_optimizers, load_backbone

PYRAMID_CH = 256  # FPN and F-S relation width (the reference config's fpn.out_channels)
DECODER_CH = 128  # the light-weight decoder's width (decoder.out_channels)
FOCAL_GAMMA = 2.0  # the focusing parameter (annealing_softmax_focalloss.gamma)


def annealing_weight(progress, annealing_end=1.0):
    """zeta(t) = (1 + cos(pi t / T)) / 2, with t / T = progress / annealing_end, clipped to 1:
    1 at the start (plain cross-entropy), 0 from annealing_end on (the normalised focal loss).
    The reference's cosine_annealing(1, scales, t, t_max) is zeta + (1 - zeta) * scales."""
    t = min(max(progress / annealing_end, 0.0), 1.0)  # the reference: t > t_max -> focal only
    return 0.5 * (1.0 + math.cos(math.pi * t))


def annealed_focal_loss(logits, y, progress, *, ignore_index=255, gamma=FOCAL_GAMMA,
                        annealing_end=1.0):
    """Zheng et al.'s annealed softmax focal loss, in float32, as Z-Zheng/FarSeg's
    annealing_softmax_focalloss: each pixel's cross-entropy l_i weighted by
        w_i = zeta + (1 - zeta) * (1 - p_i)**gamma / Z,  Z = sum_i (1 - p_i)**gamma l_i / sum_i l_i
    with p_i the softmax probability of the true class and the weights held constant (no
    gradient). Z makes the focal weights sum like cross-entropy, so the loss *value* equals the
    cross-entropy at every progress; only the gradient shifts toward the hard pixels."""
    logits = logits.float()  # under bf16 autocast too: p_i near 1 needs the precision
    ce = F.cross_entropy(logits, y, ignore_index=ignore_index, reduction='none')  # (B, H, W)
    with torch.no_grad():  # the reference's weights are constants of the backward pass
        labelled = y != ignore_index  # ignore pixels have ce 0 and weigh nothing
        p_true = torch.exp(-ce)  # the softmax probability of the true class (1 where ignored)
        focal = (1.0 - p_true) ** gamma  # (B, H, W)
        normalizer = ce.sum() / (ce * focal).sum().clamp_min(torch.finfo(torch.float32).tiny)
        zeta = annealing_weight(progress, annealing_end)
        weight = zeta + (1.0 - zeta) * focal * normalizer  # (B, H, W)
    return (ce * weight).sum() / labelled.sum().clamp_min(1)


class FPNNeck(nn.Module):
    """Lin et al. 2017's FPN as SimpleCV's (maskrcnn-benchmark's) default_conv_block: 1x1
    laterals, nearest 2x top-down sums, a 3x3 conv on each merged level, all with bias and
    kaiming_uniform(a=1) weights. forward([c2..c5]) -> [p2..p5], 256 channels each."""

    def __init__(self, in_channels, out_ch=PYRAMID_CH):
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_ch, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_ch, out_ch, 3, padding=1)
                                          for _ in in_channels)
        for conv in [*self.inner_blocks, *self.layer_blocks]:  # Caffe2's XavierFill
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.bias)

    def forward(self, features):
        last_inner = self.inner_blocks[-1](features[-1])  # (B, 256, H/32, W/32)
        results = [self.layer_blocks[-1](last_inner)]
        for level in range(len(features) - 2, -1, -1):  # c4, c3, c2
            top_down = F.interpolate(last_inner, scale_factor=2, mode='nearest')
            last_inner = self.inner_blocks[level](features[level]) + top_down
            results.insert(0, self.layer_blocks[level](last_inner))  # finest first
        return results  # [p2 (B, 256, H/4, W/4), p3, p4, p5 (B, 256, H/32, W/32)]


def conv1x1_bn_relu(in_ch, out_ch):
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class FSRelation(nn.Module):
    """The foreground-scene relation module (Zheng et al.; the reference's SceneRelation
    with scale_aware_proj=True): per pyramid level a 2-layer 1x1 MLP projects the scene vector
    u, the relation map r = sigmoid(sum over channels of projected u * encoded p), and the
    output is r times the re-encoded level. forward(u, [p2..p5]) -> [z2..z5]."""

    def __init__(self, scene_ch, in_channels, out_ch=PYRAMID_CH):
        super().__init__()
        # a separate projection of the scene per level (scale-aware): each level sees its own u
        self.scene_encoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(scene_ch, out_ch, 1), nn.ReLU(inplace=True),
                          nn.Conv2d(out_ch, out_ch, 1))
            for _ in in_channels)
        self.content_encoders = nn.ModuleList(conv1x1_bn_relu(c, out_ch) for c in in_channels)
        self.feature_reencoders = nn.ModuleList(conv1x1_bn_relu(c, out_ch) for c in in_channels)

    def forward(self, scene, features):
        refined = []
        for level, p in enumerate(features):
            scene_feat = self.scene_encoder[level](scene)  # (B, 256, 1, 1)
            content = self.content_encoders[level](p)  # (B, 256, h, w)
            score = (scene_feat * content).sum(dim=1, keepdim=True)  # (B, 1, h, w)
            relation = torch.sigmoid(score)  # in (0, 1): how much the pixel agrees with the scene
            refined.append(relation * self.feature_reencoders[level](p))  # (B, 256, h, w)
        return refined


class LightWeightDecoder(nn.Module):
    """Zheng et al.'s light-weight decoder (the reference's AssymetricDecoder): the level at
    stride 2^k gets k - 2 stages of 3x3 conv-BN-ReLU + 2x bilinear upsampling (one stage without
    upsampling for stride 4); the four stride-4 maps are averaged.
    forward([z2..z5]) -> (B, 128, H/4, W/4)."""

    def __init__(self, in_ch=PYRAMID_CH, out_ch=DECODER_CH, strides=(4, 8, 16, 32)):
        super().__init__()
        self.blocks = nn.ModuleList()
        for stride in strides:
            n_upsample = int(math.log2(stride)) - 2  # 0, 1, 2, 3 doublings to reach stride 4
            stages = []
            for k in range(max(1, n_upsample)):
                stages += [nn.Conv2d(out_ch if k else in_ch, out_ch, 3, padding=1, bias=False),
                           nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
                if n_upsample:  # nn.UpsamplingBilinear2d in the reference: align_corners=True
                    stages.append(nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True))
            self.blocks.append(nn.Sequential(*stages))

    def forward(self, features):
        return sum(block(z) for block, z in zip(self.blocks, features)) / len(features)


class FarSeg(nn.Module):
    """FarSeg(num_classes, depth=50): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples of 32;
    model(x, y, progress=p) -> (logits, the annealed focal loss at progress p)."""

    def __init__(self, num_classes, *, depth=50, annealing_end=1.0):
        super().__init__()
        if not 0 < annealing_end <= 1:
            raise ValueError(f'FarSeg annealing_end is a fraction of training in (0, 1], got '
                             f'{annealing_end} (the reference: 10000 / 60000 iterations = 1/6)')
        self.annealing_end = annealing_end
        self.backbone = ResNet(depth)  # c2..c5 at strides 4..32
        in_channels = self.backbone.out_channels  # (256, 512, 1024, 2048) at ResNet-50
        self.fpn = FPNNeck(in_channels)
        self.fsr = FSRelation(in_channels[-1], [PYRAMID_CH] * 4)  # the scene is c5, pooled
        self.decoder = LightWeightDecoder()
        self.classifier = nn.Conv2d(DECODER_CH, num_classes, 1)  # the reference's cls_pred_conv

    def forward(self, x, y=None, *, ignore_index=255, progress=0.0):
        check_input(x, 'FarSeg', 32)  # c5 has stride 32: other sizes break the top-down sums
        features = self.backbone(x)  # [c2, c3, c4, c5]
        scene = F.adaptive_avg_pool2d(features[-1], 1)  # (B, 2048, 1, 1), the scene embedding
        refined = self.fsr(scene, self.fpn(features))  # [z2..z5], 256 channels each
        logits = self.classifier(self.decoder(refined))  # (B, K, H/4, W/4)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=True)
        if y is None:
            return logits
        loss = annealed_focal_loss(logits, y, progress, ignore_index=ignore_index,
                                   annealing_end=self.annealing_end)
        return logits, loss

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        return configure_optimizers(self, optimizer, learning_rate, weight_decay)

    def load_pretrained(self, path):
        load_backbone(self.backbone, path)  # a torchvision ResNet file, or 'imagenet'
