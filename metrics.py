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
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg, special

import pairs
from configurator import configure
from fpn import FPN, preprocess

# ----------------------------------------------------------------------------------------------
# Segmentation metrics (paper Tab. 2 / Tab. 6): per-class IoU and F1, class means with background.


def confusion_matrix(pred, target, num_classes, ignore_index=255):
    """(K, K) long tensor, rows = truth, cols = prediction; pixels whose truth is ignore dropped."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    assert pred.shape == target.shape, f"pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
    K, keep = num_classes, target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    # an out-of-range label would silently land in another class's cell of the bincount
    if t.numel() and (t.min() < 0 or t.max() >= K or p.min() < 0 or p.max() >= K):
        raise ValueError(f"labels must lie in [0, {K}) (or be {ignore_index} in the truth); got "
                         f"truth {t.min().item()}..{t.max().item()}, "
                         f"prediction {p.min().item()}..{p.max().item()}")
    return torch.bincount(t * K + p, minlength=K * K).reshape(K, K)  # (K, K)


def all_reduce_cm(cm):
    """Sum a confusion matrix over DDP ranks in place (a no-op without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(cm, op=torch.distributed.ReduceOp.SUM)
    return cm


def _tp_fp_fn(cm):
    cm = torch.as_tensor(cm).double()
    tp = cm.diag()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp  # fp: predicted k but not k; fn: k missed


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
    iou, f1 = iou_per_class(cm), f1_per_class(cm)
    assert len(class_names) == len(iou), f"{len(class_names)} names for {len(iou)} classes"
    cm = torch.as_tensor(cm).double()
    return dict(miou=iou.nanmean().item(), mean_f1=f1.nanmean().item(),
                iou=dict(zip(class_names, iou.tolist())), f1=dict(zip(class_names, f1.tolist())),
                pixel_acc=(cm.diag().sum() / cm.sum()).item())


def format_table(summary):
    """Per-class IoU / F1 in percent, as the paper's Tab. 6 prints them ('-' = absent class)."""
    pct = lambda v: '    -' if v != v else f"{100 * v:5.2f}"  # v != v is the NaN test
    width = max([5] + [len(n) for n in summary['iou']])
    lines = [f"{'class':<{width}}   IoU     F1"]
    lines += [f"{n:<{width}} {pct(v)}  {pct(summary['f1'][n])}" for n, v in summary['iou'].items()]
    lines.append(f"{'mean':<{width}} {pct(summary['miou'])}  {pct(summary['mean_f1'])}"
                 f"   (pixel acc {pct(summary['pixel_acc']).strip()})")
    return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------
# Generated-pair quality, with the real-data segmenter as feature extractor (see the docstring).
LAYERS = dict(fid='backbone c5 (stride 32), global average pool',  # a dict: not config knobs
              sfid='backbone c4 (stride 16), first 7 channels, unpooled, flattened: 7*(S/16)^2',
              IS='FPN logits, softmax averaged over pixels = p(y|x)')


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), numerics as pytorch-fid's
    calculate_frechet_distance (mseitzer/pytorch-fid src/pytorch_fid/fid_score.py)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
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
    n = max(1, min(splits, len(probs) // 50))
    kl = lambda p: (special.xlogy(p, p) - special.xlogy(p, p.mean(0, keepdims=True))).sum(1)
    scores = [np.exp(kl(part).mean()) for part in np.array_split(probs, n)]  # xlogy: 0 log 0 = 0
    return float(np.mean(scores)), float(np.std(scores))


def class_freq(masks, num_classes, ignore_index=255, chunk=256):
    """(K,) fraction of LABELLED pixels per class (as meta.json class_freq); chunked for memmaps."""
    counts = np.zeros(256, np.int64)
    for s in range(0, len(masks), chunk):
        counts += np.bincount(np.asarray(masks[s:s + chunk], np.uint8).ravel(), minlength=256)
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
    mse = ((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(peak ** 2 / np.maximum(mse, 1e-10))))


def ssim(a, b, peak=255.0):
    """Mean SSIM of Wang et al. 2004 between uint8 batches (N, H, W, 3): 11x11 Gaussian window with
    sigma 1.5, K1 = 0.01, K2 = 0.03, per channel, valid positions only. Equals scikit-image 0.26's
    structural_similarity(gaussian_weights=True, use_sample_covariance=False, data_range=255,
    channel_axis=-1) per image to ~1e-16 (measured in a scratch environment)."""
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, 11): one separable pass per channel
    blur = lambda v: F.conv2d(F.conv2d(v, g, groups=3), g.transpose(2, 3), groups=3)
    a, b = (torch.as_tensor(np.asarray(v), dtype=torch.float64).permute(0, 3, 1, 2) for v in (a, b))
    c1, c2, mu_a, mu_b = (0.01 * peak) ** 2, (0.03 * peak) ** 2, blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    return (num / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))).mean().item()


def load_segmenter(path, device='cpu'):
    """(model in eval mode, checkpoint dict) from a seg.py checkpoint (best.pt or ckpt.pt)."""
    ckpt = pairs.load_checkpoint(path, 'seg.py', ['model', 'model_args'])  # bad file: one line
    try:
        model = FPN(**ckpt['model_args'])
        model.load_state_dict(ckpt['model'])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f'{path}: not a usable seg.py checkpoint ({type(e).__name__}: {e})')
    return model.to(device).eval(), ckpt


def seg_input_size(res, ckpt=None):
    """The segmenter sees every image at this size, upsampled bilinearly: the resolution it was
    trained at (a generated pair shows the ground of one whole real patch, so it is shown at patch
    scale), else at least 128 (a 32x32 sample would leave a 1x1 c5 map); a multiple of 32."""
    trained = ckpt and (ckpt['config'].get('image_size') or ckpt.get('meta', {}).get('patch_size'))
    return -(-trained // 32) * 32 if trained else max(128, -(-res // 32) * 32)


@torch.no_grad()
def features(model, images, *, res, size=None, batch_size=64, device='cpu', with_pred=False):
    """Run the segmenter on uint8 images (N, H, W, 3) (a memmap is read batch by batch), resized
    to res with pairs.resize_pair so that both sets compare at one resolution. Returns dict(fid
    (N, C5), sfid (N, 7 (size/16)^2), probs (N, K), pred (N, res, res) uint8 argmax, or None)."""
    size = size or seg_input_size(res)
    out = dict(fid=[], sfid=[], probs=[], pred=[] if with_pred else None)
    for s in range(0, len(images), batch_size):
        # (B, res, res, 3) uint8; np.array copies: torch warns on read-only memmap slices
        x = pairs.resize_pair(np.array(images[s:s + batch_size]), None, res)[0]
        x = preprocess(x).to(device)  # (B, 3, res, res), ImageNet-normalised
        if size != res:
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
        c2, c3, c4, c5 = model.backbone(x)
        out['fid'].append(c5.mean((2, 3)).float().cpu())  # (B, C5)
        # sFID as the ADM evaluator: the first 7 channels of a mid-level map, NOT pooled
        out['sfid'].append(c4[:, :7].flatten(1).float().cpu())  # (B, 7 * (size/16)^2)
        # FPN.forward = head(backbone(x)) + upsampling; logits at res, where the masks live
        logits = F.interpolate(model.head([c2, c3, c4, c5]).float(), size=(res, res),
                               mode='bilinear', align_corners=False)  # (B, K, res, res)
        out['probs'].append(logits.softmax(1).mean((2, 3)).double().cpu())  # (B, K) p(y|x)
        if with_pred:
            out['pred'].append(logits.argmax(1).byte().cpu())  # (B, res, res)
    return {k: None if v is None else torch.cat(v).numpy() for k, v in out.items()}


def _stats_or_error(feats, name):
    """stats(), but with N <= D computed anyway as pytorch-fid does, and flagged in the notes:
    the distance is then biased upward and comparable only between runs with the same N."""
    try:
        return stats(feats, name), ''
    except ValueError as e:
        if len(feats) < 2:
            return None, str(e)
        f = np.asarray(feats, np.float64)
        return (f.mean(0), np.cov(f, rowvar=False)), f'{e}; computed anyway, compare at equal N'


@torch.no_grad()
def nn_distance(queries, refs, res, device='cpu', chunk=2 ** 22):
    """(N,) distance of each query image to its nearest ref image under any of the 8 flips/rot90
    (the generator trains with them: a turned training image is a copy too), in pixels: uint8 sets
    resized to res with pairs.resize_pair, RMS of the [0, 1] RGB difference. Chunked float32 cdist
    (<= 8 chunk floats a buffer: 10k x 10k fits), the winner recomputed exactly: a copy scores 0."""
    q, r = (pairs.resize_pair(x, None, res)[0] for x in (queries, refs))  # uint8, maybe memmaps
    flat = lambda x: torch.from_numpy(np.array(x)).to(device).flatten(1).float() / 255  # (B, D)
    D, out = 3 * res * res, []
    B, C = max(1, chunk // max(D, len(r))), max(1, chunk // D)  # query, ref chunk sizes
    for s in range(0, len(q), B):
        qs = torch.stack([flat(np.rot90(v, k, (1, 2))) for v in (q[s:s + B], q[s:s + B, :, ::-1])
                          for k in range(4)])  # (8, b, D): the query mapped, not the ref
        d = torch.cat([torch.cdist(qs.flatten(0, 1), flat(r[t:t + C]))
                       for t in range(0, len(r), C)], 1).view(8, -1, len(r))  # (8, b, M)
        j = d.permute(1, 0, 2).flatten(1).argmin(1)  # (b,) best (map, ref) pair per query
        g, j, b = j // len(r), j % len(r), torch.arange(len(j), device=device)  # map, ref, query
        out.append((qs[g, b] - flat(r[j.cpu().numpy()])).pow(2).mean(1).sqrt().cpu())
    return torch.cat(out).double().numpy()


def memorisation(fake, train, val=None, *, res, device='cpu'):
    """Does the generator copy its training images? nn_distance of generated vs held-out real (val)
    images to them. Near-copy: a generated image at or below the val distances' 1st percentile;
    fresh samples score ~1% (as val) and a median ratio ~1, copies up to 100% and a ratio << 1."""
    pct = lambda d, p: float(np.percentile(d, p))
    d = nn_distance(fake, train, res, device)
    rep = dict(space=f'pixels at {res}x{res}, RMS of [0, 1] RGB, 8 flips/rot90 of each train image',
               n_train=len(train), n_fake=len(d), fake_median=pct(d, 50), fake_p5=pct(d, 5))
    if val is None or not len(val):
        return dict(rep, note='no held-out real images (val split): no reference distances')
    v = nn_distance(val, train, res, device)
    return dict(rep, n_val=len(v), val_median=pct(v, 50), val_p5=pct(v, 5), val_p1=pct(v, 1),
                median_ratio=pct(d, 50) / max(pct(v, 50), 1e-12), near_copy_threshold='val_p1',
                near_copy_fraction=float(np.mean(d <= pct(v, 1))))


def colour_stats(images, chunk=256):
    """Two plain statistics of uint8 images (N, H, W, 3), in 0..255 grey levels: `saturation`,
    the mean over pixels of the largest minus the smallest channel (0 for grey), and
    `sharpness`, the mean absolute 4-neighbour Laplacian of the grey image (channel mean) over
    interior pixels (0 for a flat image; blur lowers it). Grey, blurry generated images show as
    values well below the real images' at the same resolution."""
    saturation, sharpness, n = 0.0, 0.0, len(images)
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
    real = real or os.path.join(data_dir, dataset)
    fake = fake or f'out-sample-{dataset}'
    seg_ckpt = seg_ckpt or os.path.join(f'out-seg-{dataset}', 'best.pt')
    out_dir = out_dir or f'out-metrics-{dataset}'
    model, ckpt = load_segmenter(seg_ckpt, device)
    names, ignore = (pairs.read_classes(fake)[k] for k in ('classes', 'ignore_index'))
    if ckpt['model_args']['num_classes'] != len(names):
        sys.exit(f"{seg_ckpt}: {ckpt['model_args']['num_classes']} classes, {fake}: {len(names)}")
    f_img, f_mask, _ = pairs.load_pairs(fake)
    res = f_img.shape[1]
    if f_img.shape[2] != res:
        sys.exit(f'{fake}: images are {f_img.shape[1:3]}, square images expected')
    src = os.path.join(real, f'{real_split}_images.npy')
    if os.path.exists(src):  # a prepared dataset: memmapped, read batch by batch
        r_img, r_mask = pairs.load_dataset(real, splits=(real_split,))[1][real_split]
    elif os.path.isdir(os.path.join(real, 'images')):
        src = real
        r_img, r_mask, _ = pairs.load_pairs(real)
    else:
        sys.exit(f'{real}: neither a prepared dataset ({real_split}_images.npy) nor a pair folder')
    size = seg_input_size(res, ckpt)

    # real statistics, cached under a key of everything they depend on
    key = json.dumps([os.path.abspath(src), os.path.getmtime(src), real_split, len(r_img),
                      os.path.abspath(seg_ckpt), os.path.getmtime(seg_ckpt), res, size, LAYERS])
    cache = os.path.join(out_dir, f'real_stats_{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz')
    if os.path.exists(cache):
        print(f'real statistics: {cache} (cached)')
        rs = dict(np.load(cache))
    else:
        print(f'real statistics: {len(r_img)} images of {real} ({real_split}) -> {cache}')
        rf = features(model, r_img, res=res, size=size, batch_size=batch_size, device=device)
        rs = dict(key=key, n=len(r_img), freq=class_freq(r_mask, len(names), ignore),
                  is_=inception_score(rf['probs'], is_splits))
        for name in ('fid', 'sfid'):
            ms, err = _stats_or_error(rf[name], f'real {name}')
            rs.update({f'{name}_mu': ms[0], f'{name}_sigma': ms[1]} if ms else {})
            rs[f'{name}_note'] = err
        os.makedirs(out_dir, exist_ok=True)
        pairs.save_npz(cache, **rs)

    ff = features(model, f_img, res=res, size=size, batch_size=batch_size, device=device,
                  with_pred=True)
    rep, notes = {}, []
    for name in ('fid', 'sfid'):
        ms, err = _stats_or_error(ff[name], f'fake {name}')
        ok = ms is not None and f'{name}_mu' in rs
        rep[name] = frechet_distance(*ms, rs[f'{name}_mu'], rs[f'{name}_sigma']) if ok else None
        notes += [n for n in (err, str(rs.get(f'{name}_note', ''))) if n]
    held = {s: pairs.load_dataset(real, splits=(s,))[1][s][0] for s in ('train', 'val')
            if os.path.exists(os.path.join(real, f'{s}_images.npy'))}  # else D = --real
    rep['memorisation'] = mem = memorisation(f_img, held.get('train', r_img), held.get('val'),
                                             res=res, device=device)
    rep['is_mean'], rep['is_std'] = inception_score(ff['probs'], is_splits)
    # colour statistics and a picture of both sets, each at the generated resolution
    if r_img.shape[1] == res:
        r_small, r_small_mask = r_img, r_mask
    else:  # the first 1024 real pairs are plenty for two means and a grid
        r_small, r_small_mask = pairs.resize_pair(r_img[:1024], r_mask[:1024], res)
    rep['colour_real'], rep['colour_fake'] = colour_stats(r_small), colour_stats(f_img)
    palette = pairs.read_classes(fake)['palette']
    n_show = min(8, len(r_small), len(f_img))
    zoom = max(1, 128 // res)  # small pairs shown larger, by nearest neighbour (32 -> 4x)
    big = lambda a: np.asarray(a[:n_show]).repeat(zoom, axis=1).repeat(zoom, axis=2)
    real_grid = pairs.make_grid(big(r_small), big(r_small_mask), palette, nrow=4)
    fake_grid = pairs.make_grid(big(f_img), big(f_mask), palette, nrow=4)
    band = np.full((8, real_grid.shape[1], 3), 255, np.uint8)  # white, between the two sets
    grid = np.concatenate([real_grid, band, fake_grid])  # real pairs above, generated below
    rep['is_real_mean'], rep['is_real_std'] = (float(v) for v in rs['is_'])
    try:
        cons = consistency(f_mask, ff['pred'], names, ignore)
        freq = class_freq(f_mask, len(names), ignore)
    except ValueError as e:
        sys.exit(f'{fake}: bad masks ({e})')
    extractor = dict(LAYERS, **{n: f"{LAYERS[n]} -> {ff[n].shape[1]}-d" for n in ('fid', 'sfid')},
                     ckpt=seg_ckpt, iter_num=ckpt.get('iter_num'), model_args=ckpt['model_args'])
    rep.update(consistency_miou=cons['miou'], consistency_mean_f1=cons['mean_f1'],
               consistency_iou=cons['iou'], class_freq_tvd=tvd(freq, rs['freq']),
               class_freq_fake=dict(zip(names, freq.tolist())),
               class_freq_real=dict(zip(names, rs['freq'].tolist())), n_fake=len(f_img),
               n_real=int(rs['n']), resolution=res, seg_input_size=size, real=real,
               real_split=real_split, fake=fake, feature_extractor=extractor, notes=notes,
               config=config)

    fmt = lambda v: 'n/a' if v is None else f'{v:.2f}'
    print(f"fake {fake}: {len(f_img)} pairs | real {real} ({real_split}): {rep['n_real']} images"
          f" | both at {res}x{res}, segmenter input {size}x{size}")
    print(f"features: {seg_ckpt} (iter {extractor['iter_num']}, FPN-ResNet"
          f"{ckpt['model_args'].get('depth')}) | FID: {extractor['fid']} | sFID: "
          f"{extractor['sfid']}")
    print(f"FID {fmt(rep['fid'])} | sFID {fmt(rep['sfid'])} | IS {fmt(rep['is_mean'])} +- "
          f"{fmt(rep['is_std'])} (real {fmt(rep['is_real_mean'])}) | consistency mIoU "
          f"{100 * cons['miou']:.2f} F1 {100 * cons['mean_f1']:.2f} | class-freq TVD "
          f"{rep['class_freq_tvd']:.4f}")
    print(f"memorisation ({mem['space']}): " + ', '.join(f'{k} {v:.4g}' for k, v in mem.items()
          if isinstance(v, float)) + (f" ({mem['note']})" if 'note' in mem else ''))
    print('consistency per class (generated mask = truth, segmenter on the generated image):')
    print(format_table(cons))
    print(f"colour (0..255): saturation real {rep['colour_real']['saturation']:.2f}, generated "
          f"{rep['colour_fake']['saturation']:.2f} | sharpness (mean |Laplacian|) real "
          f"{rep['colour_real']['sharpness']:.2f}, generated {rep['colour_fake']['sharpness']:.2f}")
    for n in notes:
        print(f'warning: {n}')
    os.makedirs(out_dir, exist_ok=True)
    pairs.save_png(grid, os.path.join(out_dir, 'real_vs_generated.png'))
    path = os.path.join(out_dir, 'metrics.json')
    pairs.save_json(rep, path, indent=2)  # NaN (IoU of an absent class) -> null
    print(f'wrote {path}')
