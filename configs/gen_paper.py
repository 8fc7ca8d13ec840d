# Generator recipe of the paper (SatSynth Sec. 4.5): a DDPM over 128x128 image+bit-mask pairs,
# T = 1000, linear betas 1e-4..2e-2, eps prediction; a UNet of Ho et al.'s family (n_ch 128,
# ch_mult (1, 1, 2, 2, 4), attention at 16x16, ~71M parameters, ~124 GFLOP per forward pass).
# Use it after a dataset config (which sets `dataset`; patches are resized once to 128):
#   python train_gen.py configs/isaid.py configs/gen_paper.py
#   torchrun --standalone --nproc_per_node=4 train_gen.py configs/loveda.py configs/gen_paper.py
#   python train_gen.py configs/openearthmap.py configs/gen_paper.py --init_from=resume
# Hardware: 1-8 GPUs with bf16 (A100/H100), ~20 GB per process at batch_size 16; CPU RAM for the
# resized train set (N x 48 KB, e.g. 2 GB for 40k patches). Expected time: NOT measured (no GPU
# was at hand); from the FLOP count, ~300-600 img/s on one H100, so 200k iterations at batch 64
# take roughly 6-12 h on one H100 and 1-3 h on 8. Expected: sharp pairs, class frequencies
# within a few % TVD of the real ones (paper Fig. 2c); then python sample.py ... --ratio 3.
# From the CPU-scale real-imagery results (docs/RESULTS.md, "Generator options on real imagery"),
# NOT measured on a GPU: (1) resolution is what the pairs need (Dubai: 0.35 of a real oracle's
# gain at 32x32, 0.75 at 64x64); this recipe's 128x128 already is the paper's; (2) with the x0
# objective the images come out grey and blurry, with v + min-SNR-5 they get real colour and
# sharpness; eps stays here because it is the paper's measured setting at this length. To try
# the CPU recipe's objective at this scale: --objective=v --loss_weighting=min_snr.
image_size = 128
batch_size = 16  # per GPU; global batch 64 = 16 x 4 accumulation steps (split across GPUs)
gradient_accumulation_steps = 4
n_ch = 128
ch_mult = (1, 1, 2, 2, 4)  # 128 -> 64 -> 32 -> 16 -> 8
n_res_blocks = 2
attn_res = (16,)
dropout = 0.1  # Ho et al.: 0.1 on the (small) CIFAR-10; these datasets are similarly small
timesteps = 1000
beta_schedule = 'linear'
objective = 'eps'
learning_rate = 1e-4  # improved-diffusion's rate for its 128-256 px models
max_iters = 200000
warmup_iters = 5000  # Ho et al.
decay_lr = False  # constant after warmup, as Ho et al.; the EMA does the averaging
grad_clip = 1.0
ema_decay = 0.9999
eval_interval = 5000
log_interval = 100
eval_iters = 20
grid_steps = 50
compile = True
