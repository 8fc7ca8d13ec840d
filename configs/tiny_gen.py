# Tiny generator for the CPU tests (tests/test_train_gen.py, tests/test_sample.py): a few seconds
# per run on 2 cores, nothing meaningful is learned. Used by train_gen.py and sample.py:
#   python train_gen.py configs/tiny_gen.py --data_dir=<tmp>/data --dataset=tiny --max_iters=4
#   python sample.py configs/tiny_gen.py --dataset=tiny --num_samples=5
# Hardware: any CPU. Expected time: ~2-5 s per train_gen.py run (mostly importing torch).
# train_gen.py: UNet n_ch 16, one downsampling, attention at 8x8, T = 50
batch_size = 4
image_size = 16
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
# sample.py: a fast DDIM sampler
sampler = 'ddim'
steps = 5
# both
device = 'cpu'
dtype = 'float32'
compile = False
