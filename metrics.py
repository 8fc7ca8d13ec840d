"""Metrics: segmentation scores (mIoU, F1) and the quality of generated image-mask pairs.

Pure functions first, the CLI last (under __main__: importing metrics has no side effects, and
seg.py imports confusion_matrix / summarize from here so that mIoU is defined exactly once).

    python metrics.py --real=data/toy --fake=out-sample-toy --seg_ckpt=out-seg-toy/best.pt
    python metrics.py configs/isaid.py --fake=out-sr-isaid --real_split=val

Reads a pair folder (--fake), real images (--real: a prepared dataset, its real_split, or a pair
folder) and a seg.py checkpoint; writes out_dir/metrics.json, out_dir/real_vs_generated.png (8
real pairs above 8 generated ones, zoomed by nearest neighbour to at least 128 px) and caches
the real statistics in out_dir/real_stats_<hash>.npz (keyed by data, split, checkpoint and its
mtime, resolution).

Feature extractor (paper Sec. 5.2; no Inception weights can be downloaded here): the segmenter
trained on the real data (LAYERS). FID: pooled c5. sFID (Nash et al. 2021): the first 7 channels of
c4, unpooled, as the ADM evaluator (openai/guided-diffusion evaluations/evaluator.py) keeps 7 of
Inception's mixed_6/conv. IS: p(y|x) = the pixel-mean softmax. Both sets are compared at the
generated resolution and fed to the segmenter at seg_input_size(); values compare only at equal
checkpoint and resolution (every report names them). Beyond the paper: consistency (generated masks
vs the segmenter's prediction), class-frequency TVD and memorisation: pixel distances of generated
and of val images to the nearest 'train' image (G's data, any real_split) over 8 flips/rotations,
and colour statistics (saturation, sharpness: colour_stats) of both sets.

References: Heusel et al. 2017 (FID) and mseitzer/pytorch-fid src/pytorch_fid/fid_score.py;
Nash et al. 2021 (sFID); Salimans et al. 2016 (IS); SatSynth (Toker et al. 2024) Sec. 5.2, Tab. 6.
"""
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg, special

import pairs
import segmenters
from configurator import check_settings, configure
from fpn import FPN, preprocess

# ----------------------------------------------------------------------------------------------
# Segmentation metrics (paper Tab. 2 / Tab. 6): per-class IoU and F1, class means with background.


def confusion_matrix(pred, target, num_classes, ignore_index=255):
    """(K, K) long tensor, rows = truth, cols = prediction; pixels whose truth is ignore dropped."""
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target)
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
    K = num_classes
    keep = target != ignore_index
    truth = target[keep].long()  # (n,) the labelled pixels only
    predicted = pred[keep].long()
    # an out-of-range label would silently land in another class's cell of the bincount
    if truth.numel() and (truth.min() < 0 or truth.max() >= K or predicted.min() < 0
                          or predicted.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}) (or be {ignore_index} in the truth); got "
                         f"truth {truth.min().item()}..{truth.max().item()}, "
                         f"prediction {predicted.min().item()}..{predicted.max().item()}")
    # pixel (truth k, prediction j) counts in cell k * K + j of the flattened (K, K) matrix
    return torch.bincount(truth * K + predicted, minlength=K * K).reshape(K, K)  # (K, K)


def all_reduce_cm(cm):
    """Sum a confusion matrix over DDP ranks in place (a no-op without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(cm, op=torch.distributed.ReduceOp.SUM)
    return cm


def _tp_fp_fn(cm):
    """Per class k: true positives, false positives (predicted k, truth another class) and false
    negatives (truth k, predicted another class), from the confusion matrix (rows = truth)."""
    cm = torch.as_tensor(cm).double()
    tp = cm.diag()
    fp = cm.sum(0) - tp  # column k: every pixel predicted k
    fn = cm.sum(1) - tp  # row k: every pixel whose truth is k
    return tp, fp, fn


def iou_per_class(cm):
    """IoU_k = TP / (TP + FP + FN); NaN (0/0) for a class absent from both truth and prediction."""
    tp, fp, fn = _tp_fp_fn(cm)
    return tp / (tp + fp + fn)


def f1_per_class(cm):
    """F1_k = 2TP / (2TP + FP + FN) (= Dice); NaN for a class absent from truth and prediction."""
    tp, fp, fn = _tp_fp_fn(cm)
    return 2 * tp / (2 * tp + fp + fn)


def summarize(cm, class_names):
    """Fractions in [0, 1]. Means are nanmeans: a class absent from both truth and prediction has
    no defined IoU and is left out (counting it as 0 or 1 would reward or punish a crop for a class
    it cannot contain); a class present in only one of them scores 0 and is kept."""
    iou = iou_per_class(cm)
    f1 = f1_per_class(cm)
    assert len(class_names) == len(iou), f"{len(class_names)} names for {len(iou)} classes"
    cm = torch.as_tensor(cm).double()
    return dict(miou=iou.nanmean().item(), mean_f1=f1.nanmean().item(),
                iou=dict(zip(class_names, iou.tolist())), f1=dict(zip(class_names, f1.tolist())),
                pixel_acc=(cm.diag().sum() / cm.sum()).item())


def _percent(v):
    """A fraction as a 5-wide percentage; NaN (a class absent from truth and prediction): '-'."""
    if math.isnan(v):
        return '    -'
    return f"{100 * v:5.2f}"


def format_table(summary):
    """Per-class IoU / F1 in percent, as the paper's Tab. 6 prints them ('-' = absent class)."""
    width = max([5] + [len(name) for name in summary['iou']])  # at least len('class')
    lines = [f"{'class':<{width}}   IoU     F1"]
    for name, iou in summary['iou'].items():
        lines.append(f"{name:<{width}} {_percent(iou)}  {_percent(summary['f1'][name])}")
    lines.append(f"{'mean':<{width}} {_percent(summary['miou'])}  {_percent(summary['mean_f1'])}"
                 f"   (pixel acc {_percent(summary['pixel_acc']).strip()})")
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Generated-pair quality, with the real-data segmenter as feature extractor (see the docstring).
LAYERS = dict(fid='backbone c5 (stride 32), global average pool',  # a dict: not config knobs
              sfid='backbone c4 (stride 16), first 7 channels, unpooled, flattened: 7*(S/16)^2',
              IS='FPN logits, softmax averaged over pixels = p(y|x)')


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), numerics as pytorch-fid's
    calculate_frechet_distance (mseitzer/pytorch-fid src/pytorch_fid/fid_score.py)."""
    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)
    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape, 'statistics differ in shape'
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():  # a singular product: offset the diagonals, as pytorch-fid
        print(f'frechet_distance: singular product; adding {eps} to the covariance diagonals')
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):  # round-off can leave a tiny imaginary part; a large one is a bug
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'frechet_distance: imaginary component {np.abs(covmean.imag).max()}')
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def stats(feats, name='features'):
    """(N, D) features -> (mu (D,), sigma (D, D)) in float64. N <= D is an error (not a NaN, not a
    silent shrinkage): the covariance has rank < D, so the distance would measure the eps offset."""
    feats = np.asarray(feats, np.float64)
    N, D = feats.shape
    if N <= D:
        raise ValueError(f'{name}: {N} samples for {D}-d features; a full-rank covariance needs '
                         f'at least {D + 1} samples')
    return feats.mean(0), np.cov(feats, rowvar=False)


def inception_score(probs, splits=10):
    """IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) on (N, K) class distributions,
    mean and std over splits as the standard IS. Each split estimates its own p(y), which is biased
    with few images, so we use at most N // 50 splits (at least 1)."""
    probs = np.asarray(probs, np.float64)
    n_splits = max(1, min(splits, len(probs) // 50))
    scores = []
    for part in np.array_split(probs, n_splits):  # (n, K) each
        p_y = part.mean(0, keepdims=True)  # (1, K) the marginal p(y) of this split
        # KL(p(y|x) || p(y)) per image; xlogy(p, q) = p log q, with 0 log 0 = 0
        kl = (special.xlogy(part, part) - special.xlogy(part, p_y)).sum(1)  # (n,)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_freq(masks, num_classes, ignore_index=255, chunk=256):
    """(K,) fraction of LABELLED pixels per class (as meta.json class_freq); chunked for memmaps."""
    counts = np.zeros(256, np.int64)  # pixels per 8-bit mask value
    for start in range(0, len(masks), chunk):
        block = np.asarray(masks[start:start + chunk], np.uint8)
        counts += np.bincount(block.ravel(), minlength=256)
    counts[ignore_index] = 0
    if counts[num_classes:].any():
        raise ValueError(f'mask values >= {num_classes} that are not {ignore_index}')
    return counts[:num_classes] / max(1, counts.sum())


def tvd(p, q):
    """Total-variation distance 0.5 * sum |p - q| between two class distributions, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def consistency(masks, preds, class_names, ignore_index=255):
    """Do the generated masks describe the generated images? summarize() of the confusion matrix
    summed over all pairs, the generated mask as truth and the real-data segmenter's prediction on
    the generated image as prediction (a perfect pair set scores miou 1)."""
    return summarize(confusion_matrix(np.asarray(preds), np.asarray(masks), len(class_names),
                                      ignore_index), class_names)


def psnr(a, b, peak=255.0):
    """Peak signal-to-noise ratio in dB between uint8 image batches (N, H, W, 3): per image, then
    the mean over images (a single perfect image would make a pooled MSE meaningless)."""
    difference = np.asarray(a, np.float64) - np.asarray(b, np.float64)  # (N, H, W, 3)
    mse = (difference ** 2).reshape(len(a), -1).mean(1)  # (N,) per image
    # (identical images: the 1e-10 floor keeps the log finite, ~148 dB)
    return float(np.mean(10 * np.log10(peak ** 2 / np.maximum(mse, 1e-10))))


def ssim(a, b, peak=255.0):
    """Mean SSIM of Wang et al. 2004 between uint8 batches (N, H, W, 3): 11x11 Gaussian window with
    sigma 1.5, K1 = 0.01, K2 = 0.03, per channel, valid positions only. Equals scikit-image 0.26's
    structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=255,
    channel_axis=-1) per image to ~1e-16 (measured in a scratch environment)."""
    window = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    window = (window / window.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, 11): one pass per channel

    def blur(v):  # the 11x11 Gaussian mean as two separable passes, along W then H
        return F.conv2d(F.conv2d(v, window, groups=3), window.transpose(2, 3), groups=3)

    a = torch.as_tensor(np.asarray(a), dtype=torch.float64).permute(0, 3, 1, 2)  # (N, 3, H, W)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64).permute(0, 3, 1, 2)
    c1 = (0.01 * peak) ** 2  # stabilise the divisions where means or variances are ~0
    c2 = (0.03 * peak) ** 2
    mu_a = blur(a)
    mu_b = blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).mean().item()


def load_segmenter(path, device='cpu'):
    """(model in eval mode, checkpoint dict) from a seg.py checkpoint (best.pt or ckpt.pt), of
    any architecture (segmenters.build)."""
    ckpt = pairs.load_checkpoint(path, 'seg.py', ['model', 'model_args'])  # bad file: one line
    try:
        model = segmenters.build(ckpt['model_args'])
        model.load_state_dict(ckpt['model'])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f'{path}: not a usable seg.py checkpoint ({type(e).__name__}: {e})')
    return model.to(device).eval(), ckpt


def seg_input_size(res, ckpt=None):
    """The segmenter sees every image at this size, upsampled bilinearly: the resolution it was
    trained at (a generated pair shows the ground of one whole real patch, so it is shown at patch
    scale), else at least 128 (a 32x32 sample would leave a 1x1 c5 map); a multiple of 32."""
    trained = None
    if ckpt:  # seg.py's image_size, or (0: the patch size) the patch size of its data
        trained = ckpt['config'].get('image_size') or ckpt.get('meta', {}).get('patch_size')
    if trained:
        return math.ceil(trained / 32) * 32
    return max(128, math.ceil(res / 32) * 32)


def has_fid_encoder(model):
    """Whether FID / sFID / IS can be computed on model: only the FPN-ResNet's encoder gives the
    paper's features, the same for every run (a checkpoint from before `arch` is an FPN too)."""
    return isinstance(model, FPN)


@torch.no_grad()
def features(model, images, *, res, size=None, batch_size=64, device='cpu', with_pred=False):
    """Run the segmenter on uint8 images (N, H, W, 3) (a memmap is read batch by batch), resized
    to res with pairs.resize_pair so that both sets compare at one resolution. Returns dict(fid
    (N, C5), sfid (N, 7 (size/16)^2), probs (N, K), pred (N, res, res) uint8 argmax, or None).
    fid, sfid and probs (for IS) are the FPN-ResNet encoder's (LAYERS): for a segmenter of another
    architecture they are None, and only pred (its logits' argmax) is computed."""
    size = size or seg_input_size(res)
    encoder = has_fid_encoder(model)
    out = dict(fid=[], sfid=[], probs=[], pred=[])
    for start in range(0, len(images), batch_size):
        # (B, res, res, 3) uint8; np.array copies: torch warns on read-only memmap slices
        x, _ = pairs.resize_pair(np.array(images[start:start + batch_size]), None, res)
        x = preprocess(x).to(device)  # (B, 3, res, res), ImageNet-normalised
        if size != res:
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
        if encoder:
            c2, c3, c4, c5 = model.backbone(x)
            out['fid'].append(c5.mean((2, 3)).float().cpu())  # (B, C5)
            # sFID as the ADM evaluator: the first 7 channels of a mid-level map, NOT pooled
            out['sfid'].append(c4[:, :7].flatten(1).float().cpu())  # (B, 7 * (size/16)^2)
            # FPN.forward = head(backbone(x)) + upsampling
            logits = model.head([c2, c3, c4, c5])  # (B, K, size/4, size/4)
        else:
            logits = model(x)  # any architecture: (B, K, size, size)
        # logits at res, where the masks live
        logits = F.interpolate(logits.float(), size=(res, res), mode='bilinear',
                               align_corners=False)  # (B, K, res, res)
        if encoder:
            out['probs'].append(logits.softmax(1).mean((2, 3)).double().cpu())  # (B, K) p(y|x)
        if with_pred:
            out['pred'].append(logits.argmax(1).byte().cpu())  # (B, res, res)
    arrays = {}
    for name in ('fid', 'sfid', 'probs'):
        arrays[name] = torch.cat(out[name]).numpy() if encoder else None
    arrays['pred'] = torch.cat(out['pred']).numpy() if with_pred else None
    return arrays


def _stats_or_error(feats, name):
    """stats(), but with N <= D computed anyway as pytorch-fid does, and flagged in the notes:
    the distance is then biased upward and comparable only between runs with the same N."""
    try:
        return stats(feats, name), ''
    except ValueError as e:
        if len(feats) < 2:  # no covariance at all
            return None, str(e)
        feats = np.asarray(feats, np.float64)
        mu_sigma = (feats.mean(0), np.cov(feats, rowvar=False))
        return mu_sigma, f'{e}; computed anyway, compare at equal N'


@torch.no_grad()
def nn_distance(queries, refs, res, device='cpu', chunk=2 ** 22):
    """(N,) distance of each query image to its nearest ref image under any of the 8 flips/rot90
    (the generator trains with them: a turned training image is a copy too), in pixels: uint8 sets
    resized to res with pairs.resize_pair, RMS of the [0, 1] RGB difference. Chunked float32 cdist
    (<= 8 chunk floats a buffer: 10k x 10k fits), the winner recomputed exactly: a copy scores 0."""
    queries, _ = pairs.resize_pair(queries, None, res)  # uint8 (N, res, res, 3), maybe memmaps
    refs, _ = pairs.resize_pair(refs, None, res)  # (M, res, res, 3)
    M = len(refs)

    def flat(images):  # uint8 (B, res, res, 3) -> float32 (B, D) in [0, 1] on device
        return torch.from_numpy(np.array(images)).to(device).flatten(1).float() / 255

    D = 3 * res * res  # the length of one flattened image
    # Chunk sizes: a pass over query_chunk queries holds their 8 maps (8 x query_chunk x D floats)
    # and their distances to every ref (8 x query_chunk x M), each at most 8 x chunk floats; one
    # cdist call reads ref_chunk refs (at most chunk floats)
    query_chunk = max(1, chunk // max(D, M))
    ref_chunk = max(1, chunk // D)
    out = []
    for start in range(0, len(queries), query_chunk):
        block = queries[start:start + query_chunk]  # (b, res, res, 3)
        mirrored = block[:, :, ::-1]  # each image flipped left-right
        # the 8 flips/rotations: 4 quarter turns of the block and 4 of its mirror image (the
        # queries are mapped rather than the refs: b queries are fewer than M refs)
        maps = [flat(np.rot90(v, k, axes=(1, 2))) for v in (block, mirrored) for k in range(4)]
        maps = torch.stack(maps)  # (8, b, D)
        distances = []
        for ref_start in range(0, M, ref_chunk):
            ref_block = flat(refs[ref_start:ref_start + ref_chunk])  # (m, D)
            distances.append(torch.cdist(maps.flatten(0, 1), ref_block))  # (8 b, m)
        distances = torch.cat(distances, 1).view(8, -1, M)  # (8, b, M)
        # the nearest (map, ref) pair of each query, over its 8 maps and all M refs
        best = distances.permute(1, 0, 2).flatten(1).argmin(1)  # (b,) index into (8, M)
        best_map = best // M
        best_ref = best % M
        query = torch.arange(len(best), device=device)
        # the winner's distance recomputed exactly (cdist's matmul form rounds): a copy scores 0
        difference = maps[best_map, query] - flat(refs[best_ref.cpu().numpy()])  # (b, D)
        out.append(difference.pow(2).mean(1).sqrt().cpu())  # (b,) RMS
    return torch.cat(out).double().numpy()


def _percentile(values, q):
    return float(np.percentile(values, q))


def memorisation(fake, train, val=None, *, res, device='cpu'):
    """Does the generator copy its training images? nn_distance of generated vs held-out real (val)
    images to them. Near-copy: a generated image at or below the val distances' 1st percentile;
    fresh samples score ~1% (as val) and a median ratio ~1, copies up to 100% and a ratio << 1."""
    fake_d = nn_distance(fake, train, res, device)  # (N,) each generated image's distance
    report = dict(space=f'pixels at {res}x{res}, RMS of [0, 1] RGB, 8 flips/rot90 of each train '
                  'image', n_train=len(train), n_fake=len(fake_d),
                  fake_median=_percentile(fake_d, 50), fake_p5=_percentile(fake_d, 5))
    if val is None or not len(val):
        return dict(report, note='no held-out real images (val split): no reference distances')
    val_d = nn_distance(val, train, res, device)  # (N_val,) the same for fresh real images
    val_median = _percentile(val_d, 50)
    val_p1 = _percentile(val_d, 1)
    return dict(report, n_val=len(val_d), val_median=val_median, val_p5=_percentile(val_d, 5),
                val_p1=val_p1, median_ratio=_percentile(fake_d, 50) / max(val_median, 1e-12),
                near_copy_threshold='val_p1', near_copy_fraction=float(np.mean(fake_d <= val_p1)))


def colour_stats(images, chunk=256):
    """Two plain statistics of uint8 images (N, H, W, 3), in 0..255 grey levels: `saturation`,
    the mean over pixels of the largest minus the smallest channel (0 for grey), and
    `sharpness`, the mean absolute 4-neighbour Laplacian of the grey image (channel mean) over
    interior pixels (0 for a flat image; blur lowers it). Grey, blurry generated images show as
    values well below the real images' at the same resolution."""
    saturation = 0.0  # summed over images, divided by their number at the end
    sharpness = 0.0
    n = len(images)
    for start in range(0, n, chunk):
        x = np.asarray(images[start:start + chunk], np.float64)  # (B, H, W, 3)
        saturation += float((x.max(-1) - x.min(-1)).mean((1, 2)).sum())
        grey = x.mean(-1)  # (B, H, W)
        laplacian = (grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1] + grey[:, 1:-1, :-2]
                     + grey[:, 1:-1, 2:] - 4 * grey[:, 1:-1, 1:-1])
        sharpness += float(np.abs(laplacian).mean((1, 2)).sum())
    return dict(saturation=saturation / max(n, 1), sharpness=sharpness / max(n, 1))


# ----------------------------------------------------------------------------------------------
# CLI: knobs are module-level globals for the configurator; all work happens under __main__.
data_dir = 'data'  # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'  # name of the prepared dataset
out_dir = ''  # '' = out-metrics-<dataset>: metrics.json and the cached real statistics
real = ''  # '' = data_dir/dataset; a prepared dataset folder or a pair folder
real_split = 'train'  # the paper compares samples to the real images the generator learned from
fake = ''  # '' = out-sample-<dataset>; a pair folder (images/, masks/, meta.json)
seg_ckpt = ''  # '' = out-seg-<dataset>/best.pt, the segmenter trained on the real data
is_splits = 10  # standard IS splits (fewer with < 500 images, see inception_score)
batch_size = 64
device = 'cuda' if torch.cuda.is_available() else 'cpu'

if __name__ == '__main__':
    config = configure(globals())
    problems = []  # every setting is checked before anything is read or written
    if batch_size < 1:
        problems.append(f'batch_size must be >= 1, got {batch_size}')
    if is_splits < 1:
        problems.append(f'is_splits must be >= 1, got {is_splits}')
    check_settings('metrics.py', problems)
    real = real or os.path.join(data_dir, dataset)
    fake = fake or f'out-sample-{dataset}'
    seg_ckpt = seg_ckpt or os.path.join(f'out-seg-{dataset}', 'best.pt')
    out_dir = out_dir or f'out-metrics-{dataset}'
    model, ckpt = load_segmenter(seg_ckpt, device)
    arch = ckpt['model_args'].get('arch', 'fpn')  # (checkpoints from before `arch` are FPNs)
    encoder = has_fid_encoder(model)  # FID / sFID / IS: on the FPN-ResNet encoder only
    if not encoder:
        print(f'{seg_ckpt}: a {arch} segmenter: FID, sFID and IS are defined on the FPN-ResNet '
              'encoder (the paper\'s protocol) and are not computed; consistency, class '
              'frequencies, colour and memorisation are')
    fake_classes = pairs.read_classes(fake)
    names = fake_classes['classes']
    ignore = fake_classes['ignore_index']
    if ckpt['model_args']['num_classes'] != len(names):
        sys.exit(f"{seg_ckpt}: {ckpt['model_args']['num_classes']} classes, {fake}: {len(names)}")
    fake_images, fake_masks, _ = pairs.load_pairs(fake)
    res = fake_images.shape[1]  # both sets are compared at the generated resolution
    if fake_images.shape[2] != res:
        sys.exit(f'{fake}: images are {fake_images.shape[1:3]}, square images expected')
    # the real images: a prepared dataset's real_split, or a pair folder; real_source is the file
    # (or folder) whose modification time keys the cache
    real_source = os.path.join(real, f'{real_split}_images.npy')
    if os.path.exists(real_source):  # a prepared dataset: memmapped, read batch by batch
        _, real_splits = pairs.load_dataset(real, splits=(real_split,))
        real_images, real_masks = real_splits[real_split]
    elif os.path.isdir(os.path.join(real, 'images')):
        real_source = real
        real_images, real_masks, _ = pairs.load_pairs(real)
    else:
        sys.exit(f'{real}: neither a prepared dataset ({real_split}_images.npy) nor a pair folder')
    size = seg_input_size(res, ckpt)

    # real statistics, cached under a key of everything they depend on
    key = json.dumps([os.path.abspath(real_source), os.path.getmtime(real_source), real_split,
                      len(real_images), os.path.abspath(seg_ckpt), os.path.getmtime(seg_ckpt),
                      res, size, LAYERS])
    key_hash = hashlib.sha1(key.encode()).hexdigest()[:12]  # 12 hex digits name the file
    cache = os.path.join(out_dir, f'real_stats_{key_hash}.npz')
    if os.path.exists(cache):
        print(f'real statistics: {cache} (cached)')
        real_stats = dict(np.load(cache))
    else:
        print(f'real statistics: {len(real_images)} images of {real} ({real_split}) -> {cache}')
        real_stats = dict(key=key, n=len(real_images),
                          freq=class_freq(real_masks, len(names), ignore))
        if encoder:
            real_features = features(model, real_images, res=res, size=size,
                                     batch_size=batch_size, device=device)
            real_stats['is_'] = inception_score(real_features['probs'], is_splits)
            for name in ('fid', 'sfid'):
                mu_sigma, note = _stats_or_error(real_features[name], f'real {name}')
                if mu_sigma is not None:
                    real_stats[f'{name}_mu'] = mu_sigma[0]
                    real_stats[f'{name}_sigma'] = mu_sigma[1]
                real_stats[f'{name}_note'] = note
        os.makedirs(out_dir, exist_ok=True)
        pairs.save_npz(cache, **real_stats)

    fake_features = features(model, fake_images, res=res, size=size, batch_size=batch_size,
                             device=device, with_pred=True)
    report = {}  # becomes metrics.json
    notes = []  # why a number is missing or biased
    for name in ('fid', 'sfid'):
        if not encoder:
            report[name] = None
            continue
        mu_sigma, note = _stats_or_error(fake_features[name], f'fake {name}')
        if mu_sigma is not None and f'{name}_mu' in real_stats:
            report[name] = frechet_distance(*mu_sigma, real_stats[f'{name}_mu'],
                                            real_stats[f'{name}_sigma'])
        else:
            report[name] = None
        if note:
            notes.append(note)
        real_note = str(real_stats.get(f'{name}_note', ''))  # (a 0-d array when cached)
        if real_note:
            notes.append(real_note)
    # memorisation: against the train split G learned from and, for reference, the val split;
    # real data that is a pair folder (no splits) is its own training set
    held = {}
    for split in ('train', 'val'):
        if os.path.exists(os.path.join(real, f'{split}_images.npy')):
            _, split_data = pairs.load_dataset(real, splits=(split,))
            held[split] = split_data[split][0]  # the images
    mem = memorisation(fake_images, held.get('train', real_images), held.get('val'), res=res,
                       device=device)
    report['memorisation'] = mem
    if encoder:
        is_mean, is_std = inception_score(fake_features['probs'], is_splits)
    else:
        is_mean, is_std = None, None
    report['is_mean'] = is_mean
    report['is_std'] = is_std
    # colour statistics and a picture of both sets, each at the generated resolution
    if real_images.shape[1] == res:
        real_small, real_small_masks = real_images, real_masks
    else:  # the first 1024 real pairs are plenty for two means and a grid
        real_small, real_small_masks = pairs.resize_pair(real_images[:1024], real_masks[:1024],
                                                         res)
    report['colour_real'] = colour_stats(real_small)
    report['colour_fake'] = colour_stats(fake_images)
    palette = fake_classes['palette']
    n_show = min(8, len(real_small), len(fake_images))
    # the first n_show of each, small pairs shown larger by nearest neighbour (32 -> 4x)
    real_grid = pairs.make_grid(real_small[:n_show], real_small_masks[:n_show], palette, nrow=4,
                                min_tile=128)
    fake_grid = pairs.make_grid(fake_images[:n_show], fake_masks[:n_show], palette, nrow=4,
                                min_tile=128)
    band = np.full((8, real_grid.shape[1], 3), 255, np.uint8)  # white, between the two sets
    grid = np.concatenate([real_grid, band, fake_grid])  # real pairs above, generated below
    if encoder:
        real_is_mean, real_is_std = real_stats['is_']
        report['is_real_mean'] = float(real_is_mean)
        report['is_real_std'] = float(real_is_std)
    else:
        report['is_real_mean'] = report['is_real_std'] = None
    try:
        cons = consistency(fake_masks, fake_features['pred'], names, ignore)
        freq = class_freq(fake_masks, len(names), ignore)
    except ValueError as e:
        sys.exit(f'{fake}: bad masks ({e})')
    extractor = dict(LAYERS)  # the layers, with the feature sizes of this run
    for name in ('fid', 'sfid'):
        if encoder:
            extractor[name] = f"{LAYERS[name]} -> {fake_features[name].shape[1]}-d"
        else:
            extractor[name] = f'not computed: {arch} is not the FPN-ResNet encoder'
    extractor.update(ckpt=seg_ckpt, iter_num=ckpt.get('iter_num'), model_args=ckpt['model_args'])
    report.update(consistency_miou=cons['miou'], consistency_mean_f1=cons['mean_f1'],
                  consistency_iou=cons['iou'], class_freq_tvd=tvd(freq, real_stats['freq']),
                  class_freq_fake=dict(zip(names, freq.tolist())),
                  class_freq_real=dict(zip(names, real_stats['freq'].tolist())),
                  n_fake=len(fake_images), n_real=int(real_stats['n']), resolution=res,
                  seg_input_size=size, real=real, real_split=real_split, fake=fake,
                  feature_extractor=extractor, notes=notes, config=config)

    def two_decimals(v):  # FID and IS, or 'n/a' where they could not be computed
        return 'n/a' if v is None else f'{v:.2f}'

    print(f"fake {fake}: {len(fake_images)} pairs | real {real} ({real_split}): "
          f"{report['n_real']} images | both at {res}x{res}, segmenter input {size}x{size}")
    print(f"features: {seg_ckpt} (iter {extractor['iter_num']}, "
          f"{segmenters.describe(ckpt['model_args'])}) | FID: {extractor['fid']} | sFID: "
          f"{extractor['sfid']}")
    print(f"FID {two_decimals(report['fid'])} | sFID {two_decimals(report['sfid'])} | IS "
          f"{two_decimals(report['is_mean'])} +- {two_decimals(report['is_std'])} (real "
          f"{two_decimals(report['is_real_mean'])}) | consistency mIoU {100 * cons['miou']:.2f} "
          f"F1 {100 * cons['mean_f1']:.2f} | class-freq TVD {report['class_freq_tvd']:.4f}")
    mem_numbers = ', '.join(f'{k} {v:.4g}' for k, v in mem.items() if isinstance(v, float))
    mem_line = f"memorisation ({mem['space']}): {mem_numbers}"
    if 'note' in mem:
        mem_line += f" ({mem['note']})"
    print(mem_line)
    print('consistency per class (generated mask = truth, segmenter on the generated image):')
    print(format_table(cons))
    print(f"colour (0..255): saturation real {report['colour_real']['saturation']:.2f}, "
          f"generated {report['colour_fake']['saturation']:.2f} | sharpness (mean |Laplacian|) "
          f"real {report['colour_real']['sharpness']:.2f}, generated "
          f"{report['colour_fake']['sharpness']:.2f}")
    for note in notes:
        print(f'warning: {note}')
    os.makedirs(out_dir, exist_ok=True)
    pairs.save_png(grid, os.path.join(out_dir, 'real_vs_generated.png'))
    path = os.path.join(out_dir, 'metrics.json')
    pairs.save_json(report, path, indent=2)  # NaN (IoU of an absent class) -> null
    print(f'wrote {path}')
