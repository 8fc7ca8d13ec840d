# PSPNet-ResNet50 (D8, aux head) for the paper's Tab. 2 on a GPU node, after seg_paper.py:
#   torchrun --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py \
#       configs/seg_paper_pspnet.py
# mmsegmentation's PSPNet recipe (configs/pspnet, iSAID 896 and Cityscapes): SGD, lr 0.01,
# momentum 0.9, weight decay 5e-4, poly decay (power 0.9) to 1e-4, batch 16 for 80k iterations;
# here seg_paper.py's 40k x 32 at 256 (the same images). The paper gives no schedule of its own.
# Not measured (no GPU here). Paper Tab. 2 (iSAID 256): 48.95 mIoU on D, 56.54 on D + D'.
arch = 'pspnet'
optimizer_name = 'sgd'
learning_rate = 1e-2
weight_decay = 5e-4
min_lr = 1e-4
