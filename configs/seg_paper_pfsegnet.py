# PFSegNet-ResNet50 for the paper's Tab. 2 on a GPU node, after seg_paper.py:
#   torchrun --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py \
#       configs/seg_paper_pfsegnet.py
# The reference's iSAID recipe (lxtGH/PFSegNets scripts/pointflow/train_iSAID_pfnet_r50.sh): SGD,
# lr 0.007, poly (power 0.9), SyncBN, 16 epochs of 896 crops, edge loss weight 25, OHEM (not
# here: plain cross-entropy, pfsegnet.py). Not measured (no GPU here).
# Paper Tab. 2 (iSAID 256): 60.93 mIoU on D, 63.71 on D + D'.
arch = 'pfsegnet'
optimizer_name = 'sgd'
learning_rate = 7e-3
weight_decay = 1e-4
