# The embedded toy dataset: procedurally generated aerial-like 256x256 scenes with 6 classes
# (bare soil, building, road, water, tree, agriculture), deterministic for a seed. Every stage
# reads it with this file; prepare.py builds it (this is also what `python prepare.py` does):
#   python prepare.py configs/toy.py            -> data/toy/ (512 train / 128 val scenes)
# Hardware: 2 CPU cores. Expected time: ~30-60 s. No download, no ignore pixels: 6 codes, 3 bits.
dataset = 'toy'
reader = 'toy'
patch_size = 256  # one scene = one patch
n_train = 512
n_val = 128
