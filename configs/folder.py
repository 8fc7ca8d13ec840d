# Your own data: raw_dir/images/<stem>.png|tif|jpg beside raw_dir/masks/<stem>.png|tif (same stem,
# the extension may differ), optionally under train/ and val/ sub-folders, or in several scene
# folders each with its own images/ and masks/ (raw_dir/Tile 1/images/...). Images may differ in
# size; each is cut into the patch grid. Masks are either index masks ('L' or 'P', values
# 0..K-1 and ignore_index: the pair layout sample.py writes) or colour masks (RGB, or palette-mode
# PNGs in a set with RGB masks: mask_format), each colour of the palette one class. The classes:
# raw_dir/classes.json (or meta.json), or --classes_file: {"classes": [...], "palette": [[r, g,
# b], ...], "ignore_index": 255, "ignore_colours": [[r, g, b], ...]} (a list of names or
# {"0": "name"} will do for index masks; ignore_colours, e.g. an "unlabelled" colour, -> 255):
#   python prepare.py configs/folder.py --raw_dir=~/mydata --dataset=mydata
#   python prepare.py configs/folder.py --raw_dir=out-sample-toy --dataset=toy_syn --patch_size=128
#   python prepare.py configs/folder.py --raw_dir="../shared/data/dubai-aerial-tiles1-4" \
#       --classes_file=configs/dubai_classes.json --dataset=dubai --patch_size=128 --border=drop
# Without train/ and val/ sub-folders a seeded random val_fraction of the images (whole) goes to
# val. Hardware: CPU. Expected time: seconds per thousand 256x256 pairs (Dubai's 36: 1 s).
dataset = 'mydata'  # the output name data/<dataset>: give your own with --dataset=...
reader = 'folder'
patch_size = 256  # images smaller than this are skipped (and counted) unless border = 'pad'
border = 'shift'
ignore_code = False  # True: 255 gets generator code K of its own; False: no code, out of G's loss
val_fraction = 0.2
mask_format = 'auto'  # colour if any mask is RGB; 'index' or 'colour' to say so
max_offpalette = 0.001  # colour masks: a mask with more off-palette pixels is refused
