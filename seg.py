"""The downstream segmenter of SatSynth: an FPN-ResNet trained on real + synthetic pairs.

The paper (Sec. 4.5, 5.3) values generated image-mask pairs by training an FPN-ResNet50 on the
real set D or on D + generated D' and comparing mIoU / F1 on the real val split. The model is
importable (metrics.py uses its backbone for features); the training loop runs under __main__.

Reads  data_dir/<dataset>/{train,val}_{images,masks}.npy + meta.json (prepare.py), and
       optionally pair folders written by sample.py / superres.py (--synthetic_dir=a,b).
Writes out_dir/ckpt.pt (the best model by val mIoU), results.json, config.json, log.txt.

    python seg.py configs/seg_toy.py                         # toy data, CPU, minutes
    python seg.py configs/loveda.py --synthetic_dir=out-sample-loveda
    torchrun --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py

References: He et al. 2016 (ResNet), torchvision models/resnet.py; Lin et al. 2017 (FPN);
Kirillov et al. 2019 (Panoptic FPN), detectron2 meta_arch/semantic_seg.py (SemSegFPNHead); SMP's
FPN (c2..c5 / p2..p5 names). App. C baselines: Cutout, CutMix, Copy-Paste (see apply_*).
"""
import json, os, sys, time
from contextlib import nullcontext

import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F
from scipy import ndimage
from torch.distributed import init_process_group, destroy_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

import bits
from configurator import configure
from metrics import all_reduce_cm, confusion_matrix, format_table, summarize

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
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # 1x1 conv + BN on the shortcut where the shape changes

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)

class Bottleneck(nn.Module):  # 1x1 reduce, 3x3, 1x1 expand (x4): ResNet-50/101
    expansion = 4
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
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
    """forward(x) -> [c2, c3, c4, c5], the outputs of layer1..4 at strides 4, 8, 16, 32."""

    def __init__(self, depth=50):
        super().__init__()
        if depth not in RESNET_LAYERS:
            raise ValueError(f'ResNet depth must be one of {sorted(RESNET_LAYERS)}, got {depth}')
        block, layers = RESNET_LAYERS[depth]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)  # the stem: stride 2 ...
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # ... and 2 again: layer1 works at stride 4
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.out_channels = tuple(c * block.expansion for c in (64, 128, 256, 512))
        for m in self.modules():  # torchvision's init (zero_init_residual=False)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')

    def _make_layer(self, block, planes, n_blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            c_out = planes * block.expansion
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, c_out, 1, stride, bias=False),
                                       nn.BatchNorm2d(c_out))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        c2 = self.layer1(x)  # (B, 256, H/4, W/4) for depth 50 (64 for 18/34)
        c3 = self.layer2(c2)  # (B, 512, H/8, W/8)
        c4 = self.layer3(c3)  # (B, 1024, H/16, W/16)
        c5 = self.layer4(c4)  # (B, 2048, H/32, W/32)
        return [c2, c3, c4, c5]

def load_backbone(backbone, path):
    """Load a local torchvision ResNet state dict (its fc.* dropped) into `backbone`, strictly."""
    try:  # strict: torch's error then lists the missing and unexpected keys (or wrong shapes)
        sd = torch.load(path, map_location='cpu', weights_only=True)
        sd = {k: v for k, v in sd.items() if not k.startswith('fc.')}
        own = backbone.state_dict()  # very old torchvision files lack BN's num_batches_tracked
        sd.update({k: v for k, v in own.items() if k.endswith('_tracked') and k not in sd})
        backbone.load_state_dict(sd, strict=True)
    except Exception as e:  # unreadable file or a mismatch: one message that names the file
        raise SystemExit(f'{path}: not a torchvision ResNet of this depth ({e})')

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

class FPN(nn.Module):
    """FPN(num_classes, depth=50): (B, 3, H, W) -> logits (B, K, H, W), H and W multiples of 32."""

    def __init__(self, num_classes, *, depth=50):
        super().__init__()
        self.backbone = ResNet(depth)
        self.head = FPNHead(self.backbone.out_channels, num_classes)

    def forward(self, x):
        B, C, H, W = x.shape
        if C != 3 or H % 32 or W % 32:  # c5 has stride 32: other sizes break the top-down sums
            raise ValueError(f'FPN wants (B, 3, H, W) with H and W multiples of 32, got '
                             f'{tuple(x.shape)}: pad or crop to {-H // 32 * -32}x{-W // 32 * -32}')
        logits = self.head(self.backbone(x))  # (B, K, H/4, W/4)
        return F.interpolate(logits, size=(H, W), mode='bilinear', align_corners=False)

    def configure_optimizers(self, optimizer, learning_rate, weight_decay):
        assert optimizer in {'adamw', 'sgd'}, optimizer
        params = list(self.parameters())  # no decay on norm scales/shifts and biases (1-d)
        groups = [{'params': [p for p in params if p.dim() >= 2], 'weight_decay': weight_decay},
                  {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}]
        if optimizer == 'adamw':
            return torch.optim.AdamW(groups, lr=learning_rate)
        return torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)

# The App. C baselines (Tab. 5) on uint8 batches (B, H, W, 3) / (B, H, W): each hits a sample with
# probability p, keeps every pixel with the label it came with and returns new arrays. Partners
# come from the same batch; boxes are centred anywhere, so they may be clipped at the border.

def apply_cutout(images, masks, rng, p, ignore_index=255):
    """Cutout (DeVries & Taylor 2017): a half-side square -> mean colour, ignore label."""
    images, masks = images.copy(), masks.copy()
    B, H, W = masks.shape
    for i in np.flatnonzero(rng.random(B) < p):
        cy, cx = rng.integers(H), rng.integers(W)
        ys, xs = slice(max(cy - H // 4, 0), cy + H // 4), slice(max(cx - W // 4, 0), cx + W // 4)
        images[i, ys, xs], masks[i, ys, xs] = np.round(np.array(IMAGENET_MEAN) * 255), ignore_index
    return images, masks

def apply_cutmix(images, masks, rng, p, ignore_index=255):  # (ignore_index: same signature)
    """CutMix (Yun et al. 2019): a box of U(0, 1) of the area (lambda ~ Beta(1, 1)) is swapped."""
    out_i, out_m, partner = images.copy(), masks.copy(), rng.permutation(len(masks))
    B, H, W = masks.shape
    for i in np.flatnonzero(rng.random(B) < p):
        r, cy, cx = np.sqrt(rng.random()), rng.integers(H), rng.integers(W)  # side ratio r
        ys = slice(max(cy - int(H * r) // 2, 0), cy + int(H * r) // 2)
        xs = slice(max(cx - int(W * r) // 2, 0), cx + int(W * r) // 2)
        out_i[i, ys, xs], out_m[i, ys, xs] = images[partner[i], ys, xs], masks[partner[i], ys, xs]
    return out_i, out_m

def apply_copy_paste(images, masks, rng, p, ignore_index=255):
    """Copy-Paste (Ghiasi et al. 2021): each connected region of a non-background class (class 0
    is background, as in iSAID) of another sample is pasted with probability 1/2. Masks hold no
    instances, so a region stands in for an object; there is no scale jitter."""
    out_i, out_m, partner = images.copy(), masks.copy(), rng.permutation(len(masks))
    for i in np.flatnonzero(rng.random(len(masks)) < p):
        src, paste = masks[partner[i]], np.zeros(masks.shape[1:], bool)
        for c in set(np.unique(src)) - {0, ignore_index}:
            regions, n = ndimage.label(src == c)  # (H, W) region ids 1..n, 0 elsewhere
            paste |= np.isin(regions, 1 + np.flatnonzero(rng.random(n) < 0.5))
        out_i[i][paste], out_m[i][paste] = images[partner[i]][paste], src[paste]
    return out_i, out_m

# ----------------------------------------------------------------------------------------------
# default config values: the paper's FPN-ResNet50 on the toy data (quick CPU recipe: seg_toy.py)
# I/O
out_dir = ''  # '' = out-seg-<dataset>
eval_interval = 200
log_interval = 10
always_save_checkpoint = False  # False: ckpt.pt is the best model by val mIoU; True: the latest
init_from = 'scratch'  # 'scratch' or 'resume' (out_dir/ckpt.pt)
# data
data_dir = 'data'  # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # name of the prepared dataset (prepare.py: the output name)
synthetic_dir = ''  # pair folders from sample.py / superres.py, ','-separated; '' = real only
synthetic_share = -1.0  # fraction of every batch drawn from synthetic pairs; -1 = 0.5 if any
batch_size = 16  # per process
gradient_accumulation_steps = 1  # global; divided by the number of processes
image_size = 0  # 0 = the patch size; else every split is resized once to it (bits.resize_pair)
crop_size = 0  # training crop, a multiple of 32; 0 = the patch size
scale_range = (0.75, 1.5)  # random rescale of each batch before the crop; (1, 1) = off
cutout = 0.0  # App. C baselines: probability per sample, 0 = off
cutmix = 0.0
copy_paste = 0.0
# model
depth = 50  # ResNet depth: 18, 34, 50 (the paper's), 101
backbone_ckpt = ''  # a local torchvision ResNet state dict for ImageNet features; '' = none
sync_bn = False  # SyncBatchNorm under DDP (CUDA only): BN statistics over the global batch
# optimizer: AdamW by default, because it trains a from-scratch backbone well at one learning
# rate with little tuning across batch sizes; 'sgd' (momentum 0.9, lr ~1e-2) is mmseg's recipe
optimizer = 'adamw'  # 'adamw' or 'sgd'
learning_rate = 1e-3
max_iters = 1000
weight_decay = 1e-4
decay_lr = True  # poly decay (power 0.9) to min_lr after the warmup
warmup_iters = 50
min_lr = 1e-5
# system
backend = 'nccl' if torch.cuda.is_available() else 'gloo'
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast on GPU only
compile = False
seed = 1337
# ----------------------------------------------------------------------------------------------

if __name__ == '__main__':
    config = configure(globals())
    out_dir = out_dir or f'out-seg-{dataset}'
    # --- DDP: identical in train_gen.py, superres.py, seg.py, sample.py (tests/test_style.py) ---
    ddp = int(os.environ.get('RANK', -1)) != -1  # launched by torchrun?
    if ddp:
        init_process_group(backend=backend)
        ddp_rank = int(os.environ['RANK'])
        ddp_local_rank = int(os.environ['LOCAL_RANK'])
        ddp_world_size = int(os.environ['WORLD_SIZE'])
        if device.startswith('cuda'):
            device = f'cuda:{ddp_local_rank}'
            torch.cuda.set_device(device)
    else:
        ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
    master_process = ddp_rank == 0  # the master logs, writes checkpoints and grids
    torch.manual_seed(seed + ddp_rank)  # timesteps, noise and augmentations differ across ranks
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    # --- end DDP ---
    assert gradient_accumulation_steps % ddp_world_size == 0, 'accumulation steps are global'
    gradient_accumulation_steps //= ddp_world_size
    global_batch = batch_size * gradient_accumulation_steps * ddp_world_size
    print(f'global batch {global_batch} = {batch_size} x {gradient_accumulation_steps} accumulation'
          f' x {ddp_world_size} processes')
    if master_process:
        os.makedirs(out_dir, exist_ok=True)
        json.dump(config, open(os.path.join(out_dir, 'config.json'), 'w'), indent=1)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    assert dtype in {'float32', 'bfloat16'}, 'bf16 needs no GradScaler; fp16 is not supported'
    assert init_from in {'scratch', 'resume'}, f"init_from is 'scratch' or 'resume', not {init_from}"
    ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type, dtype=torch.bfloat16)

    # data: the real arrays memory-mapped (prepare.py); synthetic pair folders in memory
    ddir = os.path.join(data_dir, dataset)
    try:
        meta = json.loads(open(os.path.join(ddir, 'meta.json')).read())
        arr = {k: np.load(os.path.join(ddir, k + '.npy'), mmap_mode='r') for k in
               ('train_images', 'train_masks', 'val_images', 'val_masks')}
    except (OSError, ValueError) as e:
        sys.exit(f'{ddir}: not a prepared dataset, run prepare.py first ({e})')
    K, ignore_index, classes = meta['num_classes'], meta['ignore_index'], meta['classes']
    P = arr['train_images'].shape[1]
    for k, a in arr.items():  # uint8 images (N, P, P, 3) and masks (N, P, P)
        if a.dtype != np.uint8 or a.shape[1:] != (P, P, 3)[:2 + ('ima' in k)]:
            sys.exit(f'{ddir}/{k}.npy: want uint8 (N, {P}, {P}[, 3]), got {a.dtype} {a.shape}')
    for k in ('train', 'val') if image_size and image_size != P else ():  # e.g. the CPU demo
        arr[f'{k}_images'], arr[f'{k}_masks'] = bits.resize_pair(arr[k + '_images'],
                                                                  arr[k + '_masks'], image_size)
        P = image_size
    crop = crop_size or P  # (the FPN says so at the first forward if it is no multiple of 32)
    # Synthetic pairs may come at another size (32 px samples of 256 px toy patches, 256 px from
    # superres.py). A generated pair shows the ground of one whole real patch (the generator saw
    # resized real patches), so it is resized to P here with bits.resize_pair (bilinear / nearest
    # up, area / mode down): real and synthetic pixels then cover the same ground. N x P x P x 4 B.
    syn = [(np.zeros((0, P, P, 3), np.uint8), np.zeros((0, P, P), np.uint8))]
    for folder in [s for s in synthetic_dir.split(',') if s]:
        if bits.read_classes(folder)['classes'] != classes:
            sys.exit(f'{folder}: its classes differ from those of {ddir}/meta.json')
        images, masks = bits.resize_pair(*bits.load_pairs(folder)[:2], P)
        if ((masks >= K) & (masks != ignore_index)).any():
            sys.exit(f'{folder}: mask values outside 0..{K - 1} and {ignore_index}')
        syn.append((images, masks))
    syn_images, syn_masks = map(np.concatenate, zip(*syn))  # (N', P, P, 3), (N', P, P)
    n_real, n_syn = len(arr['train_masks']), len(syn_masks)
    share = synthetic_share if synthetic_share >= 0 else (0.5 if n_syn else 0.0)
    if share > 1 or (share > 0 and n_syn < ddp_world_size) or n_real < ddp_world_size:
        sys.exit(f'synthetic_share {share} with {n_syn} synthetic and {n_real} real pairs')
    real_ids = np.arange(ddp_rank, n_real, ddp_world_size)  # each rank draws from its own shard
    syn_ids = np.arange(ddp_rank, n_syn, ddp_world_size)
    seen, n_syn1 = global_batch * max_iters, max(n_syn, 1)  # the paper balances by oversampling
    print(f'data: {n_real} real {P}x{P} train patches, {n_syn} synthetic, {len(arr["val_masks"])}'
          f' val\nepoch composition: a step draws {global_batch * (1 - share):.1f} real + '
          f'{global_batch * share:.1f} synthetic (synthetic_share {share}); {max_iters} iters = '
          f'{seen * (1 - share) / n_real:.2f} real epochs, {seen * share / n_syn1:.2f} synthetic')

    def get_batch():
        """A random micro-batch from this rank's shard: uint8 (B, 3, S, S), long (B, S, S)."""
        n = int(batch_size * share + rng.random())  # stochastic rounding: exact share on average
        idx = np.sort(real_ids[rng.integers(len(real_ids), size=batch_size - n)])  # mmap in order
        sidx = syn_ids[rng.integers(max(len(syn_ids), 1), size=n)]
        images = np.concatenate([arr['train_images'][idx], syn_images[sidx]])
        masks = np.concatenate([arr['train_masks'][idx], syn_masks[sidx]])
        images, masks = bits.augment(images, masks, rng)  # a random flip / rot90 per sample
        for p, f in (cutout, apply_cutout), (cutmix, apply_cutmix), (copy_paste, apply_copy_paste):
            images, masks = f(images, masks, rng, p, ignore_index) if p else (images, masks)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # (B, 3, P, P) in [0, 255]
        y = torch.from_numpy(masks).long()  # (B, P, P)
        S = round(P * rng.uniform(*scale_range))  # one scale per batch, so it stays one tensor
        if S != P:
            x = F.interpolate(x, size=(S, S), mode='bilinear', align_corners=False, antialias=S < P)
            y = F.interpolate(y[:, None].float(), size=(S, S), mode='nearest-exact')[:, 0].long()
        pad = max(crop - S, 0)  # a shrunk batch smaller than the crop is padded with ignore labels
        x, y = F.pad(x, (0, pad, 0, pad)), F.pad(y, (0, pad, 0, pad), value=ignore_index)
        oy, ox = rng.integers(0, S + pad - crop + 1, size=(2, len(y)))  # a random crop per sample
        x = torch.stack([x[i, :, a:a + crop, b:b + crop] for i, (a, b) in enumerate(zip(oy, ox))])
        y = torch.stack([y[i, a:a + crop, b:b + crop] for i, (a, b) in enumerate(zip(oy, ox))])
        x = x.round().clamp(0, 255).byte()  # uint8: 4x less to move; preprocess runs on device
        if device_type == 'cuda':
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    # model: from scratch (optionally with a local ImageNet backbone) or resumed from out_dir
    model_args, iter_num, best_miou = dict(num_classes=K, depth=depth), 0, -1.0
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if init_from == 'resume':
        try:
            checkpoint = torch.load(ckpt_path, map_location=device, weights_only=True)
            model_args = checkpoint['model_args']  # the architecture is the checkpoint's
            model = FPN(**model_args)
            model.load_state_dict(checkpoint['model'])
            iter_num, best_miou = checkpoint['iter_num'], checkpoint['best_miou']
            assert model_args['num_classes'] == K, f'{K} classes in {ddir}/meta.json'
        except Exception as e:  # missing, truncated or foreign: say which file and why
            sys.exit(f'{ckpt_path}: cannot resume ({type(e).__name__}: {e})')
        print(f'resuming from {ckpt_path} at iter {iter_num} (best val mIoU {best_miou:.4f})')
    else:  # (init_from is 'scratch')
        model = FPN(**model_args)
        if backbone_ckpt:
            load_backbone(model.backbone, backbone_ckpt)  # ImageNet features, from a local file
    model.to(device)
    print(f'FPN-ResNet{model_args["depth"]}: {sum(p.numel() for p in model.parameters()):,} params')
    # BatchNorm under DDP: each rank normalises with its micro-batch; DDP broadcasts rank 0's
    # running stats. SyncBN uses global-batch statistics: for small per-GPU batches (CUDA only).
    if ddp and sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same object, same state dict
    raw_model = model  # saved and evaluated: no 'module.' / '_orig_mod.' prefixes
    opt = model.configure_optimizers(optimizer, learning_rate, weight_decay)
    if init_from == 'resume':
        opt.load_state_dict(checkpoint['optimizer'])
    checkpoint = None  # free memory
    model = torch.compile(model) if compile else model
    if ddp:
        model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)
    rng = np.random.default_rng([seed, ddp_rank, iter_num])  # a resumed run draws new batches

    @torch.no_grad()
    def evaluate():
        """Confusion matrix of raw_model over the whole val split: each rank its shard, summed."""
        raw_model.eval()
        if ddp:  # each rank updated its BN running stats in the last forward: use rank 0's
            for b in raw_model.buffers():
                torch.distributed.broadcast(b, 0)
        cm = torch.zeros(K, K, dtype=torch.long, device=device)
        ids = np.arange(ddp_rank, len(arr['val_masks']), ddp_world_size)
        for s in range(0, len(ids), batch_size):
            x = preprocess(torch.from_numpy(arr['val_images'][ids[s:s + batch_size]]).to(device))
            y = torch.from_numpy(arr['val_masks'][ids[s:s + batch_size]]).to(device)
            H, W = y.shape[1:]
            x = F.pad(x, (0, -W % 32, 0, -H % 32))  # zeros = the mean colour after preprocess
            with ctx:
                pred = raw_model(x)[:, :, :H, :W].argmax(1)  # (B, H, W)
            cm += confusion_matrix(pred, y, K, ignore_index)
        raw_model.train()
        return all_reduce_cm(cm).cpu()

    def get_lr(it):
        """Linear warmup, then poly decay (power 0.9, the segmentation standard) to min_lr."""
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        frac = min((it - warmup_iters) / max(1, max_iters - warmup_iters), 1.0)
        return min_lr + (learning_rate - min_lr) * (1 - frac) ** 0.9 if decay_lr else learning_rate

    def log(msg):  # one plain line, printed by the master and appended to out_dir/log.txt
        if master_process:
            print(msg)
            with open(os.path.join(out_dir, 'log.txt'), 'a') as f:
                f.write(msg + '\n')

    X, Y = get_batch()
    t_start = t0 = time.time()
    while iter_num < max_iters:
        lr = get_lr(iter_num)
        for group in opt.param_groups:
            group['lr'] = lr
        for micro_step in range(gradient_accumulation_steps):
            if ddp:  # sync gradients on the last micro-step only (nanoGPT)
                model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
            with ctx:
                logits = model(preprocess(X))  # (B, K, S, S)
                loss = F.cross_entropy(logits.float(), Y, ignore_index=ignore_index)
                loss = loss / gradient_accumulation_steps  # the mean over the global batch
            X, Y = get_batch()  # the next batch, while the GPU still works on this one
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        iter_num += 1
        if iter_num % log_interval == 0:
            lossf = loss.detach() * gradient_accumulation_steps / ddp_world_size
            if ddp:  # log the mean over ranks (gloo has no AVG op: the SUM of loss / world size)
                torch.distributed.all_reduce(lossf)
            dt, t0 = (time.time() - t0) / log_interval, time.time()
            log(f'iter {iter_num}: loss {lossf.item():.4f}, lr {lr:.2e}, time {dt * 1000:.1f}ms, '
                f'{global_batch / dt:.1f} img/s')
        # evaluate every eval_interval iters and at the end; ckpt.pt keeps the best by val mIoU
        if iter_num % eval_interval == 0 or iter_num == max_iters:
            cm = evaluate()
            summary = summarize(cm, classes)  # mIoU, mean F1: nanmeans over classes, BG included
            improved, best_miou = summary['miou'] > best_miou, max(best_miou, summary['miou'])
            log(f"step {iter_num}: val miou {summary['miou']:.4f}, mean_f1 {summary['mean_f1']:.4f}"
                f", pixel_acc {summary['pixel_acc']:.4f}, best miou {best_miou:.4f}")
            if master_process:
                print(format_table(summary))
                results = dict(iter_num=iter_num, **summary, best_miou=best_miou, seed=seed,
                               confusion_matrix=cm.tolist(), classes=classes, n_real=n_real,
                               n_synthetic=n_syn, synthetic_share=share, config=config)
                res_path = os.path.join(out_dir, 'results.json')
                with open(res_path + '.tmp', 'w') as f:  # NaN (absent class) -> null: strict JSON
                    json.dump(json.loads(json.dumps(results), parse_constant=lambda c: None), f)
                os.replace(res_path + '.tmp', res_path)
                if improved or always_save_checkpoint:
                    torch.save({'model': raw_model.state_dict(), 'optimizer': opt.state_dict(),
                                'model_args': model_args, 'iter_num': iter_num,
                                'best_miou': best_miou, 'config': config, 'meta': meta},
                               ckpt_path + '.tmp')
                    os.replace(ckpt_path + '.tmp', ckpt_path)

    log(f'done: best val miou {best_miou:.4f}, wall time {time.time() - t_start:.1f}s')
    if ddp:
        destroy_process_group()
