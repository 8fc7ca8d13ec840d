# The tiny CPU configuration of the tests: every stage in seconds, nothing meaningful is learned.
#   python train_gen.py configs/tiny.py --data_dir=<tmp>/data --dataset=tiny          # G
#   python train_gen.py configs/tiny.py --dataset=tiny --cond=lowres --scale=2 \
#       --image_size=32                                                                # G_SR
#   python sample.py configs/tiny.py --dataset=tiny --num_samples=5
#   python seg.py configs/tiny.py --dataset=tiny --image_size=64
# Hardware: any CPU. Expected time: ~2-5 s per run, mostly importing torch.
# generator: UNet n_ch 16, one downsampling, attention at 8x8, T = 50
batch_size = 4
gradient_accumulation_steps = 1
image_size = 16  # seg.py: pass --image_size (a multiple of 32, or 0 for the patch size)
n_ch = 16
ch_mult = (1, 2)
n_res_blocks = 1
attn_res = (8,)
dropout = 0.1  # kept on, so the exact-resume test also covers the dropout random stream
timesteps = 50
grid_steps = 5
ema_decay = 0.9
lr_decay_iters = 4
# sampling (sample.py, superres.py): a fast DDIM sampler
sampler = 'ddim'
steps = 5
# segmenter: FPN-ResNet18 on 32x32 crops
depth = 18
crop_size = 32
scale_range = (1.0, 1.5)
# every trainer
max_iters = 4
eval_interval = 100  # so only the final evaluation runs
eval_iters = 1
log_interval = 1
warmup_iters = 2
learning_rate = 1e-3
device = 'cpu'
dtype = 'float32'
compile = False
