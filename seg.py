"""
Train the downstream segmenter of SatSynth: an FPN-ResNet (fpn.py) on the real pairs D, or on D +
generated pairs D' (paper Sec. 4.5, 5.3): the mIoU / F1 it reaches on the real val split is how
the paper values a generator. The App. C baselines (Cutout, CutMix, Copy-Paste) are knobs, and so
is the architecture (`arch`: the paper's Tab. 2 segmenters, segmenters.ARCHS).

Reads data_dir/<dataset>/{train,val}_{images,masks}.npy + meta.json (prepare.py), and optionally
pair folders written by sample.py / superres.py (--synthetic_dir=a,b).
Writes, at every evaluation, out_dir/ckpt.pt (the latest model, with the optimizer and each
rank's batch generator: --init_from=resume continues it as if unbroken), best.pt (the best model by
the selection mIoU: select_data's val split, else the reported val split) and results.json (the
latest model's scores; `selected`: best.pt's); config.json at start; log.txt. Every setting is
checked before anything is written into out_dir.

$ python seg.py configs/seg_toy.py                         # toy data, CPU, minutes
$ python seg.py configs/seg_toy.py --arch=pspnet           # another Tab. 2 segmenter
$ python seg.py configs/loveda.py --synthetic_dir=out-sample-loveda
$ torchrun --standalone --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py

References: Toker et al. 2024 (SatSynth) Sec. 4.5, 5.3, App. C; karpathy/nanoGPT train.py (the
structure of this file); mmsegmentation's FPN recipes (poly learning-rate decay).
"""
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed import init_process_group, destroy_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

import augment
import pairs
import segmenters
from configurator import check_settings, configure
from fpn import preprocess
from metrics import all_reduce_cm, confusion_matrix, format_table, summarize

# -----------------------------------------------------------------------------
# default config values: the paper's FPN-ResNet50 on the toy data (quick CPU recipe: seg_toy.py)
# I/O
out_dir = ''  # '' = out-seg-<dataset>
eval_interval = 200
log_interval = 10
init_from = 'scratch'  # 'scratch' or 'resume' (out_dir/ckpt.pt, the latest: continues exactly)
select_data = ''  # a prepared dataset whose val split picks best.pt (held out from training, never
                  # the reported split); '' = the reported val split itself, which flatters
# data
data_dir = 'data'  # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # name of the prepared dataset (prepare.py: the output name)
synthetic_dir = ''  # pair folders from sample.py / superres.py, ','-separated; '' = real only
synthetic_share = -1.0  # fraction of every batch drawn from synthetic pairs; -1 = 0.5 if any
synthetic_upsample = False  # allow pairs smaller than image_size (upsampled: blurrier than real)
budget = 'real'  # 'real': every run sees max_iters x global batch REAL samples, as R = 0 does
                 # (iterations grow with the synthetic share); 'iters': max_iters iterations
batch_size = 16  # per process
gradient_accumulation_steps = 1  # global; divided by the number of processes
image_size = 0  # the ONE resolution of training and evaluation, real and synthetic pairs alike;
                # 0 = the patch size; else every split is resized once to it (pairs.resize_pair)
crop_size = 0  # training crop, a multiple of 32; 0 = the patch size
scale_range = (0.75, 1.5)  # random rescale of each batch before the crop; (1, 1) = off
cutout = 0.0  # App. C baselines: probability per sample, 0 = off
cutmix = 0.0
copy_paste = 0.0
# model
arch = 'fpn'  # the segmenter (segmenters.ARCHS): fpn (the paper's), pspnet, farseg, pfsegnet, ...
depth = 50  # ResNet depth of the ResNet-based archs: 18, 34, 50 (the paper's), 101
backbone_ckpt = ''  # ImageNet features: a local torchvision ResNet file, or 'imagenet'; '' = none
sync_bn = False  # SyncBatchNorm under DDP (CUDA only): BN statistics over the global batch
# optimizer: AdamW by default, because it trains a from-scratch backbone well at one learning
# rate with little tuning across batch sizes; 'sgd' (momentum 0.9, lr ~1e-2) is mmseg's recipe
optimizer_name = 'adamw'  # 'adamw' or 'sgd'
learning_rate = 1e-3
max_iters = 1000  # with budget 'real': the iterations of R = 0 (real samples / global batch)
weight_decay = 1e-4
decay_lr = True  # poly decay (power 0.9) to min_lr after the warmup
warmup_iters = 50
min_lr = 1e-5
skip_nonfinite = 0  # non-finite batches tolerated (skipped) before the run stops; 0 = stop at
                    # the first
# system
backend = 'nccl' if torch.cuda.is_available() else 'gloo'
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast on GPU only
compile = False
channels_last = False  # NHWC weights (so activations): bf16 FPN-ResNet50 2-5% faster on CPU
seed = 1337
# -----------------------------------------------------------------------------

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
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
# Every setting is checked before anything is written into out_dir (a bad start must leave an
# existing run's config.json and log.txt as they were): one problem per bad setting, then one
# line each. The settings that depend on the data (the crop, the synthetic share) are checked
# once the data is loaded, below.
problems = []
if dtype not in {'float32', 'bfloat16'}:
    problems.append(f'dtype must be float32 or bfloat16 (no float16), got {dtype!r}')
if init_from not in {'scratch', 'resume'}:
    problems.append(f"init_from must be 'scratch' or 'resume', got {init_from!r}")
if optimizer_name not in {'adamw', 'sgd'}:
    problems.append(f"optimizer_name must be 'adamw' or 'sgd', got {optimizer_name!r}")
if budget not in {'real', 'iters'}:
    problems.append(f"budget must be 'real' or 'iters', got {budget!r}")
if arch not in segmenters.ARCHS:
    problems.append(f"arch must be one of {', '.join(segmenters.ARCHS)}, got {arch!r}")
elif segmenters.takes_depth(arch) and depth not in {18, 34, 50, 101}:
    problems.append(f'depth must be 18, 34, 50 or 101, got {depth}')
if batch_size < 1:
    problems.append(f'batch_size must be >= 1, got {batch_size}')
if gradient_accumulation_steps < 1:  # (per process, after the division above)
    problems.append(f'gradient_accumulation_steps must be >= 1 per process, got '
                    f'{gradient_accumulation_steps} ({ddp_world_size} processes)')
if eval_interval < 1:
    problems.append(f'eval_interval must be >= 1, got {eval_interval}')
if log_interval < 1:
    problems.append(f'log_interval must be >= 1, got {log_interval}')
if not 0 < scale_range[0] <= scale_range[1]:
    problems.append(f'scale_range must be (low, high) with 0 < low <= high, got {scale_range}')
if skip_nonfinite < 0:
    problems.append(f'skip_nonfinite must be >= 0, got {skip_nonfinite}')
if ddp and sync_bn and device_type != 'cuda':
    problems.append(f'sync_bn needs CUDA, got device {device!r}')
check_settings('seg.py', problems)
ctx = nullcontext() if dtype == 'float32' else torch.autocast(device_type, dtype=torch.bfloat16)

# data: the real arrays memory-mapped (prepare.py), resized once if image_size asks for it (e.g.
# the CPU demo); synthetic pair folders in memory
dataset_dir = os.path.join(data_dir, dataset)
meta, data = pairs.load_dataset(dataset_dir, size=image_size)
train_images, train_masks = data['train']  # (N, P, P, 3), (N, P, P) uint8
val_images, val_masks = data['val']
K = meta['num_classes']
ignore_index = meta['ignore_index']
classes = meta['classes']
background_class = meta.get('background_class', 0)  # Copy-Paste's; 0 for data prepared before
P = train_images.shape[1]  # the side of every training and evaluation patch
crop = crop_size or P
# Synthetic pairs show the ground of one whole real patch (the generator saw resized real patches),
# so they are resized to P: real and synthetic pixels then cover the same ground. Shrinking larger
# pairs loses nothing the real ones have; enlarging smaller ones (bilinear) makes them blurrier
# than the real pairs they are mixed with, so it needs an explicit --synthetic_upsample=True.
# The lists start with an empty (0, P, P) entry, so that they concatenate without any folder.
synthetic_image_parts = [np.zeros((0, P, P, 3), np.uint8)]
synthetic_mask_parts = [np.zeros((0, P, P), np.uint8)]
for folder in synthetic_dir.split(','):
    if not folder:  # synthetic_dir '' (real data only), or a trailing ','
        continue
    if pairs.read_classes(folder)['classes'] != classes:
        sys.exit(f'{folder}: its classes differ from those of {dataset_dir}/meta.json')
    images, masks, _ = pairs.load_pairs(folder)
    if images.shape[1] < P and not synthetic_upsample:
        sys.exit(f'{folder}: pairs of {images.shape[1]}x{images.shape[2]}, but the segmenter '
                 f'trains at {P}x{P}. Lift them with G_SR (superres.py --mode=upsample), or train '
                 f'at their resolution (--image_size={images.shape[1]}), or '
                 '--synthetic_upsample=True')
    images, masks = pairs.resize_pair(images, masks, P)
    if ((masks >= K) & (masks != ignore_index)).any():
        sys.exit(f'{folder}: mask values outside 0..{K - 1} and {ignore_index}')
    synthetic_image_parts.append(images)
    synthetic_mask_parts.append(masks)
syn_images = np.concatenate(synthetic_image_parts)  # (N', P, P, 3)
syn_masks = np.concatenate(synthetic_mask_parts)  # (N', P, P)
# the split that picks best.pt: select_data's val split, else the reported val split itself
select_images, select_masks = val_images, val_masks
if select_data:
    select_meta, select_splits = pairs.load_dataset(select_data, size=P, splits=('val',))
    select_images, select_masks = select_splits['val']
    if select_meta['classes'] != classes:
        sys.exit(f'{select_data}: its classes differ from those of {dataset_dir}/meta.json')
n_real = len(train_masks)
n_syn = len(syn_masks)
if n_real < ddp_world_size:  # each process draws from its own shard of the real pairs
    sys.exit(f'{dataset_dir}: {n_real} train pairs for {ddp_world_size} processes; want at least '
             'one per process')
# the fraction of every batch drawn from the synthetic pairs; -1: half, if there are any
if synthetic_share >= 0:
    share = synthetic_share
elif n_syn:
    share = 0.5
else:
    share = 0.0
# the settings that depend on the data, checked as the others above
problems = []
if crop < 32 or crop % 32:
    problems.append(f'crop_size must be a multiple of 32 (0 = the patch size, {P}), got '
                    f'{crop_size} (a crop of {crop})')
elif batch_size * (crop // 32) ** 2 < 2:  # c5 is (B, C, crop/32, crop/32)
    problems.append(f'batch_size x (crop / 32)^2 must be >= 2, so that c5 holds 2 values per '
                    f'channel (for BatchNorm), got batch_size {batch_size} at a crop of {crop}')
if share > 1:
    problems.append(f'synthetic_share must be <= 1, got {share}')
if share > 0 and n_syn < ddp_world_size:  # each process draws from its own shard of them too
    problems.append(f'synthetic_share must be 0 with {n_syn} synthetic pairs for {ddp_world_size} '
                    f'process(es) (synthetic_dir {synthetic_dir!r}), got {share}')
if budget == 'real' and share == 1:
    problems.append("synthetic_share must be < 1 with budget 'real' (every batch needs real "
                    'pairs), got 1.0')
check_settings('seg.py', problems)
# The real-data budget: with half of every batch synthetic, a run of max_iters iterations sees half
# the real samples of R = 0, confounding "adding D'" with "removing D". By default the run is
# lengthened instead, so every arm sees the same real samples (and the lr schedule stretches).
if budget == 'real':
    iters = round(max_iters / (1 - share))
else:
    iters = max_iters
real_ids = np.arange(ddp_rank, n_real, ddp_world_size)  # each rank draws from its own shard
syn_ids = np.arange(ddp_rank, n_syn, ddp_world_size)
# How often the run sees each pair: the paper balances real and synthetic pairs by oversampling
# the smaller set, so the two epoch counts differ
samples_seen = global_batch * iters  # over all processes
real_epochs = samples_seen * (1 - share) / n_real
synthetic_epochs = samples_seen * share / max(n_syn, 1)  # 0 without synthetic pairs
print(f'data: {n_real} real {P}x{P} train patches, {n_syn} synthetic, {len(val_masks)} val')
print(f'epoch composition: a step draws {global_batch * (1 - share):.1f} real + '
      f'{global_batch * share:.1f} synthetic (synthetic_share {share}); {iters} iters (budget '
      f'{budget!r}) = {real_epochs:.2f} real epochs, {synthetic_epochs:.2f} synthetic')


def get_batch():
    """A random micro-batch from this rank's shard: uint8 (B, 3, S, S), long (B, S, S), and how
    many of its samples are (real, synthetic)."""
    n_syn_batch = int(batch_size * share + rng.random())  # stochastic rounding: exact on average
    n_real_batch = batch_size - n_syn_batch
    real_idx = np.sort(real_ids[rng.integers(len(real_ids), size=n_real_batch)])  # mmap in order
    # (without synthetic pairs n_syn_batch is 0, and the bound of 1 only keeps integers() legal)
    syn_idx = syn_ids[rng.integers(max(len(syn_ids), 1), size=n_syn_batch)]
    images = np.concatenate([train_images[real_idx], syn_images[syn_idx]])
    masks = np.concatenate([train_masks[real_idx], syn_masks[syn_idx]])
    images, masks = augment.augment(rng, images, masks)  # a random flip / rot90 per sample
    if cutout:  # the App. C baselines
        images, masks = augment.apply_cutout(images, masks, rng, cutout, ignore_index)
    if cutmix:
        images, masks = augment.apply_cutmix(images, masks, rng, cutmix, ignore_index)
    if copy_paste:
        images, masks = augment.apply_copy_paste(images, masks, rng, copy_paste, ignore_index,
                                               background_class)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()  # (B, 3, P, P) in [0, 255]
    y = torch.from_numpy(masks).long()  # (B, P, P)
    S = round(P * rng.uniform(*scale_range))  # one scale per batch, so it stays one tensor
    if S != P:
        x = F.interpolate(x, size=(S, S), mode='bilinear', align_corners=False, antialias=S < P)
        y = F.interpolate(y[:, None].float(), size=(S, S), mode='nearest-exact')[:, 0].long()
    pad = max(crop - S, 0)  # a shrunk batch smaller than the crop is padded with ignore labels
    x = F.pad(x, (0, pad, 0, pad))  # (B, 3, S + pad, S + pad)
    y = F.pad(y, (0, pad, 0, pad), value=ignore_index)
    tops, lefts = rng.integers(0, S + pad - crop + 1, size=(2, len(y)))  # a random crop per sample
    x_crops, y_crops = [], []
    for i in range(len(y)):
        top, left = tops[i], lefts[i]
        x_crops.append(x[i, :, top:top + crop, left:left + crop])
        y_crops.append(y[i, top:top + crop, left:left + crop])
    x = torch.stack(x_crops)  # (B, 3, crop, crop)
    y = torch.stack(y_crops)  # (B, crop, crop)
    x = x.round().clamp(0, 255).byte()  # uint8: 4x less to move; preprocess runs on device
    if device_type == 'cuda':
        x = x.pin_memory()
        y = y.pin_memory()
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    return x, y, (n_real_batch, n_syn_batch)


# model: from scratch (optionally with a local ImageNet backbone) or resumed from out_dir
model_args = segmenters.model_args(arch, num_classes=K, depth=depth)
iter_num = 0
best_miou = -1.0  # the best selection mIoU so far
history = []  # [iter, val mIoU, selection mIoU] per evaluation
selected = None  # the val scores of best.pt (results.json's `selected`)
seen_all = [0, 0]  # real and synthetic samples trained on so far, summed over ranks
rng_states = None  # each rank's batch generator, from ckpt.pt
skipped = 0  # non-finite steps skipped so far
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
best_path = os.path.join(out_dir, 'best.pt')
if init_from == 'resume':  # any unreadable file: one line naming it (pairs.load_checkpoint)
    required = ['model', 'optimizer', 'model_args', 'iter_num', 'best_miou']
    checkpoint = pairs.load_checkpoint(ckpt_path, 'seg.py', required, device)
    model_args = checkpoint['model_args']  # the architecture is the checkpoint's
    if model_args.get('num_classes') != K:
        sys.exit(f'{ckpt_path}: {model_args.get("num_classes")} classes, {dataset_dir}: {K}')
    if model_args.get('arch', 'fpn') != arch:  # (checkpoints from before `arch` are FPNs)
        sys.exit(f"{ckpt_path}: a {model_args.get('arch', 'fpn')} checkpoint, this run has "
                 f"arch={arch!r}")
    try:
        model = segmenters.build(model_args)
        model.load_state_dict(checkpoint['model'])
    except (TypeError, ValueError, RuntimeError) as e:  # another stage's checkpoint
        # (the first 200 characters: a key mismatch lists every key)
        sys.exit(f'{ckpt_path}: not a seg.py model ({type(e).__name__}: {str(e)[:200]})')
    iter_num = checkpoint['iter_num']
    best_miou = checkpoint['best_miou']
    history = checkpoint.get('history', [])
    selected = checkpoint.get('selected')
    seen_all = checkpoint.get('seen', [0, 0])
    rng_states = checkpoint.get('rng')
    skipped = checkpoint.get('skipped', 0)
    print(f'resuming from {ckpt_path} at iter {iter_num} (best val mIoU {best_miou:.4f})')
else:  # (init_from is 'scratch')
    model = segmenters.build(model_args)
    if backbone_ckpt:  # 'imagenet' downloads once into torch.hub's cache: rank 0 first
        if ddp and not master_process:
            torch.distributed.barrier()
        model.load_pretrained(backbone_ckpt)
        if ddp and master_process:
            torch.distributed.barrier()
memory_format = torch.channels_last if channels_last else torch.preserve_format
model.to(device, memory_format=memory_format)
print(f'{segmenters.describe(model_args)}: {sum(p.numel() for p in model.parameters()):,} params')
# BatchNorm under DDP: each rank normalises with its micro-batch; DDP broadcasts rank 0's
# running stats. SyncBN uses global-batch statistics: for small per-GPU batches (CUDA only).
if ddp and sync_bn:
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same object, same state dict
raw_model = model  # saved and evaluated: no 'module.' / '_orig_mod.' prefixes
optimizer = model.configure_optimizers(optimizer_name, learning_rate, weight_decay)
if init_from == 'resume':
    optimizer.load_state_dict(checkpoint['optimizer'])
checkpoint = None  # free memory
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)
# The batches: one generator per rank. A resumed run restores the state ckpt.pt saved, from just
# before the run drew the next batch, and so draws exactly the batches of an unbroken run
rng = np.random.default_rng([seed, ddp_rank, iter_num])
if init_from == 'resume':
    if rng_states and len(rng_states) == ddp_world_size:
        rng.bit_generator.state = rng_states[ddp_rank]
    else:  # another number of processes (or an older ckpt.pt): new batches
        n_saved = len(rng_states) if rng_states else 0
        print(f'{ckpt_path}: batch generators of {n_saved} processes, not '
              f'{ddp_world_size}: the batches will differ from an unbroken run')


@torch.no_grad()
def evaluate(images, masks):
    """Confusion matrix of raw_model over a whole split: each rank its shard, summed."""
    raw_model.eval()
    if ddp:  # each rank updated its BN running stats in the last forward: use rank 0's
        for b in raw_model.buffers():
            torch.distributed.broadcast(b, 0)
    cm = torch.zeros(K, K, dtype=torch.long, device=device)
    ids = np.arange(ddp_rank, len(masks), ddp_world_size)
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start:start + batch_size]
        x = preprocess(torch.from_numpy(images[batch_ids]).to(device))  # (B, 3, H, W)
        y = torch.from_numpy(masks[batch_ids]).to(device)  # (B, H, W)
        H, W = y.shape[1:]
        # pad right and bottom up to the next multiple of 32 (the FPN's largest stride):
        # -W % 32 is the number of columns that takes; zeros = the mean colour after preprocess
        x = F.pad(x, (0, -W % 32, 0, -H % 32))
        with ctx:
            pred = raw_model(x)[:, :, :H, :W].argmax(1)  # (B, H, W): the padding cut off again
        cm += confusion_matrix(pred, y, K, ignore_index)
    raw_model.train()
    return all_reduce_cm(cm).cpu()


def get_lr(it):
    """Linear warmup, then poly decay (power 0.9, the segmentation standard) to min_lr."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if not decay_lr:
        return learning_rate
    frac = min((it - warmup_iters) / max(1, iters - warmup_iters), 1.0)
    return min_lr + (learning_rate - min_lr) * (1 - frac) ** 0.9


def log(msg):  # one plain line, printed by the master and appended to out_dir/log.txt
    if master_process:
        print(msg)
        with open(os.path.join(out_dir, 'log.txt'), 'a') as f:
            f.write(msg + '\n')

# nothing is written before the data, the checkpoint and the settings have been checked
if master_process:
    os.makedirs(out_dir, exist_ok=True)
    pairs.save_json(config, os.path.join(out_dir, 'config.json'))

# training loop
# The samples this rank trained on, (real, synthetic): the master starts from the totals of the
# checkpoint and the other ranks from 0, so their sum over ranks is the run's total
seen_here = np.array(seen_all if master_process else [0, 0])
rng_state = rng.bit_generator.state  # saved in ckpt.pt: the state before the next batch
X, Y, n_seen = get_batch()
t_start = time.time()
t0 = t_start
loss_sum = torch.zeros((), device=device)  # the applied steps' losses since the last log line
n_logged = 0  # ... and how many steps they are
while iter_num < iters:
    lr = get_lr(iter_num)
    for group in optimizer.param_groups:  # (lr_mult: e.g. SegFormer's decoder at 10x)
        group['lr'] = lr * group.get('lr_mult', 1.0)
    if skip_nonfinite:  # a skipped step leaves no trace: its forward's BatchNorm stats are undone
        buffers = [b.clone() for b in raw_model.buffers()]
    iter_loss = torch.zeros((), device=device)  # this rank's mean loss over its micro-batches
    for micro_step in range(gradient_accumulation_steps):
        if ddp:  # sync gradients on the last micro-step only (nanoGPT)
            model.require_backward_grad_sync = micro_step == gradient_accumulation_steps - 1
        with ctx:  # the architecture's own training loss (fpn.py: the segmenter interface)
            logits, loss = model(preprocess(X), Y, ignore_index=ignore_index,
                                 progress=iter_num / iters)  # logits (B, K, S, S)
            loss = loss / gradient_accumulation_steps  # the mean over the global batch
        iter_loss += loss.detach()
        seen_here += n_seen
        rng_state = rng.bit_generator.state
        X, Y, n_seen = get_batch()  # the next batch, while the GPU still works on this one
        loss.backward()
    # A NaN/inf loss or gradient is never applied. Gradients are all-reduced, so every rank sees
    # the same norm and takes the same branch.
    norm = torch.nn.utils.get_total_norm([p.grad for p in raw_model.parameters()
                                          if p.grad is not None])
    if norm.isfinite():
        optimizer.step()
        loss_sum += iter_loss  # the logged loss: the mean over the interval's applied steps
        n_logged += 1
    else:
        skipped += 1
        if skip_nonfinite:  # undo the BatchNorm statistics of the skipped forward
            for b, before in zip(raw_model.buffers(), buffers):
                b.copy_(before)
        log(f'iter {iter_num + 1}: non-finite loss or gradient (norm {norm.item()}): step skipped,'
            f' {skipped} of {skip_nonfinite} tolerated')
        if skipped > skip_nonfinite:
            if master_process:
                sys.exit(f'iter {iter_num + 1}: stopped (--skip_nonfinite={skip_nonfinite}); '
                         f'{ckpt_path} keeps the last finite model; try a lower --learning_rate '
                         f'(now {learning_rate:g})')
            sys.exit(1)  # the other ranks stop too, silently: the master said why
    optimizer.zero_grad(set_to_none=True)
    iter_num += 1
    if iter_num % log_interval == 0:
        # the interval's mean loss, averaged over ranks (as train_gen.py logs it); every rank
        # applied the same steps, so n_logged agrees across ranks
        interval_loss = loss_sum / max(1, n_logged)
        if ddp:
            torch.distributed.all_reduce(interval_loss, op=torch.distributed.ReduceOp.AVG)
        if n_logged:
            shown = f'{interval_loss.item():.4f}'
        else:
            shown = 'n/a (all skipped)'
        t1 = time.time()
        dt = (t1 - t0) / log_interval  # seconds per iteration over the interval
        t0 = t1
        log(f'iter {iter_num}: loss {shown}, lr {lr:.2e}, time {dt * 1000:.1f}ms, '
            f'{global_batch / dt:.1f} img/s')
        loss_sum = torch.zeros((), device=device)
        n_logged = 0
    # evaluate every eval_interval iters and at the end: ckpt.pt is the latest model, best.pt the
    # best by the mIoU on the selection split (select_data's val, else the reported val split)
    if iter_num % eval_interval == 0 or iter_num == iters:
        cm = evaluate(val_images, val_masks)
        seen_total = torch.tensor(seen_here, device=device)
        if ddp:
            torch.distributed.all_reduce(seen_total, op=torch.distributed.ReduceOp.SUM)
        seen_all = seen_total.tolist()
        summary = summarize(cm, classes)  # mIoU, mean F1: nanmeans over classes, BG included
        if select_data:
            select_miou = summarize(evaluate(select_images, select_masks), classes)['miou']
        else:
            select_miou = summary['miou']
        improved = select_miou > best_miou
        best_miou = max(best_miou, select_miou)
        history.append([iter_num, summary['miou'], select_miou])
        if improved:  # the val scores of the checkpoint the selection split picks
            selected = dict(iter_num=iter_num, miou=summary['miou'], mean_f1=summary['mean_f1'],
                            iou=summary['iou'], checkpoint='best.pt')
        log(f"step {iter_num}: val miou {summary['miou']:.4f}, mean_f1 {summary['mean_f1']:.4f}"
            f", pixel_acc {summary['pixel_acc']:.4f}, selection miou {select_miou:.4f} (best "
            f"{best_miou:.4f})")
        rng_states = [rng_state] * ddp_world_size  # each rank's generator, before its next batch
        if ddp:
            torch.distributed.all_gather_object(rng_states, rng_state)
        if master_process:
            print(format_table(summary))
            checkpoint = {'model': raw_model.state_dict(), 'optimizer': optimizer.state_dict(),
                          'model_args': model_args, 'iter_num': iter_num, 'best_miou': best_miou,
                          'seen': seen_all, 'history': history, 'selected': selected,
                          'rng': rng_states, 'skipped': skipped, 'config': config, 'meta': meta}
            # Atomic, and refused (exit) if a weight is non-finite: the last good files stay.
            # best.pt (for use, not for resume: no optimizer, no generators) goes first, so a
            # kill in between leaves the older ckpt.pt, whose resume rewrites this best.pt
            if improved:
                best_checkpoint = {k: v for k, v in checkpoint.items()
                                   if k not in ('optimizer', 'rng')}
                pairs.save_checkpoint(best_checkpoint, best_path)
            pairs.save_checkpoint(checkpoint, ckpt_path)
            checkpoint = None
            results = dict(iter_num=iter_num, checkpoint='ckpt.pt', **summary, best_miou=best_miou,
                           skipped=skipped, seed=seed, confusion_matrix=cm.tolist(),
                           classes=classes, n_real=n_real, n_synthetic=n_syn,
                           synthetic_share=share, budget=budget, iters=iters, resolution=P,
                           real_seen=int(seen_all[0]), synthetic_seen=int(seen_all[1]),
                           select_data=select_data, selected=selected, history=history,
                           config=config)
            pairs.save_json(results, os.path.join(out_dir, 'results.json'))  # NaN -> null

log(f'done: best selection miou {best_miou:.4f}, wall time {time.time() - t_start:.1f}s')
if ddp:
    torch.distributed.barrier()  # rank 0 may still be writing; no rank leaves before it is done
    destroy_process_group()
