# Tiny CPU test config for seg.py (tests/test_seg.py): a few iterations of FPN-ResNet18, seconds.
#   python seg.py configs/tiny_seg.py --data_dir=<tmp> --dataset=<name> --out_dir=<tmp>/out
depth = 18
batch_size = 2
crop_size = 32
scale_range = (1.0, 1.5)
max_iters = 2
eval_interval = 2
log_interval = 1
warmup_iters = 1
learning_rate = 1e-3
device = 'cpu'
dtype = 'float32'
compile = False
