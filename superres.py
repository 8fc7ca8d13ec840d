"""
Apply the super-resolution model G_SR of SatSynth (paper Sec. 4.4, Eq. 5, App. B), trained by
train_gen.py --cond=lowres --scale=2: it turns a low-res (image, mask) pair into one `scale` times
larger, e.g. 128 -> 256 on iSAID, image and mask denoised jointly so they stay aligned. Only a
checkpoint with cond='lowres' is accepted (one line otherwise).

mode=upsample reads a pair folder of sample.py and writes the same layout at the model's size:
out_dir/images/, masks/, meta.json (naming both checkpoints), config.json and grid.png. Pair i
keeps its index and draws its noise from seed + i; outputs that exist are skipped, so a killed
run resumes. mode=eval downsamples the real val pairs of data_dir/<dataset>/ to what G_SR is fed,
upsamples them and scores the result against the real pair, beside nearest / bilinear / bicubic
upsampling (mask accuracy, mIoU, PSNR, SSIM): out_dir/eval.json and eval_grid.png.

$ python superres.py configs/toy.py --mode=eval --sampler=ddim --steps=50   # vs nearest / bicubic
$ python superres.py --mode=upsample --ckpt=out-sr-toy/ckpt.pt --in_dir=out-sample-toy \
      --out_dir=out-sample-toy-64 --sampler=ddim --steps=50
$ torchrun --standalone --nproc_per_node=8 superres.py --mode=upsample --ckpt=out-sr-isaid/ckpt.pt \
      --in_dir=out-sample-isaid --out_dir=out-sample-isaid-256

References: Toker et al. 2024 (SatSynth) Sec. 4.4-4.5, App. B; Saharia et al. 2021 (SR3, "Image
Super-Resolution via Iterative Refinement"); openai/improved-diffusion scripts/super_res_sample.py.
"""
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch.distributed import init_process_group, destroy_process_group
import torch.distributed as dist

import bits
import metrics
import pairs
from configurator import check_settings, configure
from diffusion import GaussianDiffusion
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
mode = 'upsample'  # 'upsample' a folder of sample.py, or 'eval' G_SR on real val pairs
ckpt = ''  # the G_SR checkpoint of train_gen.py; '' = out-sr-<dataset>/ckpt.pt
out_dir = ''  # upsample: the new pair folder (required); eval: '' = out-sr-<dataset>
in_dir = ''  # upsample: the low-res pair folder written by sample.py
data_dir = 'data'  # eval: prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # eval: the real val pairs; both: names the default ckpt and out_dir
eval_pairs = 0  # eval: score the first N val pairs; 0 = all
sampler = 'ddpm'  # 'ddpm': all T ancestral steps (paper); 'ddim' (Song et al.) or 'dpm++'
                  # (DPM-Solver++(2M), Lu et al.): `steps` steps
steps = 100  # DDIM / DPM-Solver++ steps (network evaluations per pair)
eta = 0.0  # DDIM noise: 0 = deterministic, 1 = DDPM-like
batch_size = 16  # pairs per forward pass, per process
seed = 1337  # pair i uses seed + i
backend = 'nccl' if torch.cuda.is_available() else 'gloo'  # DDP backend
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast dtype on GPU
# -----------------------------------------------------------------------------
config = configure(globals())  # config files and --key=value overrides from the command line
# -----------------------------------------------------------------------------
out_dir = out_dir or (f'out-sr-{dataset}' if mode == 'eval' else '')
ckpt = ckpt or os.path.join(f'out-sr-{dataset}', 'ckpt.pt')
config.update(out_dir=out_dir, ckpt=ckpt)
problems = []  # one per bad setting, all reported (one line each) before anything is written
if mode not in {'upsample', 'eval'}:
    problems.append(f"mode must be 'upsample' or 'eval' (G_SR trains with train_gen.py "
                    f'--cond=lowres --scale=2), got {mode!r}')
if sampler not in {'ddpm', 'ddim', 'dpm++'}:
    problems.append(f'sampler must be ddpm, ddim or dpm++, got {sampler!r}')
if mode == 'upsample' and not in_dir:
    problems.append("in_dir must name a folder of sample.py with mode 'upsample', got ''")
if mode == 'upsample' and not out_dir:
    problems.append("out_dir must name the new pair folder with mode 'upsample', got ''")
if steps < 1:
    problems.append(f'steps must be >= 1, got {steps}')
if batch_size < 1:
    problems.append(f'batch_size must be >= 1, got {batch_size}')
if eta < 0:
    problems.append(f'eta must be >= 0, got {eta}')
if eval_pairs < 0:
    problems.append(f'eval_pairs must be >= 0 (0 = all), got {eval_pairs}')
if dtype not in {'float32', 'bfloat16', 'float16'}:
    problems.append(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
check_settings('superres.py', problems)

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
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
# autocast unless float32 (bf16 is faster on CPUs with AVX-512 BF16 too; docs/RESULTS.md)
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type, dtype=ptdtype)

# G_SR's EMA weights, rebuilt from the checkpoint alone
checkpoint = pairs.load_checkpoint(ckpt, 'train_gen.py --cond=lowres',
                                   ['model_args', 'ema', 'diffusion', 'meta', 'label_encoding',
                                    'iter_num'])
cond = pairs.checkpoint_cond(checkpoint)
if cond != 'lowres':
    sys.exit(f"{ckpt}: a generator with cond={cond!r}, not a G_SR (cond='lowres'); train one with "
             "train_gen.py --cond=lowres --scale=2")
try:
    model = UNet(UNetConfig(**checkpoint['model_args'])).eval().to(device)
    model.load_state_dict(checkpoint['ema'])  # Ho et al. sample from the EMA
    diffusion = GaussianDiffusion(**checkpoint['diffusion'])
except (RuntimeError, TypeError, ValueError) as e:
    sys.exit(f"{ckpt}: not a usable train_gen.py checkpoint ({type(e).__name__}: {e})")
meta, label_encoding = checkpoint['meta'], checkpoint['label_encoding']
scale, iter_num = checkpoint['scale'], checkpoint['iter_num']
weights = pairs.weights_digest(checkpoint['ema'])  # what made the pairs, for a resumed run
checkpoint, image_size = None, model.config.image_size
steps = steps if sampler != 'ddpm' else diffusion.num_timesteps  # network evaluations per pair


def upsample(images, masks, index):
    """Low-res uint8 pairs -> G_SR's (images, masks) at image_size; pair i draws from seed + i.

    The condition is made by the function train_gen.py trains with (pairs.condition: the pair
    resized to image_size, bilinear image, nearest mask, packed into the UNet's extra channels).
    """
    condition = pairs.condition(cond, images, masks, image_size, meta, label_encoding)
    condition = condition.to(device)  # (B, C, H, W)
    gens = [torch.Generator().manual_seed(seed + i) for i in index]  # pair i's own noise
    with torch.no_grad(), ctx:  # the condition joins the noisy input at every step
        x = diffusion.sample(lambda x_t, t, **kw: model(x_t, t, condition, **kw), condition.shape,
                             sampler, steps, eta=eta, generator=gens, device=device)
    return bits.unpack(x, meta, label_encoding)  # valid class codes only


if mode == 'upsample':  # ---------- a sample.py folder at 128 -> the same folder at 256 ----------
    in_meta = pairs.read_classes(in_dir)
    if [in_meta['classes'], in_meta['num_classes']] != [meta['classes'], meta['num_classes']]:
        sys.exit(f"{in_dir}: classes {in_meta['classes']} are not the SR model's {meta['classes']}")
    images, masks, stems = pairs.load_pairs(in_dir)  # uint8 (N, h, w, 3), (N, h, w)
    if images.shape[1:3] != (image_size // scale,) * 2 or not all(s.isdigit() for s in stems):
        sys.exit(f"{in_dir}: expected pairs 000000.png... of {image_size // scale}^2 for this SR "
                 f"model, got {stems[0]}.png... of {images.shape[1]}x{images.shape[2]}")
    index = [int(s) for s in stems]  # each output keeps its input's index, and so its seed
    # meta.json names both checkpoints (low_res: what sample.py wrote). A resumed run must use
    # the same G_SR weights, input pairs and settings, or the folder would silently mix two runs.
    info = {k: meta[k] for k in ['name', 'classes', 'palette', 'num_classes', 'ignore_index']}
    info.update(source='superres.py', sampler=sampler, steps=steps,
                eta=eta if sampler == 'ddim' else None, seed=seed, ckpt=ckpt, iter_num=iter_num,
                weights=weights, image_size=image_size, scale=scale, low_res=in_meta,
                low_res_run={k: in_meta.get(k) for k in ('weights', 'sampler', 'steps', 'seed')})
    pairs.check_pair_folder(out_dir, info, ['weights', 'low_res_run', 'sampler', 'steps', 'eta',
                                            'seed'], config, master_process)
    mine = range(ddp_rank, len(stems), ddp_world_size)  # positions in the sorted stems
    todo = [k for k in mine if not pairs.pair_done(out_dir, index[k])]
    print(f"rank {ddp_rank}: {len(todo)} of {len(mine)} pairs to upsample ({ckpt}, iter "
          f"{iter_num}, {image_size // scale} -> {image_size}, {steps} {sampler} steps)")
    t0 = time.time()
    for b in range(0, len(todo), batch_size):
        ks = todo[b:b + batch_size]
        for k, image, mask in zip(ks, *upsample(images[ks], masks[ks], [index[k] for k in ks])):
            pairs.save_pair(out_dir, index[k], image, mask, meta['palette'])  # atomic
        print(f"rank {ddp_rank}: {b + len(ks)}/{len(todo)} pairs, {time.time() - t0:.1f} s")
    if ddp:
        dist.barrier()  # every rank has written its share
    if master_process:  # a grid of the first 8 pairs, read back from disk
        hi_images, hi_masks = (np.stack(v) for v in zip(*[pairs.read_pair(out_dir, i)
                                                           for i in index[:8]]))
        lr_images, lr_masks = pairs.resize_pair(images[:8], masks[:8], image_size)  # for display
        pairs.save_png(pairs.make_grid(hi_images, hi_masks, meta['palette'], extra=[
            lr_images, pairs.colorize(lr_masks, meta['palette'])]), f'{out_dir}/grid.png')
    if ddp:  # leave together: gloo aborts a rank that tears down while the master still works
        dist.barrier()
        destroy_process_group()
    sys.exit(0)

# --------- mode == 'eval': G_SR against plain upsampling, on real val pairs it never saw ---------
if ddp:
    check_settings('superres.py', [f"mode 'eval' runs in one process (python superres.py ..., not "
                                   f'torchrun), got {ddp_world_size} processes'])
data_path = os.path.join(data_dir, dataset)
data_meta, data = pairs.load_dataset(data_path, splits=('val',))
images, masks = data['val']
if data_meta['classes'] != meta['classes']:
    sys.exit(f"{data_path}: classes {data_meta['classes']} are not the SR model's "
             f"{meta['classes']}")
n = min(len(images), eval_pairs or len(images))
real = pairs.resize_pair(images[:n], masks[:n], image_size)  # the truth at high resolution
low = pairs.resize_pair(images[:n], masks[:n], image_size // scale)  # what G_SR is fed (= G's)
t0 = time.time()
out = [upsample(low[0][b:b + batch_size], low[1][b:b + batch_size],
                range(b, min(n, b + batch_size))) for b in range(0, n, batch_size)]
sr = tuple(np.concatenate(v) for v in zip(*out))
dt = time.time() - t0
# the baselines: the condition itself (bilinear image, nearest mask), and a bicubic image
near = pairs.resize_pair(*low, image_size)
bicubic = F.interpolate(torch.as_tensor(low[0]).permute(0, 3, 1, 2).double(), size=image_size,
                        mode='bicubic', align_corners=False)
bicubic = bicubic.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
K, rows = meta['num_classes'], {}
for name, (image, mask) in [('G_SR', sr), ('bilinear image, nearest mask', near),
                            ('bicubic image', (bicubic, None))]:
    row = dict(psnr=metrics.psnr(image, real[0]), ssim=metrics.ssim(image, real[0]))
    if mask is not None:
        cm = metrics.confusion_matrix(torch.as_tensor(mask), torch.as_tensor(real[1]), K)
        row.update({k: v for k, v in metrics.summarize(cm, meta['classes']).items()
                    if k in ('pixel_acc', 'miou', 'mean_f1')})
    rows[name] = row
# alignment: G_SR's masks must agree best with the real ones unshifted
crop = lambda m, dy, dx: m[:, 1 + dy:image_size - 1 + dy, 1 + dx:image_size - 1 + dx]
agree = {(dy, dx): float((crop(sr[1], 0, 0) == crop(real[1], dy, dx)).mean())
         for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
report = dict(ckpt=ckpt, iter_num=iter_num, pairs=n, sampler=sampler, steps=steps, seconds=dt,
              scores=rows,
              best_shift=max(agree, key=agree.get), invalid_codes=int((sr[1] >= K).sum()))
print(f"{n} val pairs, {image_size // scale} -> {image_size}, {report['steps']} {sampler} "
      f"steps, {dt:.1f} s")
print(f"{'':30s} {'mask acc':>8s} {'mIoU':>6s} {'PSNR':>6s} {'SSIM':>6s}")
for name, r in rows.items():
    seg_cols = f"{r['pixel_acc']:8.4f} {r['miou']:6.4f}" if 'miou' in r else ' ' * 15
    print(f"{name:30s} {seg_cols} {r['psnr']:6.2f} {r['ssim']:6.4f}")
print(f"best mask shift (dy, dx): {report['best_shift']}, invalid class codes: "
      f"{report['invalid_codes']}")
os.makedirs(out_dir, exist_ok=True)
pairs.save_json(report, os.path.join(out_dir, 'eval.json'))
show = lambda *v: [a[:8] for a in v]  # low-res (upsampled for display) | G_SR | real
colour = lambda m: pairs.colorize(m, meta['palette'])
grid = pairs.make_grid(*show(*real), meta['palette'], nrow=4,
                       extra=show(near[0], colour(near[1]), sr[0], colour(sr[1])))
pairs.save_png(grid, os.path.join(out_dir, 'eval_grid.png'))
print(f"wrote {out_dir}/eval.json and eval_grid.png (condition | G_SR | real)")
