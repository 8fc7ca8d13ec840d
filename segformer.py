"""SegFormer: a Mix Transformer (MiT) encoder and an all-MLP decoder, one of the segmenters.

SegFormer (Xie et al. 2021) is the transformer entry among the segmenters that value the generated
pairs (segmenters.ARCHS): a hierarchical encoder without positional encodings, whose four stages
give feature maps at strides 4, 8, 16 and 32, and a decoder made of 1x1 projections only. It
follows the segmenter interface written at the end of fpn.py; seg.py saves `model_args` and
rebuilds with `segmenters.build`. Reads no files beyond an optional local MiT checkpoint
(load_pretrained); nothing is downloaded, so the encoder trains from scratch by default.

    from segformer import SegFormer
    model = SegFormer(num_classes=16, size='b0')  # segformer_b0(16): segmenters' constructor
    logits = model(x)  # x = fpn.preprocess(images) (B, 3, H, W), H, W % 32 == 0 -> (B, 16, H, W)

References:
    Xie, Wang, Yu, Anandkumar, Alvarez, Luo 2021, "SegFormer: Simple and Efficient Design for
        Semantic Segmentation with Transformers" (Sec. 3, Tab. 6 for the MiT sizes)
    NVlabs/SegFormer mmseg/models/backbones/mix_transformer.py (the encoder; module and key names
        are this file's: smp's MiT encoder state dicts load strictly (checked, tests/
        test_segformer.py), and so should NVlabs's ImageNet mit_b*.pth (no file here to check))
    NVlabs/SegFormer mmseg/models/decode_heads/segformer_head.py (the decoder, names kept too)
    open-mmlab/mmsegmentation mmseg/models/backbones/mit.py (a later port with other key names)
    and configs/segformer (the AdamW recipe of configure_optimizers)

Where this file deviates from NVlabs's code, and why:
    - Attention runs through F.scaled_dot_product_attention: the same softmax(q k^T / sqrt(d)) v
      with no attention dropout (every MiT size has attn_drop_rate 0), but fused on a GPU.
    - The dropout modules of rate 0 (drop_rate 0 in every MiT size) are left out: no parameters.
    - The decoder's fuse layer uses BatchNorm2d, not SyncBN: seg.py converts it under DDP when
      --sync_bn is set. The unused `conv_seg` that mmseg's BaseDecodeHead builds beside
      SegFormer's own `linear_pred` (128 x K weights, never called) is not built.
    - configure_optimizers: mmseg's recipe decays every weight but those named 'norm'; here no
      1-d parameter (biases, LayerNorm and BatchNorm scales) is decayed, as fpn.py does.
    - No ImageNet-1K pretraining (the paper's encoders all have it): no weights are reachable
      here, so accuracy from scratch is expected to be well below the paper's numbers.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

import fpn

# The MiT sizes (paper Tab. 6; NVlabs mix_transformer.py's mit_b0 and mit_b2), and the decoder
# width each is paired with (NVlabs local_configs/segformer/B0, B2: decoder_params embed_dim).
MIT_SIZES = {
    'b0': dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), decoder_dim=256),
    'b2': dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), decoder_dim=768),
}
NUM_HEADS = (1, 2, 5, 8)  # per stage, the same for every size (head dim 32 in B0, 64 in B2)
SR_RATIOS = (8, 4, 2, 1)  # stage i's keys/values: a strided conv shrinks H and W by this factor
MLP_RATIO = 4  # Mix-FFN hidden width / embed dim


def stochastic_depth(x, p, training):
    """Stochastic depth (Huang et al. 2016), timm's DropPath: drop a whole residual branch for a
    random subset of the samples, scaling the kept ones by 1 / (1 - p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
    return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """A strided conv whose kernel overlaps its neighbours (7x7 stride 4, or 3x3 stride 2, padding
    k // 2), then LayerNorm: (B, C_in, H, W) -> tokens (B, H/s * W/s, C) and the new H, W."""

    def __init__(self, in_ch, embed_dim, patch_size, stride):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # (eps 1e-5 here, as NVlabs: only blocks use 1e-6)

    def forward(self, x):
        x = self.proj(x)  # (B, C, H/s, W/s)
        H, W = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), N = H/s * W/s
        return self.norm(x), H, W


class Attention(nn.Module):
    """Efficient self-attention (Sec. 3.1): the queries are all N tokens, the keys and values a
    copy of the map shrunk by a strided sr_ratio x sr_ratio conv (+ LayerNorm) to N / sr_ratio^2
    tokens, so the cost is O(N^2 / R) with R = sr_ratio^2 instead of O(N^2)."""

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        assert dim % num_heads == 0, f'dim {dim} is not a multiple of num_heads {num_heads}'
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)  # (qkv_bias=True in every MiT size)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:  # (stage 4 attends over all its tokens: it has no sr and no norm)
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        head_dim = C // self.num_heads
        q = self.q(x).reshape(B, N, self.num_heads, head_dim).transpose(1, 2)  # (B, h, N, d)
        if self.sr_ratio > 1:
            x = x.transpose(1, 2).reshape(B, C, H, W)  # tokens back to a map (B, C, H, W)
            x = self.sr(x).flatten(2).transpose(1, 2)  # (B, N / R, C)
            x = self.norm(x)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, head_dim)  # (B, N', 2, h, d)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N', d)
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v: (B, h, N, d)
        x = x.transpose(1, 2).reshape(B, N, C)  # heads concatenated (B, N, C)
        return self.proj(x)


class DWConv(nn.Module):
    """The 3x3 depthwise conv of Mix-FFN, on tokens: (B, N, C) -> (B, N, C). (A module of its own
    only so that the key is NVlabs's `mlp.dwconv.dwconv`.)"""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        return self.dwconv(x).flatten(2).transpose(1, 2)  # (B, N, C)


class MixFFN(nn.Module):
    """Mix-FFN (Sec. 3.1, Eq. 3): fc1, a 3x3 depthwise conv, GELU, fc2. The conv's zero padding
    leaks where a token sits, which is why MiT needs no positional encoding."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = DWConv(hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x, H, W):
        return self.fc2(self.act(self.dwconv(self.fc1(x), H, W)))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)), each residual
    branch dropped for whole samples with probability `drop_prob` while training."""

    def __init__(self, dim, num_heads, sr_ratio, drop_prob):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)  # (NVlabs's norm_layer: LayerNorm, eps 1e-6)
        self.attn = Attention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, MLP_RATIO * dim)
        self.drop_prob = drop_prob

    def forward(self, x, H, W):
        x = x + stochastic_depth(self.attn(self.norm1(x), H, W), self.drop_prob, self.training)
        x = x + stochastic_depth(self.mlp(self.norm2(x), H, W), self.drop_prob, self.training)
        return x


def init_weights(m):
    """NVlabs's _init_weights: truncated normal (std 0.02) linears, unit LayerNorms, convs
    normal with std sqrt(2 / fan_out), fan_out counted per group; zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, std=(2.0 / fan_out) ** 0.5)
        nn.init.zeros_(m.bias)


class MixTransformer(nn.Module):
    """MiT: forward(x) -> [c1, c2, c3, c4] at strides 4, 8, 16, 32 with embed_dims channels.
    Stage i = OverlapPatchEmbed, depths[i] Blocks, LayerNorm. The stochastic-depth rate grows
    linearly from 0 at the first block to drop_path at the last, across all stages (NVlabs)."""

    def __init__(self, *, embed_dims, depths, drop_path=0.1):
        super().__init__()
        self.embed_dims = tuple(embed_dims)
        drop_probs = torch.linspace(0, drop_path, sum(depths)).tolist()  # one per block
        # The stages are attributes patch_embed1..4, block1..4, norm1..4 (not a ModuleList of
        # stages) because those are the state-dict keys of NVlabs's and smp's MiT.
        in_ch = 3
        for i in range(4):
            patch_size, stride = (7, 4) if i == 0 else (3, 2)
            patch_embed = OverlapPatchEmbed(in_ch, embed_dims[i], patch_size, stride)
            first = sum(depths[:i])  # index of the stage's first block among all blocks
            blocks = nn.ModuleList(Block(embed_dims[i], NUM_HEADS[i], SR_RATIOS[i],
                                         drop_probs[first + j]) for j in range(depths[i]))
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', nn.LayerNorm(embed_dims[i], eps=1e-6))
            in_ch = embed_dims[i]
        self.apply(init_weights)

    def forward(self, x):
        features = []
        for i in range(1, 5):
            x, H, W = getattr(self, f'patch_embed{i}')(x)  # (B, N, C_i), N = H * W
            for block in getattr(self, f'block{i}'):
                x = block(x, H, W)
            x = getattr(self, f'norm{i}')(x)
            # (B, N, C) -> (B, C, H, W); left as a permuted view (channels-last in memory),
            # which the next patch embedding's conv and the decoder's linears read as it is
            x = x.reshape(x.shape[0], H, W, -1).permute(0, 3, 1, 2)
            features.append(x)
        return features


# The all-MLP decoder (Sec. 3.2, Eq. 4), NVlabs's SegFormerHead: a linear layer brings each
# stage to decoder_dim channels, bilinear upsampling brings it to stride 4, the four are
# concatenated (c4 first, as NVlabs, so its fuse weights keep their meaning), fused by a
# 1x1 conv + BN + ReLU, dropped out, and classified by a 1x1 conv.

class MLP(nn.Module):
    """A linear layer applied at every pixel (a 1x1 conv): (B, C, H, W) -> (B, E, H, W)."""

    def __init__(self, in_dim, embed_dim):
        super().__init__()
        self.proj = nn.Linear(in_dim, embed_dim)

    def forward(self, x):
        B, C, H, W = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))  # (B, H*W, E)
        return x.transpose(1, 2).reshape(B, -1, H, W)  # (B, E, H, W)


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule as SegFormerHead's linear_fuse uses it (names conv, bn kept): a conv
    without bias (BN follows), BN, ReLU; mmcv's kaiming (fan_out, relu) conv init."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        nn.init.kaiming_normal_(self.conv.weight, mode='fan_out', nonlinearity='relu')

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class SegFormerHead(nn.Module):
    """forward([c1, c2, c3, c4]) -> logits (B, K, H/4, W/4); embed_dim is the decoder width."""

    def __init__(self, in_channels, num_classes, *, embed_dim=256, dropout=0.1):
        super().__init__()
        c1, c2, c3, c4 = in_channels
        self.linear_c1 = MLP(c1, embed_dim)  # (PyTorch's default init, as NVlabs)
        self.linear_c2 = MLP(c2, embed_dim)
        self.linear_c3 = MLP(c3, embed_dim)
        self.linear_c4 = MLP(c4, embed_dim)
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)  # mmseg's BaseDecodeHead: whole channels dropped
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features):
        c1, c2, c3, c4 = features
        size = c1.shape[2:]  # stride 4
        up = lambda p: F.interpolate(p, size=size, mode='bilinear', align_corners=False)
        x = torch.cat([up(self.linear_c4(c4)), up(self.linear_c3(c3)),
                       up(self.linear_c2(c2)), self.linear_c1(c1)], dim=1)  # (B, 4E, H/4, W/4)
        x = self.linear_fuse(x)  # (B, E, H/4, W/4)
        return self.linear_pred(self.dropout(x))  # (B, K, H/4, W/4)


class SegFormer(nn.Module):
    """SegFormer(num_classes, size='b0'): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples
    of 32. `backbone` and `decode_head` are mmseg's EncoderDecoder names: the decode head is what
    mmseg's 'head' lr_mult matches (configure_optimizers)."""

    def __init__(self, num_classes, *, size='b0', drop_path=0.1):
        super().__init__()
        if size not in MIT_SIZES:
            raise ValueError(f'SegFormer size must be one of {sorted(MIT_SIZES)}, got {size!r}')
        dims = MIT_SIZES[size]
        self.size = size
        self.backbone = MixTransformer(embed_dims=dims['embed_dims'], depths=dims['depths'],
                                       drop_path=drop_path)
        self.decode_head = SegFormerHead(dims['embed_dims'], num_classes,
                                         embed_dim=dims['decoder_dim'])

    def forward(self, x, y=None, *, ignore_index=255, progress=0.0):
        # stride 32 at the last stage, and each stage's map a multiple of its sr ratio
        fpn.check_input(x, 'SegFormer', 32)
        logits = self.decode_head(self.backbone(x))  # (B, K, H/4, W/4)
        logits = F.interpolate(logits, size=x.shape[2:], mode='bilinear', align_corners=False)
        if y is None:
            return logits
        return logits, fpn.segmentation_loss(logits, y, ignore_index)

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        """'adamw': mmseg's SegFormer recipe (NVlabs configs: AdamW, lr 6e-5, weight decay 0.01):
        the decode head at 10x the learning rate, no weight decay on 1-d parameters (norms,
        biases). The 10x is stored as each group's 'lr_mult', which a training loop that sets
        the lr itself must apply: group['lr'] = lr * group.get('lr_mult', 1.0).
        'sgd': fpn.configure_optimizers (momentum 0.9, one lr for all)."""
        assert optimizer in {'adamw', 'sgd'}, optimizer
        if optimizer == 'sgd':
            return fpn.configure_optimizers(self, optimizer, learning_rate, weight_decay)
        groups = []
        for module, lr_mult in ((self.backbone, 1.0), (self.decode_head, 10.0)):
            params = list(module.parameters())
            decay = [p for p in params if p.dim() >= 2]
            no_decay = [p for p in params if p.dim() < 2]
            groups += [dict(params=decay, weight_decay=weight_decay, lr_mult=lr_mult),
                       dict(params=no_decay, weight_decay=0.0, lr_mult=lr_mult)]
        for group in groups:
            group['lr'] = learning_rate * group['lr_mult']
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)  # as fpn.py's

    def load_pretrained(self, path):
        """Load a MiT encoder state dict (NVlabs's mit_b*.pth, smp's MiT encoder), strictly, from
        the local file `path`: a raw state dict or one under 'state_dict'; the ImageNet
        classifier 'head.*' is dropped. Any problem: SystemExit, one line naming the file."""
        if path == 'imagenet':  # seg.py's --backbone_ckpt=imagenet means torchvision's ResNets
            raise SystemExit(f'--backbone_ckpt=imagenet: SegFormer fetches no weights; pass a '
                             f'local NVlabs mit_{self.size}.pth as --backbone_ckpt=/path/to/it')
        try:  # strict: torch's error then lists the missing and unexpected keys (or wrong shapes)
            sd = torch.load(path, map_location='cpu', weights_only=True)
            if not isinstance(sd, dict):
                raise TypeError(f'holds a {type(sd).__name__}, not a state dict')
            sd = sd.get('state_dict', sd)
            sd = {k: v for k, v in sd.items() if not k.startswith('head.')}
            self.backbone.load_state_dict(sd, strict=True)
        except Exception as e:  # unreadable file or a mismatch: one message that names the file
            why = ' '.join(f'{type(e).__name__}: {e}'.split())[:300]  # one line, not 300 keys
            raise SystemExit(f'{path}: not a MiT-{self.size.upper()} encoder state dict ({why})')


def segformer_b0(num_classes):
    """SegFormer-B0 (MiT-B0 encoder, decoder width 256), for segmenters.ARCHS."""
    return SegFormer(num_classes, size='b0')


def segformer_b2(num_classes):
    """SegFormer-B2 (MiT-B2 encoder, decoder width 768), for segmenters.ARCHS."""
    return SegFormer(num_classes, size='b2')
