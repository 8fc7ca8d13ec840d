# LoveDA (Wang et al., NeurIPS 2021 D&B): 7 classes, 1024x1024 tiles, 0.3 m. Download Train.zip
# and Val.zip from Zenodo record 5706578 (no need to unzip: the zips are read in place), then:
#   python prepare.py configs/loveda.py --raw_dir=~/LoveDA
# -> data/loveda/: 40,352 train / 26,704 val patches of 256x256 (16 per tile, as in SatSynth
# Sec. 5.1), about 10 GB of .npy. Mask 0 = no-data -> 255 (ignore), 1..7 -> classes 0..6. The
# generator codes no-data as code 7 of 8 (the reader's choice, prepare.py's ignore_code): 3 bits,
# C = 6, the bits the 7 classes need anyway; a decoded 7 becomes 255 again.
# Hardware: CPU, < 2 GB RAM. Expected time: ~10-20 min (PNG decoding).
dataset = 'loveda'
reader = 'loveda'
patch_size = 256
border = 'drop'  # 1024 = 4 x 256: every policy gives the same 16 patches per tile
max_ignore = 1.0  # keep every patch, as the paper's counts imply
