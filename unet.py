"""The denoising UNet: a hand-written DDPM UNet of the Ho et al. / improved-diffusion family.

One network serves both diffusion stages. train_gen.py / sample.py use it unconditionally on the
joint image+label tensor (3 RGB + ceil(log2 K) bit channels, all in [-1, 1]); superres.py sets
`cond_channels > 0` and concatenates a bilinearly upsampled low-resolution pair to the input
(improved-diffusion's SuperResModel trick), so super-resolution is not a new architecture; nor
are train_gen.py's cond='image' / 'mask', a mask given its image or an image given its mask.
Reads and writes no files: the stage scripts save `dataclasses.asdict(config)` as `model_args`
and rebuild with `UNet(UNetConfig(**model_args))`.

    from unet import UNet, UNetConfig
    model = UNet(UNetConfig(image_size=64, in_channels=7, out_channels=7))
    eps = model(x_t, t)                     # x_t (B, 7, H, W), t (B,) long in [0, T)

Layout (levels = len(ch_mult), resolution halves at each level but the last):
    conv_in -> [ResBlock (+AttnBlock)] x n_res_blocks (+Downsample) per level  (skips pushed)
    -> middle ResBlock, AttnBlock, ResBlock
    -> [ResBlock on concat(h, skip) (+AttnBlock)] x (n_res_blocks + 1) (+Upsample) per level
    -> GroupNorm, SiLU, zero-initialised conv_out

References:
    Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", Appendix B (the architecture)
    hojonathanho/diffusion diffusion_tf/models/unet.py (TF original, same module names)
    Nichol & Dhariwal 2021, "Improved DDPM"; openai/improved-diffusion improved_diffusion/unet.py
"""
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class UNetConfig:
    image_size: int = 32  # training resolution; attn_res is measured relative to it
    in_channels: int = 6  # channels of x_t (3 RGB + label channels)
    out_channels: int = 6  # channels of the prediction (eps or x0: same as in_channels)
    n_ch: int = 64  # base width; level i has n_ch * ch_mult[i] channels
    ch_mult: tuple = (1, 2, 2)
    n_res_blocks: int = 2  # ResBlocks per level on the way down (one more on the way up)
    attn_res: tuple = (16,)  # feature-map heights (at image_size) that get self-attention
    n_heads: int = 4
    dropout: float = 0.1  # Ho et al. use 0.1 on CIFAR-10, 0.0 on the larger datasets
    cond_channels: int = 0  # > 0: forward(x, t, cond) concatenates cond to x (G_SR, image/mask)
    self_condition: bool = False  # forward(x, t, x_self=...) also concatenates an x0 estimate


def zero_module(module):
    """Zero a module's parameters, so a residual branch starts as the identity (improved-diff.)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def norm(ch):
    # GroupNorm with 32 groups, as every DDPM UNet does; gcd lets tiny test widths (e.g. 16 or 24
    # channels) still work, with fewer groups, instead of failing on "32 does not divide 24".
    return nn.GroupNorm(math.gcd(32, ch), ch)


def timestep_embedding(t, dim, max_period=10000):
    """Sinusoidal embedding of integer timesteps (Transformer positional encoding, Ho et al. B).

    t: (B,) long or float; returns (B, dim) float32 as [cos(t * f_i), sin(t * f_i)] with
    frequencies f_i = max_period ** (-i / half) (improved-diffusion's ordering).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2*half)
    if dim % 2:  # odd dims get one zero column so the shape is exactly (B, dim)
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + time embedding, GroupNorm-SiLU-dropout-conv(zero), + skip."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout):
        super().__init__()
        self.norm1 = norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        # The embedding is added as a per-channel bias between the two convs (Ho et al.).
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        # Zero init: at step 0 every ResBlock is the identity (on its skip path), which makes
        # deep UNets train stably from the first step (improved-diffusion, hojonathanho's
        # init_scale=0.).
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # A 1x1 conv matches channels on the skip path only where the width changes.
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, emb):
        # emb is already SiLU(time MLP output), computed once per forward by UNet, not per block.
        h = self.conv1(F.silu(self.norm1(x)))  # (B, out_ch, H, W)
        # In-place adds are safe here (a conv does not keep its output for backward) and save
        # a full-size temporary each, which matters on memory-bound CPUs.
        h += self.emb_proj(emb)[:, :, None, None]  # broadcast (B, out_ch, 1, 1)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h.add_(self.skip(x))


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, ch, n_heads):
        super().__init__()
        assert ch % n_heads == 0, f'attention width {ch} is not divisible by n_heads={n_heads}'
        self.n_heads = n_heads
        self.norm = norm(ch)
        # Linear layers on (B, H*W, C) tokens (improved-diffusion's 1x1 convs, same maths): one
        # matmul makes q, k and v together, already laid out with head_dim as the last,
        # contiguous axis. That layout matters: on CPU, SDPA's fused (flash) kernel needs it and
        # otherwise falls back to the unfused path at ~2x the cost of this whole block.
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj_out = zero_module(nn.Linear(ch, ch))  # zero init: block starts as identity

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x).reshape(B, C, H * W).transpose(1, 2)  # (B, H*W, C)
        qkv = self.qkv(h).reshape(B, H * W, 3, self.n_heads, C // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, H*W, C/heads)
        if x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            # bf16 on CPU: written out, softmax(q k^T / sqrt(d)) v trains the toy UNet ~1.2x
            # faster than SDPA's CPU flash kernel, whose backward is slow for so few tokens
            h = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1) @ v
        else:  # fused: the (H*W)^2 attention matrix is never materialised
            h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, H*W, C/heads)
        h = self.proj_out(h.transpose(1, 2).reshape(B, H * W, C))  # (B, H*W, C)
        return x + h.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (learned, as in Ho et al.; not average pooling)."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then a 3x3 conv (avoids checkerboards)."""

    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class UNet(nn.Module):
    """eps_theta(x_t, t) (or x0_theta): the layout in the module docstring, from a UNetConfig."""

    def __init__(self, config):
        super().__init__()
        # A copy with list-valued fields (e.g. from JSON) as tuples, so asdict(config) round-trips;
        # the caller's config is left as it was.
        c = dataclasses.replace(config, ch_mult=tuple(config.ch_mult),
                                attn_res=tuple(config.attn_res))
        assert len(c.ch_mult) >= 1 and c.n_res_blocks >= 1, 'need >= 1 level and >= 1 ResBlock'
        if c.image_size % 2 ** (len(c.ch_mult) - 1):
            raise ValueError(f'image_size={c.image_size} must be a multiple of '
                             f'{2 ** (len(c.ch_mult) - 1)} for ch_mult={c.ch_mult}')
        self.config = c
        emb_dim = 4 * c.n_ch  # time-embedding width, 4x the base width as in Ho et al.
        self.time_mlp = nn.Sequential(
            nn.Linear(c.n_ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        # cond and x_self (if any) are concatenated to x before the first conv: a wider input.
        width = c.in_channels + c.cond_channels + (c.out_channels if c.self_condition else 0)
        self.conv_in = nn.Conv2d(width, c.n_ch, 3, padding=1)
        # Down path. skip_chs records the width of every tensor pushed onto the skip stack, so
        # the up path knows what it will concatenate.
        self.down = nn.ModuleList()
        ch, res, skip_chs = c.n_ch, c.image_size, [c.n_ch]
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.n_res_blocks):
                blocks = [ResBlock(ch, mult * c.n_ch, emb_dim, c.dropout)]
                ch = mult * c.n_ch
                if res in c.attn_res:
                    blocks.append(AttnBlock(ch, c.n_heads))
                self.down.append(nn.ModuleList(blocks))
                skip_chs.append(ch)
            if level != len(c.ch_mult) - 1:  # no downsampling after the last level
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_chs.append(ch)
                res //= 2

        # Middle: attention always runs at the lowest resolution (Ho et al., improved-diffusion).
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, c.dropout), AttnBlock(ch, c.n_heads),
                                  ResBlock(ch, ch, emb_dim, c.dropout)])

        # Up path: one more ResBlock per level than on the way down, so that every pushed skip
        # (including the Downsample outputs and conv_in's) is consumed exactly once.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.ch_mult))):
            for i in range(c.n_res_blocks + 1):
                blocks = [ResBlock(ch + skip_chs.pop(), mult * c.n_ch, emb_dim, c.dropout)]
                ch = mult * c.n_ch
                if res in c.attn_res:
                    blocks.append(AttnBlock(ch, c.n_heads))
                if level and i == c.n_res_blocks:  # upsample at the end of each level but the top
                    blocks.append(Upsample(ch))
                    res *= 2
                self.up.append(nn.ModuleList(blocks))
        assert not skip_chs

        # Zero-initialised output conv: a fresh model predicts exactly 0 (the mean of eps), so the
        # first loss is ~1 per element rather than a random large value.
        self.out = nn.Sequential(norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, c.out_channels, 3, padding=1)))

    def get_num_params(self):
        return sum(p.numel() for p in self.parameters())

    def _check_inputs(self, x, t, cond, x_self):
        # Errors at the boundary say what was expected and how to fix it (SMP check_input_shape).
        c = self.config
        if x.dim() != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f'x must be (B, {c.in_channels}, H, W) (config.in_channels), '
                             f'got {tuple(x.shape)}')
        B, _, H, W = x.shape
        f = 2 ** (len(c.ch_mult) - 1)  # every Downsample halves H and W exactly
        if H % f or W % f:
            raise ValueError(f'image size {H}x{W} is not legal for ch_mult={c.ch_mult}: H and W '
                             f'must be multiples of {f} (e.g. {H - H % f or f}x{W - W % f or f})')
        if t.shape != (B,):
            raise ValueError(f't must be a (B,) = ({B},) tensor of timesteps, got {tuple(t.shape)}')
        if c.cond_channels and cond is None:
            raise ValueError(f'this UNet has cond_channels={c.cond_channels}: call model(x, t, '
                             'cond) with cond (B, cond_channels, H, W)')
        if not c.cond_channels and cond is not None:
            raise ValueError('cond given but config.cond_channels == 0 (unconditional UNet)')
        if cond is not None and cond.shape != (B, c.cond_channels, H, W):
            raise ValueError(f'cond must be {(B, c.cond_channels, H, W)} (same B, H, W as x), '
                             f'got {tuple(cond.shape)}')
        if x_self is not None and not c.self_condition:
            raise ValueError('x_self given but config.self_condition is False')
        if x_self is not None and x_self.shape != (B, c.out_channels, H, W):
            raise ValueError(f'x_self must be {(B, c.out_channels, H, W)}, got '
                             f'{tuple(x_self.shape)}')

    def forward(self, x, t, cond=None, x_self=None):
        """x (B, in_channels, H, W), t (B,) long in [0, T), cond (B, cond_channels, H, W) or None,
        x_self (B, out_channels, H, W): the previous x0 estimate (self_condition; None = zeros,
        Chen et al.'s "no estimate yet").

        Returns (B, out_channels, H, W): eps, x0 or v, whichever the diffusion objective trains.
        """
        self._check_inputs(x, t, cond, x_self)
        # Time embedding -> MLP; the SiLU every ResBlock applies before its projection is applied
        # here once (identical maths, fewer ops than doing it inside each of ~17 blocks).
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.config.n_ch).to(x.dtype)))
        if cond is not None:
            x = torch.cat([x, cond], dim=1)  # (B, in_channels + cond_channels, H, W)
        if self.config.self_condition:
            if x_self is None:
                x_self = torch.zeros(x.shape[0], self.config.out_channels, *x.shape[2:],
                                     dtype=x.dtype, device=x.device)
            x = torch.cat([x, x_self.to(x.dtype)], dim=1)  # (B, ... + out_channels, H, W)

        h = self.conv_in(x)
        hs = [h]  # skip stack: every down-path output is concatenated on the way back up
        for blocks in self.down:
            for layer in blocks:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)

        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)

        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)  # (B, ch + skip_ch, H, W)
            for layer in blocks:
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        assert not hs  # every skip consumed: the up path mirrors the down path (hojonathanho)
        return self.out(h)
