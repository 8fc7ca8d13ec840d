# G_SR on the embedded toy data, small enough for a CPU: 32 -> 64 (the toy generator runs at 32).
#   python prepare.py configs/toy.py
#   python train_gen.py configs/toy.py configs/sr_toy.py           # 30 min, then stops
#   python superres.py configs/toy.py configs/sr_toy.py --mode=upsample \
#       --in_dir=out-sample-toy --out_dir=out-sample-toy-64
# Hardware: 2 CPU cores, ~45 img/s when idle (4,746 iterations in 30 min, when superres.py
# trained G_SR; train_gen.py reproduces it bit for bit, tests/test_golden.py). Measured with
#   python superres.py configs/toy.py configs/sr_toy.py --mode=eval --sampler=ddim --steps=50
# on 128 val pairs: mask accuracy 0.965 / mIoU 0.906 against 0.920 / 0.800 for the nearest mask,
# PSNR 28.3 / SSIM 0.858 against 28.9 / 0.858 bicubic. eps needs far longer (noise at 500 its).
image_size = 64
cond = 'lowres'  # G_SR: conditioned on the pair at image_size // scale
scale = 2
batch_size = 16
gradient_accumulation_steps = 1
n_ch = 16
ch_mult = (1, 2, 2)
n_res_blocks = 1
attn_res = ()  # no attention: the SR job is local, and it is the slowest block on a CPU
dropout = 0.0
timesteps = 1000  # the paper's schedule; DDIM sampling keeps evaluation affordable
objective = 'x0'  # as configs/gen_toy.py: learns to follow the condition within minutes
learning_rate = 1e-3
warmup_iters = 100
max_iters = 100000  # stopped by max_minutes
max_minutes = 30.0
ema_decay = 0.995
eval_interval = 500
eval_iters = 4
log_interval = 50
grid_steps = 20
sampler = 'ddim'
steps = 50
device = 'cpu'
dtype = 'float32'
compile = False
