# G_SR on the embedded toy data, small enough for a CPU: 32 -> 64 (the toy generator runs at 32).
#   python prepare.py configs/toy.py
#   python superres.py configs/toy.py configs/sr_toy.py --max_minutes=10
#   python superres.py configs/toy.py configs/sr_toy.py --mode=upsample \
#       --in_dir=out-sample-toy --out_dir=out-sample-toy-64
# Hardware: 2 CPU cores; time = max_minutes. Measured on a shared, heavily loaded 2-core box:
# ~0.5 iter/s, i.e. 12 + 7 min = ~500 iters, far too few: at that point samples are still worse
# than nearest / bicubic upsampling (the eps model has not yet learnt to follow the condition
# at large t). TODO: how many iters the toy needs to beat nearest is not measured yet.
image_size = 64
scale = 2
batch_size = 16
gradient_accumulation_steps = 1
n_ch = 16
ch_mult = (1, 2, 2)
n_res_blocks = 1
attn_res = ()  # no attention: the SR job is local, and it is the slowest block on a CPU
dropout = 0.0
timesteps = 1000  # the paper's schedule; DDIM sampling keeps evaluation affordable
learning_rate = 1e-3
warmup_iters = 100
max_iters = 100000  # stopped by --max_minutes
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
