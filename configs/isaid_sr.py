# G_SR for iSAID: the paper's 128 -> 256 super-resolution of generated pairs (Sec. 4.4, Eq. 5,
# App. B), the same DDPM UNet as G with the low-res pair concatenated to its input.
#   torchrun --standalone --nproc_per_node=8 train_gen.py configs/isaid.py configs/isaid_sr.py
#   torchrun --standalone --nproc_per_node=8 superres.py configs/isaid_sr.py --mode=upsample \
#       --ckpt=out-sr-isaid/ckpt.pt --in_dir=out-sample-isaid --out_dir=out-sample-isaid-256
# Targets are the prepared 256x256 patches, conditions the same patches at 128 (what G trains on).
# Schedule as in the paper (Sec. 4.5): T = 1000, linear betas 1e-4..2e-2, eps prediction.
# Architecture and optimiser: Ho et al.'s 256x256 UNet (ch 128, mult 1,1,2,2,4,4, 2 res blocks,
# attention at 16x16, dropout 0, Adam 2e-5, batch 64, EMA 0.9999), the paper says "based on DDPM".
# Hardware: GPUs (not measured in this repo: written without a GPU). TODO: the paper gives no
# iteration count or wall-clock time; stop when the EMA val loss and the grids stop improving.
image_size = 256
cond = 'lowres'  # G_SR: conditioned on the pair at image_size // scale
scale = 2
batch_size = 8  # per GPU
gradient_accumulation_steps = 8  # global batch 64 = 8 x 8 on 1, 2, 4 or 8 GPUs
n_ch = 128
ch_mult = (1, 1, 2, 2, 4, 4)
n_res_blocks = 2
attn_res = (16,)
dropout = 0.0
timesteps = 1000
beta_schedule = 'linear'
objective = 'eps'
learning_rate = 2e-5
warmup_iters = 5000
max_iters = 500000
ema_decay = 0.9999
eval_interval = 5000
log_interval = 100
grid_steps = 100
# upsample mode: the paper samples with all T ancestral steps
sampler = 'ddpm'
