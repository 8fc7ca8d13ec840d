"""
Choose and clean generated pairs before they train the segmenter (beyond the paper: SatSynth uses
every pair as it comes). Reads a pair folder of sample.py or superres.py, writes a new pair folder
with the same stems; seg.py trains on it like any other (255 = ignore: no loss on those pixels).
Each option is off by default; they run in this order:

1. min_area: small-component cleanup (as JoDiffusion, 2026): a 4-connected region of one class
   under min_area pixels takes the most common label of its 1-px ring (8-neighbours around it).
2. margin: bit-margin ignore (ours): a pixel whose decoded code sits within `margin` of a decision
   boundary (sample.py --save_margin: (d2^2 - d1^2) / 4 over the nearest two valid codes, i.e.
   the smallest |analog bit|) becomes ignore.
3. seg_ckpt + tol: segmenter-consistency filter (FreeMask, Yang et al. 2023,
   preprocess/filter.py): with the segmenter trained on the real data, a generated pixel of class
   c whose cross-entropy against its own mask exceeds tol x the mean loss of class c on the real
   train split becomes ignore. min_miou > 0 also drops whole pairs whose consistency mIoU (the
   segmenter's prediction vs the generated mask, classes present in either) is below it.
4. keep: rare-class selection: keep `keep` of the (pool of) pairs, greedily, each step adding the
   pair that brings the class shares of D + the kept pairs closest (total variation) to a
   target: D's class shares flattened by `temperature` (p^(1/T), renormalised; T = 1: D's own).

$ python sample.py --num_samples=576 --save_margin=True --out_dir=out-pool
$ python clean.py --in_dir=out-pool --out_dir=out-clean --min_area=4 --margin=0.1 \\
      --seg_ckpt=out-seg-toy/best.pt --tol=1.25 --keep=192 --temperature=2

Writes out_dir/images/, masks/, meta.json (the source's, plus `clean`), config.json, clean.json
(what each option changed: ignore shares, relabelled and dropped pairs, class shares before and
after) and grid.png (ignore in magenta). Measured on the low-data protocol: docs/RESULTS.md.
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

import metrics
import pairs
from configurator import configure
from fpn import preprocess

# -----------------------------------------------------------------------------
in_dir = ''  # '' = out-sample-<dataset>: the pairs to clean (the pool, with keep)
out_dir = ''  # '' = out-clean-<dataset>
data_dir = 'data'  # the real data D: class shares (keep) and per-class losses (tol)
dataset = 'toy'
min_area = 0  # > 0: regions under this many pixels take their ring's label
margin = 0.0  # > 0: pixels with bit margin < this become ignore
seg_ckpt = ''  # a seg.py checkpoint trained on D: enables the consistency filter
tol = 1.25  # FreeMask's tolerance: ignore where loss > tol x the class's mean loss on D
min_miou = 0.0  # > 0 (with seg_ckpt): drop pairs whose consistency mIoU is below it
keep = 0  # > 0: keep this many pairs, chosen for their classes
temperature = 2.0  # keep's target: D's class shares ^ (1 / temperature), renormalised
batch_size = 64
device = 'cuda' if torch.cuda.is_available() else 'cpu'
# -----------------------------------------------------------------------------


def cleanup(mask, min_area, ignore_index=255):
    """Regions (4-connected, one class) under min_area px take the commonest label of their 1-px
    ring (8-neighbours; ties to the smaller label; ignore pixels do not vote). Decided on the
    input mask, so the result does not depend on the order of the regions."""
    out = mask.copy()
    for c in np.unique(mask):
        if c == ignore_index:
            continue
        regions, n = ndimage.label(mask == c)
        areas = np.bincount(regions.ravel(), minlength=n + 1)
        for r, box in enumerate(ndimage.find_objects(regions), 1):
            if areas[r] >= min_area:
                continue
            box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)  # + the ring
            region, near = regions[box] == r, mask[box]
            ring = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool)) & ~region
            votes = np.bincount(near[ring][near[ring] != ignore_index], minlength=256)
            if votes.any():
                out[box][region] = votes.argmax()  # out[box] is a view
    return out


@torch.no_grad()
def pixel_loss(model, images, masks, size, ignore_index=255, *, batch_size=64, device='cpu'):
    """Per-pixel cross-entropy (N, H, W) and prediction (N, H, W) of the segmenter on uint8
    images (N, H, W, 3) seen at size x size (its training resolution), logits back at H x W,
    batch_size images at a time on `device`."""
    losses, preds = [], []
    for s in range(0, len(images), batch_size):
        x = preprocess(np.array(images[s:s + batch_size])).to(device)
        y = torch.as_tensor(np.array(masks[s:s + batch_size])).long().to(device)
        H, W = y.shape[1:]
        if size != H:
            x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False)
        logits = model(x).float()
        logits = F.interpolate(logits, size=(H, W), mode='bilinear', align_corners=False)
        losses.append(F.cross_entropy(logits, y, ignore_index=ignore_index, reduction='none').cpu())
        preds.append(logits.argmax(1).cpu())
    return torch.cat(losses).numpy(), torch.cat(preds).numpy()


def class_mean_loss(loss, masks, K):
    """Mean loss of each class's pixels (K,); NaN for a class with no pixels."""
    y = np.asarray(masks).ravel()
    keep = y < K
    n = np.bincount(y[keep], minlength=K)
    total = np.bincount(y[keep], weights=loss.ravel()[keep], minlength=K)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def consistency_ignore(loss, masks, ref, tol, ignore_index=255):
    """FreeMask's rule: masks with 255 where a pixel's loss > tol x ref[its class] (ref (K,): the
    class's mean loss on real data; NaN, a class absent from it: kept). Ignore pixels stay."""
    thresh = np.append(tol * np.nan_to_num(np.asarray(ref, np.float64), nan=np.inf), np.inf)
    labels = np.where(masks == ignore_index, len(ref), masks)  # -> the last threshold, inf
    return np.where(loss > thresh[labels], ignore_index, masks).astype(np.uint8)


def pair_miou(pred, mask, K):
    """mIoU of one prediction vs one mask over the classes present in either (ignore dropped)."""
    cm = metrics.confusion_matrix(torch.as_tensor(pred), torch.as_tensor(mask), K).numpy()
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    return float((np.diag(cm)[union > 0] / union[union > 0]).mean()) if union.any() else 1.0


def select(counts, base, target, keep):
    """Greedy: indices of `keep` rows of counts (P, K) whose sum with base (K,) has class shares
    closest (total variation) to target (K,), adding one row at a time (ties: the lowest index)."""
    chosen, total, free = [], base.astype(np.float64), np.ones(len(counts), bool)
    for _ in range(keep):
        cand = total[None] + counts  # (P, K)
        tv = 0.5 * np.abs(cand / np.maximum(cand.sum(1, keepdims=True), 1) - target).sum(1)
        tv[~free] = np.inf
        j = int(np.argmin(tv))
        chosen.append(j)
        free[j], total = False, total + counts[j]
    return sorted(chosen)


def shares(counts):
    return counts / max(counts.sum(), 1)


if __name__ == '__main__':
    config = configure(globals())
    in_dir = in_dir or f'out-sample-{dataset}'
    out_dir = out_dir or f'out-clean-{dataset}'
    config.update(in_dir=in_dir, out_dir=out_dir)
    if min(min_area, margin, tol, min_miou, keep, batch_size - 1) < 0 or temperature <= 0 \
            or (min_miou and not seg_ckpt):
        sys.exit(f'clean.py: want min_area, margin, min_miou, keep >= 0, tol >= 0, temperature > 0,'
                 f' batch_size >= 1 and --seg_ckpt with --min_miou; got {min_area}, {margin}, '
                 f'{min_miou}, {keep}, {tol}, {temperature}, {batch_size}')
    if os.path.abspath(in_dir) == os.path.abspath(out_dir):
        sys.exit(f'clean.py: --out_dir {out_dir} is --in_dir; want a new folder')
    info = pairs.read_classes(in_dir)
    K, ignore, palette = info['num_classes'], info['ignore_index'], info['palette']
    images, masks, stems = pairs.load_pairs(in_dir)
    if keep > len(stems):
        sys.exit(f'{in_dir}: {len(stems)} pairs, cannot keep {keep}')
    if ((masks >= K) & (masks != ignore)).any():
        sys.exit(f'{in_dir}: mask values outside 0..{K - 1} and {ignore}')
    if margin > 0:
        with open(os.path.join(in_dir, 'meta.json')) as f:
            if not json.load(f).get('margins'):
                sys.exit(f'{in_dir}: no margins/ (sample with --save_margin=True) for --margin')
    real = os.path.join(data_dir, dataset)
    model = None
    if seg_ckpt:  # everything that can fail is checked before anything is written
        model, ckpt = metrics.load_segmenter(seg_ckpt, device)
        if ckpt['model_args']['num_classes'] != K:
            sys.exit(f"{seg_ckpt}: {ckpt['model_args']['num_classes']} classes, {in_dir}: {K}")
    if seg_ckpt or keep:  # D at the pairs' resolution, as seg.py sees it beside them
        meta, data = pairs.load_dataset(real, size=masks.shape[1], splits=('train',))
        if meta['num_classes'] != K:
            sys.exit(f"{real}: {meta['num_classes']} classes, {in_dir}: {K}")
    n_pix = masks.size
    labelled = lambda m: int((m != ignore).sum())
    rep = dict(n_in=len(stems), pixels=n_pix, ignore_in=int((masks == ignore).sum()) / n_pix)

    if min_area > 0:
        cleaned = np.stack([cleanup(m, min_area, ignore) for m in masks])
        rep['min_area'] = dict(relabelled=int((cleaned != masks).sum()) / n_pix)
        masks = cleaned
    if margin > 0:
        low = np.stack([pairs.read_margin(in_dir, s) for s in stems]) < margin
        rep['margin'] = dict(ignored=int((low & (masks != ignore)).sum()) / n_pix)
        masks = np.where(low, ignore, masks).astype(np.uint8)
    if model is not None:
        size = metrics.seg_input_size(masks.shape[1], ckpt)
        r_img, r_mask = data['train']
        ref = class_mean_loss(pixel_loss(model, r_img, r_mask, size, ignore,
                                         batch_size=batch_size, device=device)[0], r_mask, K)
        loss, pred = pixel_loss(model, images, masks, size, ignore, batch_size=batch_size,
                                device=device)
        mious = np.array([pair_miou(p, m, K) for p, m in zip(pred, masks)])  # as generated
        before = labelled(masks)
        masks = consistency_ignore(loss, masks, ref, tol, ignore)
        rep['consistency'] = dict(seg_ckpt=seg_ckpt, tol=tol, real_class_loss=ref.tolist(),
                                  ignored=(before - labelled(masks)) / n_pix,
                                  pair_miou_mean=float(mious.mean()))
        if min_miou > 0:
            ok = mious >= min_miou
            rep['consistency'].update(min_miou=min_miou, dropped=int((~ok).sum()))
            images, masks, stems = images[ok], masks[ok], [s for s, o in zip(stems, ok) if o]
            if keep > len(stems):
                sys.exit(f'{in_dir}: {len(stems)} pairs left after --min_miou, cannot keep {keep}')
    if keep:
        count = lambda m: np.bincount(m.ravel(), minlength=256)[:K].astype(np.float64)
        res = masks.shape[1]
        base = np.asarray(meta['class_freq']['train']) * meta['counts']['train'] * res * res
        target = shares(shares(base) ** (1 / temperature))
        counts = np.stack([count(m) for m in masks])
        idx = select(counts, base, target, keep)
        first = base + counts[:keep].sum(0)  # what the first `keep` pairs would have given
        after = base + counts[idx].sum(0)
        rep['keep'] = dict(keep=keep, pool=len(stems), temperature=temperature,
                           target=target.tolist(), real=shares(base).tolist(),
                           union_first=shares(first).tolist(), union_kept=shares(after).tolist(),
                           tvd_first=0.5 * float(np.abs(shares(first) - target).sum()),
                           tvd_kept=0.5 * float(np.abs(shares(after) - target).sum()))
        images, masks, stems = images[idx], masks[idx], [stems[i] for i in idx]
    rep.update(n_out=len(stems), ignore_out=int((masks == ignore).sum()) / max(masks.size, 1),
               class_shares_out=shares(np.bincount(masks.ravel(), minlength=256)[:K]).tolist(),
               classes=info['classes'], config=config)

    # write: a temp folder renamed into place, so a failed run leaves no half folder
    head, name = os.path.split(os.path.abspath(out_dir))
    tmp = os.path.join(head, f'.{name}.tmp-{os.getpid()}')
    for image, mask, stem in zip(images, masks, stems):
        pairs.save_pair(tmp, stem, image, mask, palette)
    with open(os.path.join(in_dir, 'meta.json')) as f:
        src = json.load(f)
    src.update(clean={k: config[k] for k in ('in_dir', 'min_area', 'margin', 'seg_ckpt', 'tol',
                                             'min_miou', 'keep', 'temperature')})
    src.pop('margins', None)  # the margins stay in in_dir
    pairs.save_json(src, os.path.join(tmp, 'meta.json'))
    pairs.save_json(config, os.path.join(tmp, 'config.json'))
    pairs.save_json(rep, os.path.join(tmp, 'clean.json'), indent=2)
    n = min(16, len(stems))
    pairs.save_png(pairs.make_grid(images[:n], masks[:n], palette), os.path.join(tmp, 'grid.png'))
    if os.path.exists(out_dir):
        os.rename(out_dir, tmp + '.old')
    os.rename(tmp, out_dir)
    shutil.rmtree(tmp + '.old', ignore_errors=True)
    for k in ('min_area', 'margin', 'consistency', 'keep'):
        if k in rep:
            print(f'{k}: ' + ', '.join(f'{a} {v:.4g}' if isinstance(v, float) else f'{a} {v}'
                                       for a, v in rep[k].items() if not isinstance(v, (list, str))))
    print(f"{rep['n_in']} pairs -> {rep['n_out']} in {out_dir}; ignore pixels "
          f"{rep['ignore_in']:.2%} -> {rep['ignore_out']:.2%}")
