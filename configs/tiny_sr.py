# Tiny super-resolution model for the CPU tests (tests/test_superres.py): 8x8 -> 16x16, a few
# seconds per run on 2 cores, nothing meaningful is learned. Used by superres.py only:
#   python superres.py configs/tiny_sr.py --data_dir=<tmp>/data --dataset=tiny --max_iters=4
#   python superres.py configs/tiny_sr.py --mode=upsample --ckpt=<out>/ckpt.pt --in_dir=<lr>
#       --out_dir=<hr>
# Hardware: any CPU. Expected time: ~2-5 s per run (mostly importing torch).
# UNet n_ch 16, one downsampling, attention at 8x8, T = 50
batch_size = 4
gradient_accumulation_steps = 1
image_size = 16
scale = 2
n_ch = 16
ch_mult = (1, 2)
n_res_blocks = 1
attn_res = (8,)
dropout = 0.1  # kept on, so the exact-resume test also covers the dropout random stream
timesteps = 50
grid_steps = 5
max_iters = 4
eval_interval = 100
eval_iters = 1
log_interval = 1
warmup_iters = 2
lr_decay_iters = 4
learning_rate = 1e-3
ema_decay = 0.9
# upsample mode: a fast DDIM sampler
sampler = 'ddim'
steps = 5
device = 'cpu'
dtype = 'float32'
compile = False
