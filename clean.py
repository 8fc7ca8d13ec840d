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
from configurator import check_settings, configure
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
        regions, n = ndimage.label(mask == c)  # region r = 1..n of class c, 0 elsewhere
        areas = np.bincount(regions.ravel(), minlength=n + 1)  # pixels per region
        for r, box in enumerate(ndimage.find_objects(regions), 1):  # box: region r's bounds
            if areas[r] >= min_area:
                continue
            box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)  # + the ring
            region = regions[box] == r
            near = mask[box]  # the labels around it
            ring = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool)) & ~region
            ring_labels = near[ring]
            ring_labels = ring_labels[ring_labels != ignore_index]  # ignore pixels do not vote
            votes = np.bincount(ring_labels, minlength=256)
            if votes.any():
                out[box][region] = votes.argmax()  # out[box] is a view
    return out


@torch.no_grad()
def pixel_loss(model, images, masks, size, ignore_index=255, *, batch_size=64, device='cpu'):
    """Per-pixel cross-entropy (N, H, W) and prediction (N, H, W) of the segmenter on uint8
    images (N, H, W, 3) seen at size x size (its training resolution), logits back at H x W,
    batch_size images at a time on `device`."""
    losses = []
    preds = []
    for start in range(0, len(images), batch_size):
        x = preprocess(np.array(images[start:start + batch_size])).to(device)  # (B, 3, H, W)
        y = torch.as_tensor(np.array(masks[start:start + batch_size])).long().to(device)
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
    keep = y < K  # the labelled pixels
    n = np.bincount(y[keep], minlength=K)  # pixels per class
    total = np.bincount(y[keep], weights=loss.ravel()[keep], minlength=K)  # their summed loss
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def consistency_ignore(loss, masks, ref, tol, ignore_index=255):
    """FreeMask's rule: masks with 255 where a pixel's loss > tol x ref[its class] (ref (K,): the
    class's mean loss on real data; NaN, a class absent from it: kept). Ignore pixels stay."""
    K = len(ref)
    # the loss above which a pixel of each class becomes ignore: tol x its real mean loss, or
    # infinite (never) for a class absent from the real data; entry K, for ignore pixels, too
    ref = np.nan_to_num(np.asarray(ref, np.float64), nan=np.inf)
    thresholds = np.append(tol * ref, np.inf)  # (K + 1,)
    labels = np.where(masks == ignore_index, K, masks)  # ignore pixels look up entry K
    return np.where(loss > thresholds[labels], ignore_index, masks).astype(np.uint8)


def pair_miou(pred, mask, K):
    """mIoU of one prediction vs one mask over the classes present in either (ignore dropped)."""
    cm = metrics.confusion_matrix(torch.as_tensor(pred), torch.as_tensor(mask), K).numpy()
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)  # per class: TP + FP + FN
    present = union > 0
    if not present.any():  # an all-ignore mask: nothing to disagree about
        return 1.0
    return float((np.diag(cm)[present] / union[present]).mean())


def select(counts, base, target, keep):
    """Greedy: indices of `keep` rows of counts (P, K) whose sum with base (K,) has class shares
    closest (total variation) to target (K,), adding one row at a time (ties: the lowest index)."""
    chosen = []
    total = base.astype(np.float64)  # (K,) the class pixels of base + the rows chosen so far
    free = np.ones(len(counts), bool)  # the rows not chosen yet
    for _ in range(keep):
        candidates = total[None] + counts  # (P, K): the totals with each row added
        candidate_shares = candidates / np.maximum(candidates.sum(1, keepdims=True), 1)
        tv = 0.5 * np.abs(candidate_shares - target).sum(1)  # (P,) metrics.tvd of each
        tv[~free] = np.inf
        j = int(np.argmin(tv))
        chosen.append(j)
        free[j] = False
        total = total + counts[j]
    return sorted(chosen)


def shares(counts):
    """Pixel counts per class (K,) -> class shares summing to 1 (all zeros stay zeros)."""
    return counts / max(counts.sum(), 1)


def class_counts(mask, K):
    """Pixels per class (K,) of one mask, as float64 (ignore pixels not counted)."""
    return np.bincount(mask.ravel(), minlength=256)[:K].astype(np.float64)


def labelled_pixels(masks, ignore_index):
    return int((masks != ignore_index).sum())


if __name__ == '__main__':
    config = configure(globals())
    in_dir = in_dir or f'out-sample-{dataset}'
    out_dir = out_dir or f'out-clean-{dataset}'
    config.update(in_dir=in_dir, out_dir=out_dir)
    problems = []  # every setting is checked before anything is read or written
    for name, value in [('min_area', min_area), ('margin', margin), ('tol', tol),
                        ('min_miou', min_miou), ('keep', keep)]:
        if value < 0:
            problems.append(f'{name} must be >= 0, got {value}')
    if temperature <= 0:
        problems.append(f'temperature must be > 0, got {temperature}')
    if batch_size < 1:
        problems.append(f'batch_size must be >= 1, got {batch_size}')
    if min_miou and not seg_ckpt:
        problems.append(f'min_miou needs seg_ckpt (the segmenter it compares with), got min_miou '
                        f"{min_miou} and seg_ckpt ''")
    if os.path.abspath(in_dir) == os.path.abspath(out_dir):
        problems.append(f'out_dir must be a new folder, got {out_dir!r}, which is in_dir')
    check_settings('clean.py', problems)
    info = pairs.read_classes(in_dir)
    K = info['num_classes']
    ignore = info['ignore_index']
    palette = info['palette']
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
    report = dict(n_in=len(stems), pixels=n_pix, ignore_in=int((masks == ignore).sum()) / n_pix)

    if min_area > 0:
        cleaned = np.stack([cleanup(m, min_area, ignore) for m in masks])
        report['min_area'] = dict(relabelled=int((cleaned != masks).sum()) / n_pix)
        masks = cleaned
    if margin > 0:
        low = np.stack([pairs.read_margin(in_dir, s) for s in stems]) < margin  # (N, H, W)
        report['margin'] = dict(ignored=int((low & (masks != ignore)).sum()) / n_pix)
        masks = np.where(low, ignore, masks).astype(np.uint8)
    if model is not None:
        size = metrics.seg_input_size(masks.shape[1], ckpt)
        real_images, real_masks = data['train']
        real_loss, _ = pixel_loss(model, real_images, real_masks, size, ignore,
                                  batch_size=batch_size, device=device)
        ref = class_mean_loss(real_loss, real_masks, K)  # (K,) the real mean loss per class
        loss, pred = pixel_loss(model, images, masks, size, ignore, batch_size=batch_size,
                                device=device)
        mious = np.array([pair_miou(p, m, K) for p, m in zip(pred, masks)])  # as generated
        before = labelled_pixels(masks, ignore)
        masks = consistency_ignore(loss, masks, ref, tol, ignore)
        report['consistency'] = dict(seg_ckpt=seg_ckpt, tol=tol, real_class_loss=ref.tolist(),
                                     ignored=(before - labelled_pixels(masks, ignore)) / n_pix,
                                     pair_miou_mean=float(mious.mean()))
        if min_miou > 0:
            kept = mious >= min_miou  # (N,) the pairs that stay
            report['consistency'].update(min_miou=min_miou, dropped=int((~kept).sum()))
            images = images[kept]
            masks = masks[kept]
            stems = [stem for stem, k in zip(stems, kept) if k]
            if keep > len(stems):
                sys.exit(f'{in_dir}: {len(stems)} pairs left after --min_miou, cannot keep {keep}')
    if keep:
        res = masks.shape[1]
        # D's class pixels at the pairs' resolution: its class shares x its pixels
        base = np.asarray(meta['class_freq']['train']) * meta['counts']['train'] * res * res
        target = shares(shares(base) ** (1 / temperature))
        counts = np.stack([class_counts(m, K) for m in masks])  # (N, K)
        idx = select(counts, base, target, keep)
        first = base + counts[:keep].sum(0)  # what the first `keep` pairs would have given
        after = base + counts[idx].sum(0)
        report['keep'] = dict(keep=keep, pool=len(stems), temperature=temperature,
                              target=target.tolist(), real=shares(base).tolist(),
                              union_first=shares(first).tolist(),
                              union_kept=shares(after).tolist(),
                              tvd_first=metrics.tvd(shares(first), target),
                              tvd_kept=metrics.tvd(shares(after), target))
        images = images[idx]
        masks = masks[idx]
        stems = [stems[i] for i in idx]
    class_pixels_out = np.bincount(masks.ravel(), minlength=256)[:K]
    report.update(n_out=len(stems), ignore_out=int((masks == ignore).sum()) / max(masks.size, 1),
                  class_shares_out=shares(class_pixels_out).tolist(), classes=info['classes'],
                  config=config)

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
    pairs.save_json(report, os.path.join(tmp, 'clean.json'), indent=2)
    n_show = min(16, len(stems))
    pairs.save_png(pairs.make_grid(images[:n_show], masks[:n_show], palette, min_tile=128),
                   os.path.join(tmp, 'grid.png'))
    if os.path.exists(out_dir):
        os.rename(out_dir, tmp + '.old')
    os.rename(tmp, out_dir)
    shutil.rmtree(tmp + '.old', ignore_errors=True)
    for step in ('min_area', 'margin', 'consistency', 'keep'):  # one line per option that ran
        if step not in report:
            continue
        shown = []
        for name, value in report[step].items():
            if isinstance(value, (list, str)):  # (class lists and paths: in clean.json only)
                continue
            shown.append(f'{name} {value:.4g}' if isinstance(value, float) else f'{name} {value}')
        print(f'{step}: ' + ', '.join(shown))
    print(f"{report['n_in']} pairs -> {report['n_out']} in {out_dir}; ignore pixels "
          f"{report['ignore_in']:.2%} -> {report['ignore_out']:.2%}")
