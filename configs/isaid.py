# iSAID (Zamir et al., CVPRW 2019) on DOTA-v1.0 images: 16 classes (background + the 15 object
# categories of the paper), scenes of ~800 to ~13,000 px. Put the downloads as mmseg documents
# them (train/images/part*.zip, train/Semantic_masks/images.zip, val/...; zips are read in place)
# or the devkit's flat train/ and val/ folders, then:
#   python prepare.py configs/isaid.py --raw_dir=~/iSAID
# -> data/isaid/: 256x256 patches (SatSynth trains its generator at 128 and super-resolves to
# 256). Colour masks (*_instance_color_RGB.png) map through the 16-colour table; off-palette
# pixels become 255 and a mask with more than max_offpalette of them is an error. The generator
# codes the 16 classes in 4 bits (C = 7, paper Sec. 5.5); off-palette pixels get no code of their
# own and are left out of its loss.
# Hardware: CPU, < 2 GB RAM. Expected time: ~15 min.
dataset = 'isaid'
reader = 'isaid'
patch_size = 256
border = 'shift'  # the last row/column of patches ends at the edge: no padding, no ignore pixels
max_ignore = 1.0
max_offpalette = 0.001
