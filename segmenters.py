"""The segmenters seg.py can train, by name: the paper's Tab. 2 architectures behind one interface.

Every model follows the interface written at the end of fpn.py: built from keyword knobs (saved as
seg.py's `model_args`, with `arch`), fed `fpn.preprocess`ed images, returning logits at the input
size, and its own training loss when given the target. seg.py, metrics.py, clean.py and bench.py
only ever call `build` and that interface, so adding an architecture touches this module (one
line in ARCHS, and its file, imported here) and a config, nothing else.

    import segmenters
    model = segmenters.build(dict(arch='fpn', num_classes=6, depth=18))
    logits = model(x)                               # (B, 6, H, W)
    logits, loss = model(x, y, ignore_index=255)    # training

FID / sFID / IS stay defined on the FPN-ResNet encoder (metrics.py): the paper's protocol, the
same features for every run.
"""
import inspect

from farseg import FarSeg
from fpn import FPN
from pfsegnet import PFSegNet
from pspnet import PSPNet
from segformer import segformer_b0, segformer_b2

# name -> constructor(num_classes, **knobs); the ResNet-based ones take `depth`. Each
# architecture is whole in its own file, sharing fpn.py's ResNet and interface helpers.
ARCHS = {
    'fpn': FPN,  # Lin et al. 2017 + Kirillov et al. 2019 (fpn.py): the paper's segmenter
    'pspnet': PSPNet,  # Zhao et al. 2017 (pspnet.py): dilated ResNet, pyramid pooling, aux head
    'farseg': FarSeg,  # Zheng et al. 2020 (farseg.py): foreground-scene relation, annealed focal
    'pfsegnet': PFSegNet,  # Li et al. 2021 (pfsegnet.py): PointFlow between pyramid levels
    'segformer_b0': segformer_b0,  # Xie et al. 2021 (segformer.py): Mix Transformer B0, MLP head
    'segformer_b2': segformer_b2,  # the same at B2
}


def takes_depth(arch):
    """Whether arch is built on the ResNet (fpn.ResNet) and so takes seg.py's `depth`."""
    return 'depth' in inspect.signature(ARCHS[arch]).parameters


def model_args(arch, num_classes, depth):
    """seg.py's model_args for arch: the knobs its constructor takes, and `arch` itself."""
    args = dict(arch=arch, num_classes=num_classes)
    if takes_depth(arch):
        args['depth'] = depth
    return args


def describe(model_args):
    """A short name for logs, e.g. 'fpn-ResNet18' or 'segformer_b0'."""
    arch = model_args.get('arch', 'fpn')
    return f"{arch}-ResNet{model_args['depth']}" if 'depth' in model_args else arch


def build(model_args):
    """A segmenter from seg.py's model_args; checkpoints from before `arch` existed are FPNs."""
    args = dict(model_args)
    arch = args.pop('arch', 'fpn')
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    return ARCHS[arch](**args)
