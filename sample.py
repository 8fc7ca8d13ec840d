"""
Sample pairs from a generator checkpoint of train_gen.py. What the generator is given is its
`cond` (saved in the checkpoint), and so is what comes out:

- cond='none', G: new (image, mask) training pairs, the D' of SatSynth (paper Sec. 4.3, Fig. 2);
  num_samples of them, or ratio x |train| of G's dataset (the paper's R).
- cond='mask': new images for given masks (the FreeMask / ControlNet family). Output i is the
  mask of in_dir's pair i % N (N pairs, sorted stems) beside an image sampled for it; num_samples,
  or ratio x N outputs, so ratio 3 gives 3 new images per mask.
- cond='image': masks for given images, SegDiff (Amit et al. 2021), a diffusion segmenter. Output
  i is in_dir's image i % N beside a sampled mask: the label channels of mean_of samples averaged
  before decoding (SegDiff's ensemble). When every in_dir pair is used once (num_samples = N), the
  masks are scored as seg.py scores (metrics.py): the mIoU of the masks it samples for in_dir's
  images against in_dir's masks. On the val split exported by pairs.py, SegDiff's test mIoU.
The given half is in_dir's, resized to the generator's size by pairs.resize_pair as every stage
resizes, so each written pair is aligned. A given mask is written exactly as read (ignore pixels
stay ignore: where a dataset gives ignore no code of its own, bits.py shows the UNet class 0
there, and the segmenter should not learn that label).

Sample i starts from the noise of its own generator, seeded with seed + i (with mean_of = k, the
j-th sample of the ensemble from (seed + i) x k + j: seed + i again for k = 1), so any sample can
be regenerated alone (up to float rounding, which may differ with the batch it shares). Outputs
that exist are skipped, so a killed run resumes; a folder of another generator, other settings or
another in_dir (by a digest of its pairs) is refused.

Reads the checkpoint (it carries the UNet args, the schedule and the dataset's meta.json) and, for
cond image / mask, in_dir (images/ + masks/ + meta.json or classes.json, with the checkpoint's
classes). Writes out_dir/images/{i:06d}.png, out_dir/masks/{i:06d}.png (index PNG with the dataset
palette, values 0..K-1 or 255; all 255 for an image-only generator), meta.json, config.json and
grid.png; with --save_margin also margins/{i:06d}.png, each pixel's distance to a label decision
boundary (bits.margin), which clean.py turns into ignore labels. cond='image' scored: also
results.json, in the schema of seg.py's (miou, mean_f1, iou, f1, pixel_acc, confusion_matrix,
classes, seed, iter_num: the generator's), with no selected checkpoint and no learning curve
(selected null, history empty: report.py reads them as absent), so report.py --sweep_dir=X puts
X/segdiff/seed1/results.json beside seg.py's runs as one more label.

$ python sample.py --ratio 3                               # 3 x |train| pairs, DDPM (paper)
$ python sample.py configs/isaid.py --sampler=ddim --steps=50 --num_samples=1000
$ python sample.py configs/isaid.py --sampler=dpm++ --steps=10 --dtype=bfloat16  # fast, CPU too
$ torchrun --standalone --nproc_per_node=4 sample.py configs/isaid.py --ratio 3
$ python sample.py --ckpt=out-mask2img-toy/ckpt.pt --in_dir=out-sample-toy --out_dir=out-m2i-toy \
      --ratio 3 --sampler=ddim --steps=50       # 3 new images for each mask of G's pairs
$ python pairs.py export_split data/toy out-val-toy-32 32 val    # the SegDiff evaluation:
$ python sample.py --ckpt=out-img2mask-toy/ckpt.pt --in_dir=out-val-toy-32 --mean_of=4 \
      --out_dir=out-segdiff-toy/segdiff/seed1 --sampler=ddim --steps=50  # results.json: val mIoU

References: Ho et al. 2020 (Algorithm 2), Song et al. 2021 (DDIM), Lu et al. 2022
(DPM-Solver++), Amit et al. 2021 (SegDiff, the ensemble of Sec. 3), karpathy/nanoGPT sample.py,
openai/improved-diffusion scripts/image_sample.py (sharded sampling).
"""
import hashlib
import os
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed import init_process_group, destroy_process_group

import bits
import metrics
import pairs
from configurator import check_settings, configure
from diffusion import GaussianDiffusion
from unet import UNet, UNetConfig

# -----------------------------------------------------------------------------
out_dir = ''  # '' = out-sample-<dataset>
ckpt = ''  # '' = out-gen-<dataset>/ckpt.pt
in_dir = ''  # cond image / mask: the pair folder whose images / masks are given; '' for G
data_dir = 'data'  # not read: the checkpoint carries the dataset's meta.json
dataset = 'toy'  # only names the default ckpt and out_dir
ratio = 1.0  # number of pairs = ratio x |train| (the paper's R; G), or ratio x |in_dir's pairs|
             # (cond image / mask: not the train split's) ...
num_samples = 0  # ... unless this is > 0
mean_of = 1  # cond image: average the label channels of this many samples per mask (SegDiff)
sampler = 'ddpm'  # 'ddpm': all T ancestral steps (paper); 'ddim' (Song et al.) or 'dpm++'
                  # (DPM-Solver++(2M), Lu et al.): `steps` steps
steps = 50  # DDIM / DPM-Solver++ steps (network evaluations per sample)
eta = 0.0  # DDIM noise: 0 = deterministic, 1 = DDPM-like
batch_size = 64  # samples per forward pass, per process (batch_size // mean_of pairs)
seed = 1337  # sample i uses seed + i
save_margin = False  # also write margins/<i>.png: each pixel's bit margin, for clean.py --margin
backend = 'nccl' if torch.cuda.is_available() else 'gloo'
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'
compile = False  # torch.compile the UNet: pays off only for large runs on a GPU
# -----------------------------------------------------------------------------
config = configure(globals())
# -----------------------------------------------------------------------------
out_dir = out_dir or f'out-sample-{dataset}'
ckpt = ckpt or os.path.join(f'out-gen-{dataset}', 'ckpt.pt')
config.update(out_dir=out_dir, ckpt=ckpt)
problems = []  # one per bad setting, all reported (one line each) before anything is written
if sampler not in {'ddpm', 'ddim', 'dpm++'}:
    problems.append(f'sampler must be ddpm, ddim or dpm++, got {sampler!r}')
if steps < 1:
    problems.append(f'steps must be >= 1, got {steps}')
if batch_size < 1:
    problems.append(f'batch_size must be >= 1, got {batch_size}')
if eta < 0:
    problems.append(f'eta must be >= 0, got {eta}')
if dtype not in {'float32', 'bfloat16', 'float16'}:
    problems.append(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
if num_samples < 0:
    problems.append(f'num_samples must be >= 1 (or 0: ratio x the train pairs), got {num_samples}')
elif num_samples == 0 and not ratio > 0:
    problems.append(f'ratio must be > 0 with num_samples 0, got {ratio}')
if mean_of < 1:
    problems.append(f'mean_of must be >= 1 (the samples averaged per mask), got {mean_of}')
if in_dir and os.path.abspath(in_dir) == os.path.abspath(out_dir):
    problems.append(f'in_dir and out_dir must differ (the given pairs are read, never written), '
                    f'got {in_dir!r} for both')
check_settings('sample.py', problems)

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

# the generator: its EMA weights, rebuilt from the checkpoint alone
checkpoint = pairs.load_checkpoint(ckpt, 'train_gen.py', ['model_args', 'ema', 'diffusion', 'meta',
                                                          'label_encoding', 'iter_num'])
cond = pairs.checkpoint_cond(checkpoint)
if cond not in ('none', 'image', 'mask'):  # what that generator is, in the one line that refuses it
    role = {'lowres': 'G_SR upsamples pairs with superres.py'}.get(cond, 'unknown')
    sys.exit(f"{ckpt}: a generator with cond={cond!r} ({role}); sample.py needs G (cond='none') "
             "or a conditional generator (cond='image' or 'mask') of train_gen.py")
try:
    model = UNet(UNetConfig(**checkpoint['model_args']))
    model.load_state_dict(checkpoint['ema'])  # Ho et al. sample from the EMA
    diffusion = GaussianDiffusion(**checkpoint['diffusion'])
except (RuntimeError, TypeError, ValueError) as e:
    sys.exit(f"{ckpt}: not a usable train_gen.py checkpoint ({type(e).__name__}: {e})")
meta, encoding, iter_num = checkpoint['meta'], checkpoint['label_encoding'], checkpoint['iter_num']
weights = pairs.weights_digest(checkpoint['ema'])  # what made the pairs, for a resumed run
checkpoint = None
model.eval().to(device)
if compile:
    model = torch.compile(model)
C, size = model.config.in_channels, model.config.image_size  # C: the channels it generates
n_label = bits.label_channels(bits.num_codes(meta), encoding)  # of the whole pair (bits.pack)
K, ignore_index = meta['num_classes'], meta['ignore_index']

# what a conditional generator is given (cond image: in_dir's images; mask: its masks), checked
# before anything is read
given_half = {'image': 'images', 'mask': 'masks'}.get(cond)
problems = []
if cond == 'none' and in_dir:
    problems.append(f"in_dir is given to a conditional generator (cond image / mask); {ckpt} is G "
                    f"(cond='none'), which is given nothing: drop --in_dir={in_dir}")
if cond != 'none' and not in_dir:
    problems.append(f"in_dir must name the pair folder (images/ + masks/) whose {given_half} "
                    f"{ckpt} is given (cond={cond!r}), got ''")
if cond != 'image' and mean_of > 1:
    problems.append(f"mean_of={mean_of} averages masks sampled for one image (cond='image'); "
                    f"{ckpt} has cond={cond!r}")
if cond == 'mask' and save_margin:
    problems.append(f"save_margin: {ckpt} (cond='mask') samples no masks (they are given), so "
                    "there are no bit margins")
check_settings('sample.py', problems)


def load_given(folder):
    """in_dir's pairs at the generator's size (pairs.resize_pair, as every stage resizes), their
    sorted stems, and a digest of what was read (its stems and pixels: a resumed run must be given
    the same). Exits with one line naming in_dir if its classes or mask values are not those of
    the checkpoint's dataset."""
    in_meta = pairs.read_classes(folder)
    if [in_meta['classes'], in_meta['num_classes']] != [meta['classes'], K]:
        sys.exit(f"in_dir {folder}: classes {in_meta['classes']} are not the generator's "
                 f"{meta['classes']} ({ckpt})")
    images, masks, stems = pairs.load_pairs(folder)  # uint8 (N, h, w, 3), (N, h, w)
    bad = np.unique(masks[(masks >= K) & (masks != ignore_index)])
    if len(bad):
        sys.exit(f"in_dir {folder}: mask values {bad[:5].tolist()} are no class of the generator's "
                 f"(0..{K - 1}, or {ignore_index} for ignore)")
    digest = hashlib.sha256(' '.join(stems).encode())
    digest.update(images.tobytes())
    digest.update(masks.tobytes())
    images, masks = pairs.resize_pair(images, masks, size)  # (N, size, size, 3), (N, size, size)
    return images, masks, stems, digest.hexdigest()[:16]


def segdiff_scores(sampled, truth):
    """The scores of sampled masks against the true ones, as seg.py's (metrics.py: the one
    definition), and the confusion matrix (K + 1, K + 1). Where the dataset gives ignore a code of
    its own (bits.py, e.g. LoveDA) a sampled mask may say 255: such a pixel is a miss of its true
    class (a false negative) and no class's false positive. So it is counted in an extra column K,
    and the class means are taken over the K classes only (without one it has no effect)."""
    pred = torch.as_tensor(sampled).long()
    pred = torch.where(pred == ignore_index, K, pred)  # a sampled ignore: column K
    cm = metrics.confusion_matrix(pred, truth, K + 1, ignore_index)  # (K + 1, K + 1), row K empty
    summary = metrics.summarize(cm, meta['classes'] + ['(sampled ignore)'])
    for key, mean in [('iou', 'miou'), ('f1', 'mean_f1')]:
        del summary[key]['(sampled ignore)']
        summary[mean] = torch.tensor(list(summary[key].values())).nanmean().item()
    return summary, cm


if cond != 'none':
    given_images, given_masks, stems, in_digest = load_given(in_dir)
n_source = meta['counts']['train'] if cond == 'none' else len(stems)
num_samples = num_samples or round(ratio * n_source)
# the settings that depend on the checkpoint, checked as the others above
problems = []
if num_samples < 1:
    source = 'train pairs' if cond == 'none' else f'pairs in {in_dir}'
    problems.append(f'ratio must give >= 1 pair, got {ratio} x {n_source} {source} = {num_samples}')
if sampler != 'ddpm' and steps > diffusion.num_timesteps:
    problems.append(f'steps must be <= T = {diffusion.num_timesteps} (the diffusion steps of '
                    f'{ckpt}), got {steps}')
check_settings('sample.py', problems)
nfe = diffusion.num_timesteps if sampler == 'ddpm' else steps  # network evaluations per sample
print(f"{ckpt} (iter {iter_num}): {num_samples} pairs of {size}x{size}, {sampler} with {nfe} "
      f"steps, {ddp_world_size} process(es)")
if cond != 'none':
    ensemble = f', its mask the mean of {mean_of} samples' if mean_of > 1 else ''
    print(f"cond={cond}: pair i is given the {cond} of {in_dir}'s pair i % {len(stems)} (sorted "
          f"stems){ensemble}")

# meta.json describes the pair folder (docs/DATASETS.md) and how it was made. A resumed run must
# use the same weights (by digest, not by path or iteration), settings and given pairs, or the
# folder would silently mix two generators, samplers or conditions.
info = {k: meta[k] for k in ['name', 'classes', 'palette', 'num_classes', 'ignore_index']}
info.update(source='sample.py', sampler=sampler, steps=nfe, eta=eta if sampler == 'ddim' else None,
            seed=seed, ckpt=ckpt, iter_num=iter_num, weights=weights, image_size=size,
            label_encoding=encoding, **({'margins': True} if save_margin else {}))
if cond != 'none':  # (G's meta.json stays as it was before conditional generators)
    info.update(cond=cond, in_dir=in_dir, in_digest=in_digest, mean_of=mean_of)
pairs.check_pair_folder(out_dir, info, ['weights', 'sampler', 'steps', 'eta', 'seed', 'margins',
                                        'cond', 'in_dir', 'in_digest', 'mean_of'],
                        config, master_process)

# this rank's share of the indices, minus those a previous run finished
mine = range(ddp_rank, num_samples, ddp_world_size)
todo = [i for i in mine if not pairs.pair_done(out_dir, i)]
print(f"rank {ddp_rank}: {len(todo)} of {len(mine)} indices to sample, "
      f"{len(mine) - len(todo)} already done")
# per-value pixel counts of this rank's masks, for the class-frequency table at the end (Fig. 2c):
# pairs from an earlier run are read back once here, new ones are counted as they are made
hist = np.zeros(256, np.int64)
for i in sorted(set(mine) - set(todo)):
    hist += np.bincount(pairs.read_pair(out_dir, i)[1].ravel(), minlength=256)
t0 = time.time()
k = mean_of  # samples per pair
per_pass = max(1, batch_size // k)  # pairs per forward pass (k samples each)
for b in range(0, len(todo), per_pass):
    idx = todo[b:b + per_pass]
    # sample i's own noise: seed + i; the j-th of an ensemble's k samples: (seed + i) * k + j
    gens = [torch.Generator().manual_seed((seed + i) * k + j) for i in idx for j in range(k)]
    condition = None  # G is given nothing; pairs.condition builds the others' as train_gen.py
    if cond != 'none':  # (B, C_cond, H, W): the given half in bits.pack's channels
        src = [i % len(stems) for i in idx]  # output i is given in_dir's pair i % N
        condition = pairs.condition(cond, given_images[src], given_masks[src], size, meta,
                                    encoding).to(device)
    repeated = None if condition is None else condition.repeat_interleave(k, 0)  # (B k, ...)
    shape = (len(idx) * k, C, size, size)
    with torch.no_grad(), ctx:  # the condition joins the noisy input at every step
        x = diffusion.sample(lambda x_t, t, **kw: model(x_t, t, repeated, **kw), shape, sampler,
                             steps, eta=eta, generator=gens, device=device)
    if k > 1:  # SegDiff's ensemble: the mean of each pair's k label-channel samples
        x = x.float().reshape(len(idx), k, C, size, size).mean(1)  # (B, C, H, W)
    x = pairs.pair_tensor(cond, x, condition, n_label)  # the sample beside what it was given
    images, masks = bits.unpack(x, meta, encoding)  # uint8 (B, H, W, 3), (B, H, W)
    if cond == 'mask':  # the given masks exactly, ignore pixels included
        masks = given_masks[src]
    if masks is None:  # image-only generator: all-ignore masks keep the shared folder layout
        masks = np.full(images.shape[:3], ignore_index, np.uint8)
    margins = bits.margin(x[:, bits.RGB:], bits.num_codes(meta), encoding).cpu().numpy() \
        if save_margin and encoding != 'none' else [None] * len(idx)
    for i, image, mask, m in zip(idx, images, masks, margins):
        pairs.save_pair(out_dir, i, image, mask, meta['palette'], m)  # atomic, image then mask
    hist += np.bincount(masks.ravel(), minlength=256)
    if master_process:
        n, dt = b + len(idx), time.time() - t0
        print(f"rank 0: {n}/{len(todo)} pairs, {n / dt:.2f} pairs/s, "
              f"eta {(len(todo) - n) * dt / n / 60:.1f} min", flush=True)
totals = torch.tensor([len(todo), *hist], dtype=torch.float64, device=device)
if ddp:  # waits for every rank, and totals the work and the class counts
    dist.all_reduce(totals)
elapsed = time.time() - t0

if master_process:
    missing = [i for i in range(num_samples) if not pairs.pair_done(out_dir, i)]
    if missing:
        sys.exit(f"{len(missing)} indices are missing (first: {missing[:5]}): run again")
    # grid of the first 16 pairs, read back from disk: what the segmenter will actually see
    images, masks = (np.stack(v) for v in zip(*[pairs.read_pair(out_dir, i)
                                                for i in range(min(16, num_samples))]))
    pairs.save_png(pairs.make_grid(images, masks, meta['palette'], min_tile=128),
                   f'{out_dir}/grid.png')  # 32x32 pairs shown at 4x
    # per-class pixel frequency of all generated masks beside the real train split (Fig. 2c)
    hist = totals[1:].cpu().numpy()  # every mask of the folder, over all ranks
    gen = hist[:K] / max(1, hist[:K].sum())  # fraction of labelled (non-ignore) pixels
    real = np.asarray(meta['class_freq']['train'])
    print(f"{'class':>20s} {'real':>7s} {'generated':>9s}")
    for name, r, g in zip(meta['classes'], real, gen):
        print(f"{name:>20s} {r:7.2%} {g:9.2%}")
    print(f"total variation distance {0.5 * np.abs(gen - real).sum():.4f}, ignore pixels "
          f"{hist[255] / hist.sum():.2%} generated vs {meta['ignore_fraction']['train']:.2%} real")
    n = int(totals[0].item())
    print(f"sampled {n} pairs in {elapsed:.1f} s: {n / elapsed:.3f} pairs/s, "
          f"{n * nfe / elapsed:.1f} network evaluations/s (one pair through the UNet once; "
          f"{sampler}, {nfe} steps)")

if master_process and cond == 'image' and num_samples != len(stems):
    print(f"not scored: {num_samples} masks for {len(stems)} pairs of {in_dir} (the SegDiff "
          "evaluation samples each once: num_samples 0, ratio 1)")
elif master_process and cond == 'image':  # SegDiff's evaluation: every in_dir image once
    sampled = np.stack([pairs.read_pair(out_dir, i)[1] for i in range(num_samples)])
    summary, cm = segdiff_scores(sampled, given_masks)  # both at the generator's size
    print(metrics.format_table(summary))
    print(f"SegDiff ({ckpt}, {sampler} {nfe} steps, mean of {mean_of}): mIoU "
          f"{summary['miou']:.4f} of the masks sampled for {in_dir}'s {num_samples} images "
          f"against its masks")
    # seg.py's results.json (its final evaluation), so report.py reads it as one more run
    results = dict(iter_num=iter_num, checkpoint=ckpt, **summary, seed=seed,
                   confusion_matrix=cm[:K, :K].tolist(), sampled_ignore=cm[:K, K].tolist(),
                   classes=meta['classes'], resolution=size, pairs=num_samples, in_dir=in_dir,
                   sampler=sampler, steps=nfe, mean_of=mean_of, selected=None, history=[],
                   config=config)
    pairs.save_json(results, os.path.join(out_dir, 'results.json'))  # NaN -> null
    print(f"wrote {out_dir}/results.json")

if ddp:  # leave together: gloo aborts a rank that tears down while the master still works
    dist.barrier()
    destroy_process_group()
