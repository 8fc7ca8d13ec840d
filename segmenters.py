"""The segmenters seg.py can train, by name: the paper's Tab. 2 architectures behind one interface.

Every model follows the interface written at the end of fpn.py: built from keyword knobs (saved as
seg.py's `model_args`, with `arch`), fed `fpn.preprocess`ed images, returning logits at the input
size, and its own training loss when given the target. seg.py, metrics.py, clean.py and bench.py
only ever call `build` and that interface, so adding an architecture touches this module (or one
file of its own, imported here) and a config, nothing else.

    import segmenters
    model = segmenters.build(dict(arch='fpn', num_classes=6, depth=18))
    logits = model(x)                               # (B, 6, H, W)
    logits, loss = model(x, y, ignore_index=255)    # training

FID / sFID / IS stay defined on the FPN-ResNet encoder (metrics.py): the paper's protocol, the
same features for every run.
"""
from fpn import FPN

# name -> constructor(num_classes, depth): ResNet depth for the ResNet-based architectures
ARCHS = {
    'fpn': FPN,  # Lin et al. 2017 + Kirillov et al. 2019 (fpn.py): the paper's segmenter
}


def build(model_args):
    """A segmenter from seg.py's model_args; checkpoints from before `arch` existed are FPNs."""
    args = dict(model_args)
    arch = args.pop('arch', 'fpn')
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return ARCHS[arch](**args)
