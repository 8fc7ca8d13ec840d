# SegFormer (MiT-B2) for the paper's Tab. 2 on a GPU node, after seg_paper.py:
#   torchrun --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py \
#       configs/seg_paper_segformer.py \
#       --backbone_ckpt=/path/to/mit_b2.pth      # NVlabs' ImageNet MiT weights, if you have them
# mmsegmentation's SegFormer recipe: AdamW, lr 6e-5 (the decoder at 10x: segformer.py's
# lr_mult), weight decay 0.01, poly (power 1.0 there; seg.py's 0.9), warmup 1500, batch 16 for
# 160k iterations. The paper does not say which size; B2 is the common one. No MiT ImageNet
# weights are reachable from this repository's machines: from scratch (backbone_ckpt = '')
# expect less, and a higher lr (~1e-3 trains the CPU recipes). Not measured (no GPU here).
# Paper Tab. 2 (iSAID 256): 60.95 mIoU on D, 62.13 on D + D'.
arch = 'segformer_b2'
backbone_ckpt = ''
optimizer_name = 'adamw'
learning_rate = 6e-5
weight_decay = 1e-2
warmup_iters = 1500
