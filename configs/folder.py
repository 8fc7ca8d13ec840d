# Your own data in the pair layout that sample.py writes (so real and synthetic data share one
# format): raw_dir/images/<stem>.png|tif|jpg and raw_dir/masks/<stem>.png (single-channel class
# indices, 'L' or 'P'), optionally under raw_dir/train/ and raw_dir/val/, plus raw_dir/classes.json
# (or meta.json): {"0": "background", "1": "tree"}, a list of names, or {"classes": [...], "palette":
# [[r, g, b], ...], "ignore_index": 255} (palette and ignore_index optional):
#   python prepare.py configs/folder.py --raw_dir=~/mydata --dataset=mydata
#   python prepare.py configs/folder.py --raw_dir=out-sample-toy --dataset=toy_syn --patch_size=128
# Without train/ and val/ sub-folders a seeded random val_fraction of the scenes goes to val.
# Hardware: CPU. Expected time: seconds per thousand 256x256 pairs.
dataset = 'mydata'  # the output name data/<dataset>: give your own with --dataset=...
reader = 'folder'
patch_size = 256  # images smaller than this are skipped (and counted) unless border = 'pad'
border = 'shift'
ignore_code = False  # True: 255 gets generator code K of its own; False: no code, out of G's loss
val_fraction = 0.2
