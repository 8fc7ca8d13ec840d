# OpenEarthMap (Xia et al., WACV 2023): 8 classes, 1000x1000 GeoTIFF tiles (1024 for xBD ones).
# Unzip OpenEarthMap_wo_xBD from Zenodo record 7223446, then:
#   python prepare.py configs/openearthmap.py --raw_dir=~/OpenEarthMap_wo_xBD
# -> data/openearthmap/: non-overlapping 256x256 patches as in SatSynth Sec. 5.1, 9 per 1000x1000
# tile (16 per 1024 xBD tile). Splits from train.txt / val.txt; listed xBD tiles whose image is
# missing are skipped (and counted in meta.json). Label 0 = unknown -> 255 (ignore), 1..8 ->
# classes 0..7, > 8 -> 255 + a warning. The generator codes the 8 classes in 3 bits (C = 6, the
# paper's 3 + ceil(log2 8)); unknown pixels get no code and are left out of its loss.
# Hardware: CPU, < 2 GB RAM. Expected time: ~10 min.
dataset = 'openearthmap'
reader = 'openearthmap'
patch_size = 256
border = 'drop'  # 1000 = 3 x 256 + 232: the 232-px strips are not used (no overlap, no padding)
max_ignore = 1.0
