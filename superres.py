"""
Super-resolution G_SR of SatSynth (paper Sec. 4.4, Eq. 5, App. B): a DDPM that turns a low-res
(image, mask) pair into one `scale` times larger, e.g. 128 -> 256 on iSAID. It is G's UNet with
the low-res pair, upsampled to the output size, concatenated to the noisy input at every step
(UNetConfig.cond_channels, as SR3 and improved-diffusion's SuperResModel); image and mask bits
are denoised jointly, so they stay aligned. mode=train reads data_dir/<dataset>/ (prepare.py),
writes out_dir/{config.json, log.txt, ckpt.pt, grid_<iter>.png}. mode=upsample turns a pair
folder of sample.py into the same layout at image_size (+ meta.json naming both checkpoints,
config.json, grid.png), skipping pairs whose outputs exist, so a killed run resumes. mode=eval
upsamples the real val pairs from image_size // scale and scores G_SR against the real pair,
beside nearest/bilinear/bicubic (mask accuracy, mIoU, PSNR, SSIM): out_dir/eval.json + grid.

$ python superres.py configs/toy.py configs/sr_toy.py                 # 30 CPU minutes
$ python superres.py configs/toy.py configs/sr_toy.py --mode=eval     # vs nearest / bicubic
$ torchrun --standalone --nproc_per_node=8 superres.py configs/isaid.py configs/isaid_sr.py
$ torchrun --standalone --nproc_per_node=8 superres.py --mode=upsample --ckpt=out-sr-isaid/ckpt.pt \
      --in_dir=out-sample-isaid --out_dir=out-sample-isaid-256

References: Toker et al. 2024 (SatSynth) Sec. 4.4-4.5, App. B; Saharia et al. 2021 (SR3, "Image
Super-Resolution via Iterative Refinement"); openai/improved-diffusion scripts/super_res_train.py,
super_res_sample.py, improved_diffusion/unet.py (SuperResModel); karpathy/nanoGPT train.py.
"""
import copy, json, os, sys, time
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.distributed import init_process_group, destroy_process_group
import torch.distributed as dist

import bits
import metrics
from configurator import configure
from diffusion import GaussianDiffusion, ema_update, get_lr, log, save_checkpoint, val_losses
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
# default config values: the paper's 128 -> 256 model (configs/isaid_sr.py spells it out)
mode = 'train'  # 'train' G_SR, 'upsample' a folder of sample.py, 'eval' G_SR on real val pairs
out_dir = ''  # train, eval: '' = out-sr-<dataset>; upsample: the new pair folder (required)
eval_interval = 1000  # every N iters: val loss, sample grid, checkpoint
log_interval = 50
eval_iters = 10  # val batches per evaluation
always_save_checkpoint = True  # if False, save only when the EMA val loss improves
init_from = 'scratch'  # 'scratch' or 'resume' (from out_dir/ckpt.pt)
max_minutes = 0.0  # wall-clock budget of this run: stop and save cleanly when exceeded; 0 = off
data_dir = 'data'  # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # name of the prepared dataset (prepare.py: the output name)
batch_size = 16  # per process (also the upsample batch)
gradient_accumulation_steps = 4  # total over all processes (divided by the world size below)
image_size = 256  # the high-resolution side; the condition is image_size // scale
scale = 2  # upsampling factor (Eq. 5: H x W -> 2H x 2W)
label_encoding = 'bits'  # 'bits' (paper) or 'onehot' (ablation); SR needs the mask channels
# model (Ho et al.'s 256x256 UNet; attn_res = feature-map sizes with self-attention)
n_ch = 128
ch_mult = (1, 1, 2, 2, 4, 4)
n_res_blocks = 2
attn_res = (16,)
dropout = 0.0
timesteps = 1000  # diffusion: the paper's T = 1000, linear betas 1e-4..2e-2, eps prediction
beta_schedule = 'linear'  # 'linear' or 'cosine'
objective = 'eps'  # 'eps' (paper) or 'x0'
grid_steps = 50  # DDIM steps for the eval grid
learning_rate = 2e-5  # AdamW, Ho et al.'s 256x256 recipe
max_iters = 500000
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0  # clip gradients at this value, or disable if == 0.0
decay_lr = False  # False = constant lr after warmup, as Ho et al.
warmup_iters = 5000
lr_decay_iters = 500000
min_lr = 2e-6
ema_decay = 0.9999
ckpt = ''  # upsample, eval: the SR checkpoint; '' = out-sr-<dataset>/ckpt.pt
eval_pairs = 0  # eval: score the first N val pairs; 0 = all
in_dir = ''  # low-res pair folder written by sample.py
sampler = 'ddpm'  # 'ddpm': all T ancestral steps (paper); 'ddim': `steps` steps (Song et al.)
steps = 100  # DDIM steps (network evaluations per pair)
eta = 0.0  # DDIM noise: 0 = deterministic, 1 = DDPM-like
backend = 'nccl' if torch.cuda.is_available() else 'gloo'  # DDP backend
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast dtype on GPU
compile = False  # torch.compile the model (PyTorch 2.0): faster on GPU, slow to start
seed = 1337  # upsample: pair i uses seed + i
# -----------------------------------------------------------------------------
config = configure(globals())  # config files and --key=value overrides from the command line
# -----------------------------------------------------------------------------
assert mode in {'train', 'upsample', 'eval'} and sampler in {'ddpm', 'ddim'}, (mode, sampler)
assert init_from in {'scratch', 'resume'} and label_encoding in {'bits', 'onehot'}
out_dir = out_dir or (f'out-sr-{dataset}' if mode != 'upsample' else '')
ckpt = ckpt or os.path.join(f'out-sr-{dataset}', 'ckpt.pt')
config.update(out_dir=out_dir, ckpt=ckpt)
if not out_dir or (mode == 'upsample' and not in_dir):
    sys.exit('--mode=upsample needs --in_dir (a folder of sample.py) and --out_dir')

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
ctx = nullcontext() if device_type == 'cpu' else torch.amp.autocast(device_type, dtype=ptdtype)


def condition(images, masks):
    """Low-res uint8 pairs (B, h, w, 3), (B, h, w) -> the UNet's cond (B, C, H, W) in [-1, 1].

    Images go up bilinearly; masks go up by nearest neighbour on the class codes, which are
    written as bits only afterwards. Bilinear bit planes would blend codes 01 and 10 into
    (0.5, 0.5) along every boundary, a point as close to 00 and 11 (other classes) as to either;
    nearest keeps the condition on valid codes, the kind of mask G's samples decode to. Both
    sample at pixel centres (align_corners=False, 'nearest-exact' in bits.resize_pair), so with
    an integer scale low-res pixel (i, j) lands on the block it was averaged from: no shift.
    """
    return bits.pack(*bits.resize_pair(images, masks, image_size), meta, label_encoding)


if mode != 'train':  # upsample and eval: G_SR's EMA weights, rebuilt from the checkpoint alone
    try:
        checkpoint = torch.load(ckpt, map_location='cpu', weights_only=True)
        model = UNet(UNetConfig(**checkpoint['model_args'])).eval().to(device)
        model.load_state_dict(checkpoint['ema'])  # Ho et al. sample from the EMA
        diffusion = GaussianDiffusion(**checkpoint['diffusion'])
        meta, label_encoding = checkpoint['meta'], checkpoint['label_encoding']
        scale, iter_num = checkpoint['scale'], checkpoint['iter_num']
    except (OSError, RuntimeError, KeyError, TypeError) as e:
        sys.exit(f"{ckpt}: not a usable superres.py checkpoint ({type(e).__name__}: {e})")
    checkpoint, image_size = None, model.config.image_size


def upsample(images, masks, index):
    """Low-res uint8 pairs -> G_SR's (images, masks) at image_size; pair i draws from seed + i."""
    cond = condition(images, masks).to(device)  # (B, C, H, W)
    gens = [torch.Generator().manual_seed(seed + i) for i in index]  # pair i's own noise
    with torch.no_grad(), ctx:  # the condition joins the noisy input at every step
        x = diffusion.sample(lambda x_t, t: model(x_t, t, cond), cond.shape, sampler, steps,
                             eta=eta, generator=gens, device=device)
    return bits.unpack(x, meta, label_encoding)  # valid class codes only


if mode == 'upsample':  # --------- a sample.py folder at 128 -> the same folder at 256 ---------
    in_meta = bits.read_classes(in_dir)
    if [in_meta['classes'], in_meta['num_classes']] != [meta['classes'], meta['num_classes']]:
        sys.exit(f"{in_dir}: classes {in_meta['classes']} are not the SR model's {meta['classes']}")
    images, masks, stems = bits.load_pairs(in_dir)  # uint8 (N, h, w, 3), (N, h, w)
    if images.shape[1:3] != (image_size // scale,) * 2 or not all(s.isdigit() for s in stems):
        sys.exit(f"{in_dir}: expected pairs 000000.png... of {image_size // scale}^2 for this SR "
                 f"model, got {stems[0]}.png... of {images.shape[1]}x{images.shape[2]}")
    index = [int(s) for s in stems]  # each output keeps its input's index, and so its seed
    # meta.json names both checkpoints (low_res: what sample.py wrote). A resumed run must use
    # the same settings, or the folder would silently mix two samplers.
    info = {k: meta[k] for k in ['name', 'classes', 'palette', 'num_classes', 'ignore_index']}
    info.update(source='superres.py', sampler=sampler, steps=steps if sampler == 'ddim' else
                diffusion.num_timesteps, eta=eta if sampler == 'ddim' else None, seed=seed,
                ckpt=ckpt, iter_num=iter_num, image_size=image_size, scale=scale, low_res=in_meta)
    meta_path = os.path.join(out_dir, 'meta.json')
    old = json.load(open(meta_path)) if os.path.exists(meta_path) else info
    if any(old.get(k) != info[k] for k in ['sampler', 'steps', 'eta', 'seed', 'iter_num']):
        sys.exit(f"{meta_path}: this folder was upsampled with other settings; use another "
                 "--out_dir or the same settings")
    for name, d in [('meta.json', info), ('config.json', config)] if master_process else []:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, name + '.tmp'), 'w') as f:
            json.dump(d, f, indent=1)
        os.replace(os.path.join(out_dir, name + '.tmp'), os.path.join(out_dir, name))
    path = lambda d, i: os.path.join(out_dir, d, f'{i:06d}.png')
    done = lambda i: os.path.exists(path('images', i)) and os.path.exists(path('masks', i))
    mine = range(ddp_rank, len(stems), ddp_world_size)  # positions in the sorted stems
    todo = [k for k in mine if not done(index[k])]
    print(f"rank {ddp_rank}: {len(todo)} of {len(mine)} pairs to upsample ({ckpt}, iter "
          f"{iter_num}, {image_size // scale} -> {image_size}, {info['steps']} {sampler} steps)")
    t0 = time.time()
    for b in range(0, len(todo), batch_size):
        ks = todo[b:b + batch_size]
        for k, image, mask in zip(ks, *upsample(images[ks], masks[ks], [index[k] for k in ks])):
            bits.save_pair(out_dir, index[k], image, mask, meta['palette'])  # atomic
        print(f"rank {ddp_rank}: {b + len(ks)}/{len(todo)} pairs, {time.time() - t0:.1f} s")
    if ddp:
        dist.barrier()  # every rank has written its share
    if master_process:  # a grid of the first 8 pairs, read back from disk
        read = lambda d: np.stack([np.array(Image.open(path(d, i))) for i in index[:8]])
        lr_images, lr_masks = bits.resize_pair(images[:8], masks[:8], image_size)  # for display
        Image.fromarray(bits.make_grid(read('images'), read('masks'), meta['palette'], extra=[
            lr_images, bits.colorize(lr_masks, meta['palette'])])).save(f'{out_dir}/grid.png')
    if ddp:
        destroy_process_group()
    sys.exit(0)

if mode == 'eval':  # ------- G_SR against plain upsampling, on real val pairs it never saw -------
    if ddp:
        sys.exit('--mode=eval runs in one process (python superres.py ..., not torchrun)')
    data_path = os.path.join(data_dir, dataset)
    try:
        images, masks = (np.load(f'{data_path}/val_{a}.npy', mmap_mode='r')
                         for a in ['images', 'masks'])
        data_classes = json.load(open(os.path.join(data_path, 'meta.json')))['classes']
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"cannot read the val split in {data_path} ({e}); run prepare.py first")
    if data_classes != meta['classes']:
        sys.exit(f"{data_path}: classes {data_classes} are not the SR model's {meta['classes']}")
    n = min(len(images), eval_pairs or len(images))
    real = bits.resize_pair(images[:n], masks[:n], image_size)  # the truth at high resolution
    low = bits.resize_pair(images[:n], masks[:n], image_size // scale)  # what G_SR is fed (= G's)
    t0 = time.time()
    out = [upsample(low[0][b:b + batch_size], low[1][b:b + batch_size],
                    range(b, min(n, b + batch_size))) for b in range(0, n, batch_size)]
    sr = tuple(np.concatenate(v) for v in zip(*out))
    dt = time.time() - t0
    # the baselines: the condition itself (bilinear image, nearest mask), and a bicubic image
    near = bits.resize_pair(*low, image_size)
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
    report = dict(ckpt=ckpt, iter_num=iter_num, pairs=n, sampler=sampler, steps=steps if
                  sampler == 'ddim' else diffusion.num_timesteps, seconds=dt, scores=rows,
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
    with open(os.path.join(out_dir, 'eval.json.tmp'), 'w') as f:
        json.dump(report, f, indent=1)
    os.replace(os.path.join(out_dir, 'eval.json.tmp'), os.path.join(out_dir, 'eval.json'))
    show = lambda *v: [a[:8] for a in v]  # low-res (upsampled for display) | G_SR | real
    colour = lambda m: bits.colorize(m, meta['palette'])
    grid = bits.make_grid(*show(*real), meta['palette'], nrow=4,
                          extra=show(near[0], colour(near[1]), sr[0], colour(sr[1])))
    Image.fromarray(grid).save(os.path.join(out_dir, 'eval_grid.png'))
    print(f"wrote {out_dir}/eval.json and eval_grid.png (condition | G_SR | real)")
    sys.exit(0)

# ----------- train G_SR on (low-res, high-res) pairs made from the prepared patches -----------
assert image_size % scale == 0, f'image_size {image_size} must be a multiple of scale {scale}'
assert gradient_accumulation_steps % ddp_world_size == 0
gradient_accumulation_steps //= ddp_world_size
imgs_per_iter = batch_size * gradient_accumulation_steps * ddp_world_size
print(f"images per iteration: {imgs_per_iter} = {batch_size} batch x "
      f"{gradient_accumulation_steps} accumulation x {ddp_world_size} processes")
if master_process:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=1)
    if init_from == 'scratch':  # a fresh run starts a fresh log; a resumed one appends
        open(os.path.join(out_dir, 'log.txt'), 'w').close()

# data: unlike train_gen.py the patches stay memmapped and each batch is resized on the fly: a
# whole split at 256^2 would take 4x the memory of G's 128^2 copy, on every rank
data_path = os.path.join(data_dir, dataset)
try:
    with open(os.path.join(data_path, 'meta.json')) as f:
        meta = json.load(f)
    data = {s: tuple(np.load(os.path.join(data_path, f'{s}_{a}.npy'), mmap_mode='r')
                     for a in ['images', 'masks']) for s in ['train', 'val']}
except (OSError, ValueError) as e:  # missing or unreadable files
    sys.exit(f"cannot read the prepared dataset in {data_path} ({e}); run prepare.py first")
if any(i.ndim != 4 or i.shape[3] != 3 or m.shape != i.shape[:3] for i, m in data.values()):
    sys.exit(f"{data_path}/*.npy: expected images (N, P, P, 3), masks (N, P, P); re-run prepare.py")
C = 3 + bits.label_channels(bits.num_codes(meta), label_encoding)  # RGB + label channels


def get_batch(split, rng):
    """(target x0, condition), both (B, C, image_size, image_size) in [-1, 1].

    Both are the same patch, resized by the one resize of the project to image_size and to
    image_size // scale: the low-res side is then exactly what train_gen.py trains G on, i.e.
    what upsample mode is fed. No random crops: G_SR sees G's field of view, with more pixels.
    """
    ix = np.sort(rng.integers(len(data[split][0]), size=batch_size))
    images, masks = data[split][0][ix], data[split][1][ix]
    if split == 'train':  # the same dihedral map for each image and its mask
        images, masks = bits.augment(images, masks, rng)
    x0 = bits.pack(*bits.resize_pair(images, masks, image_size), meta, label_encoding)
    cond = condition(*bits.resize_pair(images, masks, image_size // scale))
    if device_type == 'cuda':  # pinned, so the copies to the GPU are asynchronous
        return [x.pin_memory().to(device, non_blocking=True) for x in (x0, cond)]
    return x0.to(device), cond.to(device)


# model init: G's UNet, plus the C condition channels concatenated to its input
iter_num, best_val_loss = 0, 1e9
model_args = dict(image_size=image_size, in_channels=C, out_channels=C, n_ch=n_ch, ch_mult=ch_mult,
                  n_res_blocks=n_res_blocks, attn_res=attn_res, dropout=dropout, cond_channels=C)
diffusion_args = dict(timesteps=timesteps, beta_schedule=beta_schedule, objective=objective)
ckpt_path = os.path.join(out_dir, 'ckpt.pt')
if init_from == 'resume':
    print(f"resuming training from {ckpt_path}")
    checkpoint = torch.load(ckpt_path, map_location=device, weights_only=True)
    # the architecture comes from the checkpoint (nanoGPT); keys that also shape the data or the
    # noise schedule must match the command line, as in train_gen.py
    for k in ['image_size', 'scale', 'label_encoding', 'timesteps', 'beta_schedule', 'objective']:
        if checkpoint['config'][k] != config[k]:
            sys.exit(f"{ckpt_path} has {k}={checkpoint['config'][k]!r}, this run {config[k]!r}")
    model_args, iter_num = checkpoint['model_args'], checkpoint['iter_num']
    best_val_loss = checkpoint['best_val_loss']
model = UNet(UNetConfig(**model_args))
model_args = asdict(model.config)  # every UNetConfig field, so upsample mode rebuilds it exactly
diffusion = GaussianDiffusion(**diffusion_args)
model.to(device)
ema = copy.deepcopy(model).eval().requires_grad_(False)  # on every rank, as in train_gen.py
scaler = torch.amp.GradScaler(enabled=(dtype == 'float16'))  # no-op unless float16
params = [p for p in model.parameters() if p.requires_grad]  # biases, norm gains: no decay
optimizer = torch.optim.AdamW([{'params': [p for p in params if p.dim() >= 2]},
                               {'params': [p for p in params if p.dim() < 2], 'weight_decay': 0.0}],
                              lr=learning_rate, betas=(beta1, beta2), weight_decay=weight_decay)
if init_from == 'resume':
    for obj, key in [(model, 'model'), (ema, 'ema'), (optimizer, 'optimizer'), (scaler, 'scaler')]:
        if key in checkpoint:  # 'scaler' only for float16 runs
            obj.load_state_dict(checkpoint[key])
checkpoint = None  # free up memory
raw_model = model  # saved and EMA-averaged: no '_orig_mod.' or 'module.' prefixes
if compile:
    model = torch.compile(model)
if ddp:
    model = DDP(model, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)


@torch.no_grad()
def evaluate():
    """Val loss of the model and its EMA on fixed batches, t and noise: comparable across evals."""
    rng = np.random.default_rng([seed, ddp_rank, 1])
    batches = [get_batch('val', rng) for _ in range(eval_iters)]  # (x0, cond) pairs
    raw_model.eval()
    with ctx:
        losses = val_losses(diffusion, [raw_model, ema], batches, seed)
    raw_model.train()
    if ddp:  # every rank evaluated its own shard
        dist.all_reduce(losses, op=dist.ReduceOp.AVG)
    return losses.tolist()


# training loop; the grids show the same 8 val pairs every time
grid_x0, grid_cond = (v[:8] for v in get_batch('val', np.random.default_rng([seed, ddp_rank, 2])))
t_start = t_log = time.time()
iter_log, loss_sum = iter_num, torch.zeros((), device=device)
log(f"start at iter {iter_num}: {raw_model.get_num_params() / 1e6:.2f}M parameters, {C} channels",
    out_dir, master_process)
while True:
    # stop at max_iters, or when the wall-clock budget is spent (all ranks must agree on it)
    stop = torch.tensor(float(iter_num >= max_iters or
                              (max_minutes > 0 and time.time() - t_start > 60 * max_minutes)))
    if ddp and max_minutes > 0:
        dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    stop = bool(stop)

    # evaluate, draw a grid of EMA samples and write the checkpoint (also on the way out)
    if iter_num % eval_interval == 0 or stop:
        t_eval = time.time()
        val_loss, ema_loss = evaluate()
        log(f"step {iter_num}: val loss {val_loss:.4f}, ema val loss {ema_loss:.4f}", out_dir,
            master_process)
        if master_process:
            gens = [torch.Generator().manual_seed(seed + i) for i in range(len(grid_x0))]
            with torch.no_grad(), ctx:
                x = diffusion.sample(lambda x_t, t: ema(x_t, t, grid_cond), grid_x0.shape, 'ddim',
                                     grid_steps, generator=gens, device=device)
            # the condition as the UNet sees it (upsampled) | G_SR's output | the target
            (ci, cm), (si, sm) = (bits.unpack(v, meta, label_encoding) for v in (grid_cond, x))
            extra = [ci, bits.colorize(cm, meta['palette']), si, bits.colorize(sm, meta['palette'])]
            grid = bits.make_grid(*bits.unpack(grid_x0, meta, label_encoding), meta['palette'],
                                  extra=extra)
            Image.fromarray(grid).save(os.path.join(out_dir, f'grid_{iter_num:06d}.png'))
        if ema_loss < best_val_loss or always_save_checkpoint:
            best_val_loss = min(best_val_loss, ema_loss)
            if iter_num > 0 and master_process:
                checkpoint = {'model': raw_model.state_dict(), 'ema': ema.state_dict(),
                              'optimizer': optimizer.state_dict(), 'model_args': model_args,
                              'diffusion': diffusion_args, 'label_encoding': label_encoding,
                              'scale': scale, 'meta': meta, 'iter_num': iter_num,
                              'best_val_loss': best_val_loss, 'config': config}
                if scaler.is_enabled():
                    checkpoint['scaler'] = scaler.state_dict()
                save_checkpoint(checkpoint, ckpt_path)  # atomic: never a half-written ckpt.pt
        t_log += time.time() - t_eval  # img/s and ETA measure training only
    if stop:
        break

    # all randomness of this iteration (batch, flips, t, noise, dropout) is derived from
    # (seed, rank, iter), so --init_from=resume replays exactly what an unbroken run would do
    rng = np.random.default_rng([seed, ddp_rank, 0, iter_num])
    torch.manual_seed(int(rng.integers(2**62)))
    lr = get_lr(iter_num, learning_rate, warmup_iters, decay_lr, lr_decay_iters, min_lr)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr
    # forward backward update, with optional gradient accumulation to simulate larger batch size
    for micro_step in range(gradient_accumulation_steps):
        if ddp:  # only sync gradients at the last micro step (nanoGPT)
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        x0, cond = get_batch('train', rng)  # (B, C, H, W) each
        t = torch.randint(0, timesteps, (batch_size,), device=device)  # Algorithm 1, Ho et al.
        with ctx:  # cond is concatenated to x_t inside the UNet (cond_channels)
            loss = diffusion.training_loss(lambda x, t: model(x, t, cond), x0, t)
            loss = loss / gradient_accumulation_steps
        scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    ema_update(ema, raw_model, ema_decay)
    iter_num += 1

    # timing and logging: the loss is averaged over the interval and over all ranks
    if iter_num % log_interval == 0:
        if ddp:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
        dt = (time.time() - t_log) / (iter_num - iter_log)  # seconds per iteration
        eta = (max_iters - iter_num) * dt / 60
        if max_minutes > 0:
            eta = min(eta, max_minutes - (time.time() - t_start) / 60)
        log(f"iter {iter_num}: loss {loss_sum.item() / (iter_num - iter_log):.4f}, lr {lr:.2e}, "
            f"{imgs_per_iter / dt:.1f} img/s, eta {eta:.1f} min", out_dir, master_process)
        t_log, iter_log, loss_sum = time.time(), iter_num, torch.zeros((), device=device)

if ddp:
    destroy_process_group()
