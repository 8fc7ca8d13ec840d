# OpenEarthMap (Xia et al., WACV 2023): 8 classes, 1000x1000 GeoTIFF tiles (1024 for xBD ones).
# Unzip OpenEarthMap_wo_xBD from Zenodo record 7223446, then:
#   python prepare.py configs/openearthmap.py --raw_dir=~/OpenEarthMap_wo_xBD
# -> data/openearthmap/: 256x256 patches, 16 per 1000x1000 tile with border='shift'. Splits from
# train.txt / val.txt; listed xBD tiles whose image is missing are skipped (and counted in
# meta.json). Label 0 = unknown -> 255 (ignore), 1..8 -> classes 0..7, > 8 -> 255 + a warning.
# Hardware: CPU, < 2 GB RAM. Expected time: ~10 min.
dataset = 'openearthmap'
reader = 'openearthmap'
patch_size = 256
border = 'shift'  # 1000 = 3 x 256 + 232: a 4th, overlapping row/column keeps the edge pixels
max_ignore = 1.0
