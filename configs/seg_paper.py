# Paper-scale recipe for seg.py: FPN-ResNet50 on 256x256 patches of iSAID / LoveDA /
# OpenEarthMap (the paper's Tab. 2 / 6 / Fig. 5 setting), on one node with 4 GPUs:
#   torchrun --nproc_per_node=4 seg.py configs/isaid.py configs/seg_paper.py
#       (ImageNet weights: downloaded once, or --backbone_ckpt=/path/to/resnet50-0676ba61.pth)
#   ... --synthetic_dir=out-sample-isaid-256   # D + D' lifted by G_SR (half of every batch)
#   ... --cutmix=0.5                                        # a Tab. 5 baseline instead
# Hardware/time: an ESTIMATE, not measured (no GPU was available when this was written):
# 4x A100/H100, bf16, global batch 32 -> roughly 0.1-0.2 s per iter, 2-3 hours for 40k iters
# plus the full-val evaluations. The paper does not give its segmenter schedule; this is the
# standard mmsegmentation-style one (80k x batch 16 there; 40k x 32 here, the same images).
# Expected (paper Tab. 6, iSAID, FPN): mIoU 59.52 / mean F1 72.82 on D, 60.65 / 73.69 on D + D'.
# The backbone starts from torchvision's ImageNet weights, as in every common FPN recipe (the
# paper does not say; from scratch, --backbone_ckpt='', expect less and use lr ~1e-3).
depth = 50
batch_size = 8  # per GPU
gradient_accumulation_steps = 4  # global: 1 per GPU with 4 GPUs -> global batch 32
crop_size = 256
scale_range = (0.5, 2.0)  # mmseg's ratio_range for LoveDA / iSAID
optimizer_name = 'adamw'
backbone_ckpt = 'imagenet'  # torchvision's IMAGENET1K_V1 ResNet-50 (fpn.IMAGENET_URLS)
learning_rate = 2e-4  # for a pretrained backbone (mmseg's AdamW FPN recipes)
weight_decay = 1e-4
warmup_iters = 1000
decay_lr = True
min_lr = 1e-6
max_iters = 40000
eval_interval = 2000
log_interval = 50
sync_bn = True  # 8 images per GPU: BN statistics over the global batch of 32
compile = True
