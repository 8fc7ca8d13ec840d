"""PFSegNet: PointFlow (Li et al. CVPR 2021), an FPN whose top-down merges flow through points.

In a plain FPN every low-level pixel receives the upsampled high-level map. PointFlow argues that
for aerial images, mostly background with small objects, this floods the fine levels with
background context. Instead, each merge between adjacent pyramid levels (PointFlowModule) picks
a few points, the salient ones and the boundary ones. At those points alone, it lets the
high-level semantics flow into the low-level features, through an attention between the two
levels' point features. All other low-level pixels pass through unchanged. The paper's Tab. 2
(SatSynth) lists it as the strongest of its five segmenters. Reads and writes no files beyond
fpn.load_backbone's optional checkpoint. seg.py builds it through segmenters.py as
`PFSegNet(num_classes, depth=...)`.

    from fpn import preprocess
    from pfsegnet import PFSegNet
    logits = PFSegNet(num_classes=16, depth=50)(preprocess(images))  # (B, 16, H, W), H, W % 32 == 0

Layout, following the reference (UperNetAlignHeadMaxAvgpool):
    ResNet c2..c5 -> PSP module on c5 = p5 -> for c4, c3, c2: lateral 1x1 conv, then
    p_low = lateral + PointFlow(p_high, lateral) -> each p through a 3x3 conv-BN-ReLU (p5 as it
    is) -> all four upsampled to stride 4 and concatenated -> 3x3 conv-BN-ReLU, 1x1 classifier ->
    logits bilinearly upsampled to the input size. Each PointFlow also predicts an edge map, which
    a class-balanced BCE supervises in training.

References:
    Li, He, Li, Li, Cheng, Shi, Weng, Tong, Lin 2021, "PointFlow: Flowing Semantics Through
    Points for Aerial Image Segmentation" (arXiv 2103.06564), Sec. 3 and Fig. 3
    lxtGH/PFSegNets network/pointflow_resnet_with_max_avg_pool.py (AlignNetResNetMaxAvgpool,
    UperNetAlignHeadMaxAvgpool), network/nn/point_flow.py (PointFlowModuleWithMaxAvgpool,
    PointMatcher), network/nn/operators.py (PSPModule), loss.py (JointEdgeSegLightLossPfnet),
    scripts/pointflow/train_iSAID_pfnet_r50.sh (the knobs below)
    Zhao et al. 2017, "Pyramid Scene Parsing Network" (the PSP module on c5)

Deviations from the reference, and why:
- The backbone is fpn.ResNet, with torchvision's stem: a 7x7 conv with 64 channels, so that
  torchvision checkpoints load. The reference's resnet_d has a "deep stem" (three 3x3 convs,
  128 channels, and its own resnet50-deep.pth weights), which costs 123,776 more parameters at
  ResNet-50. Its variant 'D' is kept: the 3x3 convs of layer3 / layer4 get dilation 2 / 4 but
  keep their stride, so the output stride stays 32 (dilate_like_reference).
- The segmentation loss is plain cross-entropy, not the reference's OHEM (threshold 0.7,
  min_kept 10,000 pixels). That setting is sized for 896x896 crops. On a batch with fewer
  labelled pixels than min_kept, OHEM is plain CE anyway.
- Edge targets: the reference draws cv2 contours of the non-zero (foreground) mask, 8 pixels
  thick (datasets/iSAID.py get_boundary). Here, a pixel is an edge if a 9x9 window around it
  holds two different valid labels (edge_target). That needs no cv2, and it makes no
  assumption that class 0 is the background. The loss itself is the reference's bce2d: a
  class-balanced BCE, weighted by 25, on each of the three edge maps.
- Salient points: the reference takes the maximum of each cell of a fixed 14x14 grid over the
  certainty map. On a map smaller than 14x14 the cells repeat pixels, and a repeated point then
  counts several times in the attention's softmax. Here the grid is clamped to the map, so every
  pixel is a point at most once (salient_points). The top-k of boundary points is clamped to the
  map's pixel count, as in the reference.
- Small inputs work (the tests use 32x32, where c5 is 1x1). Like any PSP module with BatchNorm,
  training needs a batch of at least 2: the 1x1 pooled map has one value per channel.
I checked this against the reference's modules with its weights copied in (torch 2.14): the
PointFlow module, the whole head and the dilated layer3/4 give identical outputs, bit for bit,
wherever every map is at least 14x14 (below that, only the clamped salient grid differs).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from fpn import ResNet, check_input, configure_optimizers, load_backbone, segmentation_loss

# The reference's knobs: scripts/pointflow/train_{iSAID,posdam896,vaihingen768}_pfnet_r50.sh all
# pass these (train.py's defaults differ: maxpool_size 9, edge_points 32). seg.py builds models
# from (num_classes, depth) alone, so they are constants rather than constructor arguments.
FPN_DIM = 256  # channels of every pyramid level (fpn_dim)
MATCH_DIM = 64  # --match_dim: channels of the point matcher's two embeddings (reduce_dim)
MAXPOOL_SIZE = 14  # --maxpool_size: salient points = the maximum of each cell of a 14x14 grid
AVGPOOL_SIZE = 9  # --avgpool_size: the 9x9 average that is subtracted to expose boundaries
EDGE_POINTS = 128  # --edge_points: boundary points = the top 128 of the edge map
EDGE_WEIGHT = 25.0  # --edge_weight: each of the three edge losses is weighted by 25
EDGE_RADIUS = 4  # --thicky 8: the reference's 8-pixel-thick contours, ~4 pixels on each side


def conv_bn_relu(in_ch, out_ch, kernel_size):
    """Conv (no bias: BN follows) - BN - ReLU, the reference's conv3x3_bn_relu for kernel 3."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2,
                                   bias=False),
                         nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


def dilate_like_reference(backbone):
    """The reference's variant 'D': the 3x3 convs (conv2) of layer3 and layer4 get dilation 2 and
    4 but keep their stride, so the output stride stays 32. Done in place: the weights are
    untouched, so torchvision checkpoints still load."""
    for layer, dilation in ((backbone.layer3, 2), (backbone.layer4, 4)):
        for block in layer:
            block.conv2.dilation = (dilation, dilation)
            block.conv2.padding = (dilation, dilation)  # keeps the map size of padding 1


class PSPModule(nn.Module):
    """Pyramid pooling on c5 (Zhao et al. 2017), as the reference's operators.PSPModule.

    The map is average-pooled to 1x1, 2x2, 3x3 and 6x6, each passed through a 1x1 conv + BN and
    upsampled back. These four are concatenated with the input, then a 1x1 conv-BN-ReLU-dropout
    makes p5."""

    def __init__(self, in_ch, out_ch, sizes=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(in_ch, out_ch, 1, bias=False),
                          nn.BatchNorm2d(out_ch))
            for size in sizes)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_ch + len(sizes) * out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Dropout2d(0.1))

    def forward(self, x):
        size = x.shape[2:]
        priors = [F.interpolate(stage(x), size=size, mode='bilinear', align_corners=True)
                  for stage in self.stages]
        return self.bottleneck(torch.cat(priors + [x], 1))  # (B, out_ch, H/32, W/32)


# The dual point sampler (Sec. 3.2). Points are flat indices into a map's H*W pixels, (B, P).

def salient_points(certainty, grid_size):
    """The flat index of the maximum of each cell of a grid_size x grid_size grid over
    `certainty` (B, 1, H, W), as (B, P), along with the cell maxima (B, 1, h, w). The grid is
    clamped to the map, so on a map smaller than the grid every pixel is its own cell, and a
    point at most once."""
    H, W = certainty.shape[2:]
    grid = (min(grid_size, H), min(grid_size, W))
    cell_max, indices = F.adaptive_max_pool2d(certainty, grid, return_indices=True)
    return indices.flatten(1), cell_max  # (B, h*w), (B, 1, h, w)


def boundary_points(edge_map, num_points):
    """The flat indices of the num_points largest values of `edge_map` (B, 1, H, W), as (B, k).
    k is clamped to H*W: a 1x1 map at 32x32 inputs cannot give 128 points (the reference's
    get_uncertain_point_coords_on_grid does the same)."""
    k = min(num_points, edge_map.shape[2] * edge_map.shape[3])
    return edge_map.flatten(1).topk(k, dim=1).indices  # (B, k)


def gather_points(features, indices):
    """Features (B, C, H, W) at flat indices (B, P) -> (B, C, P)."""
    C = features.shape[1]
    return features.flatten(2).gather(2, indices[:, None].expand(-1, C, -1))


def high_to_low_index(indices, high_width, ratio, low_width):
    """A flat index into the high-level map -> the flat index of the top-left pixel of its
    ratio x ratio block in the low-level map (the reference's x * stride_ratio + y * W)."""
    row = indices // high_width * ratio
    col = indices % high_width * ratio
    return row * low_width + col


def point_attention(high_points, low_points):
    """The dual index attention: each low-level point j gets a softmax over the high-level
    points i of the dot products <low_j, high_i> (no 1/sqrt(C) scaling, as in the reference). It
    then receives that mix of the high-level features. Both inputs (B, C, P), output
    (B, C, P)."""
    affinity = torch.bmm(low_points.transpose(1, 2), high_points)  # (B, P_low, P_high)
    affinity = affinity.softmax(dim=-1)
    return torch.bmm(high_points, affinity.transpose(1, 2))  # (B, C, P_low)


class PointMatcher(nn.Module):
    """The certainty (B, 1, h, w) that a high-level pixel's semantics match the low level below
    it: a 3x3 conv and a sigmoid over both embeddings. The low-level embedding is first
    resampled to the high level's size (the reference's PointMatcher)."""

    def __init__(self, dim, kernel_size=3):
        super().__init__()
        self.match_conv = nn.Conv2d(2 * dim, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, high_embed, low_embed):
        low_embed = F.interpolate(low_embed, size=high_embed.shape[2:], mode='bilinear',
                                  align_corners=True)  # (B, dim, h, w)
        return torch.sigmoid(self.match_conv(torch.cat([high_embed, low_embed], 1)))


class PointFlowModule(nn.Module):
    """One top-down merge (the reference's PointFlowModuleWithMaxAvgpool). Given the high level
    (B, C, h, w) and the low level (B, C, H, W), with H = ratio * h, it returns the low level with
    only its sampled points replaced, plus the edge logits (B, 1, h, w).

    1. The certainty map (PointMatcher) is computed at the high level's size.
    2. Boundary points: the high map minus its certainty-weighted 9x9 average (what is left is
       mostly edges) goes through a small conv head, the edge logits. Its top-k pixels are the
       boundary points.
    3. Salient points: the maximum of each cell of a 14x14 grid over the certainty map. The high
       map is first amplified by (1 + cell maxima), so that salient semantics weigh more.
    4. At each set of points, the high and low point features go through point_attention. That
       result plus the low feature is scattered back to the low-level pixel under the point.
       Salient points are written last, so they win where the two sets share a pixel.
    """

    def __init__(self, in_ch, *, match_dim=MATCH_DIM, maxpool_size=MAXPOOL_SIZE,
                 avgpool_size=AVGPOOL_SIZE, edge_points=EDGE_POINTS):
        super().__init__()
        self.maxpool_size = maxpool_size
        self.avgpool_size = avgpool_size
        self.edge_points = edge_points
        self.down_h = nn.Conv2d(in_ch, match_dim, 1)  # embeddings for the matcher only: the
        self.down_l = nn.Conv2d(in_ch, match_dim, 1)  # points carry the full in_ch features
        self.point_matcher = PointMatcher(match_dim)
        self.edge_final = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_ch, 1, 3, padding=1, bias=False))

    def forward(self, high, low):
        B, C, H, W = low.shape
        h, w = high.shape[2:]
        ratio = H // h
        assert high.shape[:2] == (B, C) and (H, W) == (ratio * h, ratio * w), \
            f'PointFlow wants the low level an integer multiple of the high level, got ' \
            f'{tuple(low.shape)} and {tuple(high.shape)}'
        certainty = self.point_matcher(self.down_h(high), self.down_l(low))  # (B, 1, h, w)

        # boundary points: subtract the certain "body", keep what stands out (the edges)
        body = F.adaptive_avg_pool2d(certainty, self.avgpool_size)  # (B, 1, 9, 9)
        body = F.interpolate(body, size=(h, w), mode='bilinear', align_corners=True)
        edge_pred = self.edge_final(high - high * body)  # (B, 1, h, w) logits
        edge_idx = boundary_points(edge_pred, self.edge_points)  # (B, Pe), no gradient
        high_edge = gather_points(high, edge_idx)  # (B, C, Pe)
        # The reference bilinearly samples the low level at the high cell's centre
        # (grid_sample). For ratio 2 that is exactly the mean of the 2x2 low-level pixels under
        # the cell.
        low_edge = gather_points(F.avg_pool2d(low, ratio), edge_idx)  # (B, C, Pe)
        fused_edge = point_attention(high_edge, low_edge) + low_edge

        # salient points: the most certain pixel of each grid cell, on an amplified high map
        salient_idx, cell_max = salient_points(certainty, self.maxpool_size)  # (B, Ps)
        cell_max = F.interpolate(cell_max, size=(h, w), mode='bilinear', align_corners=True)
        high = high + high * cell_max  # (B, C, h, w)
        high_salient = gather_points(high, salient_idx)  # (B, C, Ps)
        low_salient_idx = high_to_low_index(salient_idx, w, ratio, W)
        low_salient = gather_points(low, low_salient_idx)  # the top-left pixel, not a mean
        fused_salient = point_attention(high_salient, low_salient) + low_salient

        # scatter back: every other low-level pixel passes through unchanged
        low_edge_idx = high_to_low_index(edge_idx, w, ratio, W)
        out = low.flatten(2)  # (B, C, H*W)
        out = out.scatter(2, low_edge_idx[:, None].expand(-1, C, -1), fused_edge.to(out.dtype))
        out = out.scatter(2, low_salient_idx[:, None].expand(-1, C, -1),
                          fused_salient.to(out.dtype))
        return out.view(B, C, H, W), edge_pred


class PointFlowHead(nn.Module):
    """PSP on c5, the PointFlow top-down path, and the fusion of all four levels at stride 4
    (the reference's UperNetAlignHeadMaxAvgpool; fpn_dsn, off in its scripts, is left out)."""

    def __init__(self, in_channels, num_classes, *, fpn_dim=FPN_DIM):
        super().__init__()
        self.ppm = PSPModule(in_channels[-1], fpn_dim)
        # lateral 1x1 conv-BN-ReLU for c2..c4 (the conv keeps its bias, as in the reference)
        self.fpn_in = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, fpn_dim, 1), nn.BatchNorm2d(fpn_dim), nn.ReLU(inplace=True))
            for c in in_channels[:-1])
        self.point_flow = nn.ModuleList(PointFlowModule(fpn_dim) for _ in in_channels[:-1])
        self.fpn_out = nn.ModuleList(conv_bn_relu(fpn_dim, fpn_dim, 3) for _ in in_channels[:-1])
        self.conv_last = nn.Sequential(conv_bn_relu(len(in_channels) * fpn_dim, fpn_dim, 3),
                                       nn.Conv2d(fpn_dim, num_classes, 1))

    def forward(self, features):
        p = self.ppm(features[-1])  # p5 (B, 256, H/32, W/32)
        pyramid = [p]  # p5, p4, p3, p2 as they are made
        edge_preds = []
        for i in reversed(range(len(features) - 1)):  # c4, c3, c2
            lateral = self.fpn_in[i](features[i])  # (B, 256, H/s, W/s)
            flowed, edge_pred = self.point_flow[i](p, lateral)
            # No upsampled high level is added at the unsampled pixels: semantics reach the
            # low level through the points alone. Those pixels hold 2 * lateral.
            p = lateral + flowed
            edge_preds.append(edge_pred)
            pyramid.append(self.fpn_out[i](p))
        p2, p3, p4, p5 = reversed(pyramid)  # p5 skips fpn_out, as in the reference
        size = p2.shape[2:]
        up = lambda t: F.interpolate(t, size=size, mode='bilinear', align_corners=True)
        fused = torch.cat([p2, up(p3), up(p4), up(p5)], 1)  # (B, 4 * 256, H/4, W/4)
        return self.conv_last(fused), edge_preds  # (B, K, H/4, W/4), 3 x (B, 1, h, w)


def edge_target(y, ignore_index=255, radius=EDGE_RADIUS):
    """Labels (B, H, W) -> (edges, valid): both (B, H, W). edges is 1.0 where the
    (2 radius + 1)^2 window around a pixel holds two different valid labels, else 0.0. valid
    marks the non-ignore pixels. Max pooling gives each window's largest and smallest valid
    label, and a window is an edge iff they differ."""
    valid = y != ignore_index
    labels = y[:, None].float()  # (B, 1, H, W); labels <= 255 are exact in float32
    window = dict(kernel_size=2 * radius + 1, stride=1, padding=radius)
    largest = F.max_pool2d(torch.where(valid[:, None], labels, -1.0), **window)
    smallest = -F.max_pool2d(torch.where(valid[:, None], -labels, -1e6), **window)
    return (largest > smallest)[:, 0].float(), valid  # no valid label: -1 > 1e6 is False


def edge_loss(edge_logits, edges, valid):
    """The reference's bce2d: BCE weighted by the other side's share of the batch's valid
    pixels (edges weigh #non-edges / #valid and vice versa), ignore pixels weigh 0. It is
    averaged over all pixels, in float32. Inputs (B, H, W)."""
    positive = valid & (edges > 0)
    negative = valid & (edges == 0)
    n_valid = valid.sum().clamp(min=1)
    weight = (positive * (negative.sum() / n_valid) + negative * (positive.sum() / n_valid))
    return F.binary_cross_entropy_with_logits(edge_logits.float(), edges, weight.float())


class PFSegNet(nn.Module):
    """PFSegNet(num_classes, depth=50): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples
    of 32; with y, training adds the three edge losses to the cross-entropy."""

    def __init__(self, num_classes, *, depth=50):
        super().__init__()
        self.backbone = ResNet(depth)
        dilate_like_reference(self.backbone)
        self.head = PointFlowHead(self.backbone.out_channels, num_classes)

    def forward(self, x, y=None, *, ignore_index=255, progress=0.0):
        check_input(x, 'PFSegNet', 32)  # c5 has stride 32, and each merge doubles exactly
        logits, edge_preds = self.head(self.backbone(x))  # (B, K, H/4, W/4)
        size = x.shape[2:]
        logits = F.interpolate(logits, size=size, mode='bilinear', align_corners=True)
        if y is None:
            return logits
        loss = segmentation_loss(logits, y, ignore_index)
        if self.training:  # the edge maps are supervised in training only (eval: plain CE)
            edges, valid = edge_target(y, ignore_index)
            for edge_pred in edge_preds:  # each at its own level, compared at the input size
                edge_pred = F.interpolate(edge_pred, size=size, mode='bilinear',
                                          align_corners=True)
                loss = loss + EDGE_WEIGHT * edge_loss(edge_pred[:, 0], edges, valid)
        return logits, loss

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        return configure_optimizers(self, optimizer, learning_rate, weight_decay)

    def load_pretrained(self, path):
        load_backbone(self.backbone, path)  # a torchvision ResNet file, or 'imagenet'
