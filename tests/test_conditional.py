"""The conditional generators of issue 24 on the one UNet / GaussianDiffusion / train_gen.py:
cond='image' (the mask's label channels given the image, SegDiff-like) and cond='mask' (the
image given the mask's label channels). CPU, configs/tiny.py, seconds each.

Covers: pairs' one table of target and condition channels and its condition builder (the
slices of bits.pack), an oracle model that reads its condition (so the condition is respected
all the way to the decoded pair), and for each cond: a run with the right channels, 2 + 2
iterations == 4 bit for bit, the grid (condition | sample | target of one real pair), a torchrun
run, and one-line refusals (a resume with the other cond, sample.py without in_dir, superres.py,
label_encoding none, a scale).

Then sample.py with them (issue 24, step 2): the pair folders each cond writes from an in_dir
(pairs.py export_split ... val, resized or not, ratio R), the condition respected by an oracle
UNet patched in (cond=mask: palette images of the given masks; cond=image: in_dir's true masks,
mIoU 100 in a results.json that report.py reads as one more run), SegDiff's ensemble (mean_of)
against the average computed here, resume (skipped pairs, a changed in_dir refused), one-line
refusals that write nothing, and torchrun. The oracle, ensemble, resume and refusal runs call
sample.py in this process (runpy: no torch import per run, so a second each, not several).
"""
import json
import os
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import bits
import pairs
from conftest import PALETTE, ROOT, make_dataset, run_script
from diffusion import GaussianDiffusion
from test_train_gen import load, run
from unet import UNet, UNetConfig

CONDS = ['image', 'mask']
META = dict(num_classes=3, ignore_index=255, codes=dict(num_codes=3, ignore_code=None))
OUT_DIRS = {'image': 'out-img2mask-tiny', 'mask': 'out-mask2img-tiny'}  # train_gen's defaults


# --- the channel table and the condition builder -------------------------------------------------

def test_each_cond_denoises_and_is_given_channels_of_the_pack_tensor():
    """For n_label = 2: the whole 5-channel pair for G and G_SR; 2 label channels given the 3
    RGB ones for 'image'; the other way round for 'mask'."""
    table = {cond: pairs.target_and_condition_channels(cond, 2) for cond in pairs.CONDS}
    assert table == {'none': (slice(0, 5), None), 'lowres': (slice(0, 5), slice(0, 5)),
                     'image': (slice(3, 5), slice(0, 3)), 'mask': (slice(0, 3), slice(3, 5))}
    with pytest.raises(ValueError, match='cond must be one of'):
        pairs.target_and_condition_channels('depth', 2)


@pytest.mark.parametrize('encoding', ['bits', 'onehot'])
def test_condition_is_the_other_half_of_the_pack_tensor(encoding):
    """pairs.condition for 'image' / 'mask' is the `given` slice of bits.pack of the same pair
    (the half of the pair not generated), from that half alone; a pair at another size is
    resized by resize_pair first, as every stage resizes."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (2, 8, 8), dtype=np.uint8)
    n_label = bits.label_channels(3, encoding)
    x = bits.pack(images, masks, META, encoding)  # (2, 3 + n_label, 8, 8)
    for cond in CONDS:
        target, given = pairs.target_and_condition_channels(cond, n_label)
        c = pairs.condition(cond, images, masks, 8, META, encoding)
        assert torch.equal(c, x[:, given]) and c.shape[1] == given.stop - given.start
        assert x[:, target].shape[1] + c.shape[1] == bits.RGB + n_label  # the two halves
    assert torch.equal(pairs.condition('image', images, None, 8, META, encoding), x[:, :3])
    assert torch.equal(pairs.condition('mask', None, masks, 8, META, encoding), x[:, 3:])
    # at 4x4: the pair resized (area image, centre-label mask), then packed
    small = bits.pack(*pairs.resize_pair(images, masks, 4), META, encoding)
    assert torch.equal(pairs.condition('image', images, None, 4, META, encoding), small[:, :3])
    assert torch.equal(pairs.condition('mask', None, masks, 4, META, encoding), small[:, 3:])


def test_resize_pair_takes_either_half_alone():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 12, 12, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (3, 12, 12), dtype=np.uint8)
    for size in (6, 8, 12, 24):  # integer and not, down, the same, up
        both = pairs.resize_pair(images, masks, size)
        image_only = pairs.resize_pair(images, None, size)
        mask_only = pairs.resize_pair(None, masks, size)
        assert image_only[1] is None and np.array_equal(image_only[0], both[0])
        assert mask_only[0] is None and np.array_equal(mask_only[1], both[1])


def test_pair_tensor_puts_the_sample_beside_its_condition():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, (2, 4, 4), dtype=np.uint8)
    x = bits.pack(images, masks, META)
    assert torch.equal(pairs.pair_tensor('image', x[:, 3:], x[:, :3], 2), x)
    assert torch.equal(pairs.pair_tensor('mask', x[:, :3], x[:, 3:], 2), x)
    assert pairs.pair_tensor('none', x, None, 2) is x  # G's sample is a whole pair already


# --- the condition is respected: an oracle model that reads it -----------------------------------

def other_half(cond, c):
    """The target the condition c determines, as an oracle knows it for data whose images are
    their masks' palette colours: the palette image of a given mask, the mask of a given image."""
    palette = np.array(PALETTE, np.int64)
    if cond == 'mask':
        masks = bits.decode((c + 1) / 2, 3).numpy()  # (B, H, W) classes
        return bits.pack_images(palette[masks].astype(np.uint8))
    images = ((c + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()  # (B, H, W, 3)
    masks = np.abs(images[..., None, :] - palette).sum(-1).argmin(-1)  # the nearest colour
    return bits.pack_masks(masks.astype(np.uint8), META)


@pytest.mark.parametrize('cond', CONDS)
def test_an_oracle_that_reads_its_condition_gives_the_target(cond):
    """A denoiser that predicts the true eps of the target its condition determines recovers,
    through pairs.condition, the sampler and pairs.pair_tensor, exactly the real pair; for a
    constant condition (class 2 everywhere, or its colour) a constant target. The condition
    alone decides: the two batches differ only in it."""
    rng = np.random.default_rng(3)
    masks = rng.integers(0, 3, (2, 8, 8), dtype=np.uint8)
    masks[1] = 2  # a constant condition
    images = np.array(PALETTE, np.uint8)[masks]  # (2, 8, 8, 3)
    target, given = pairs.target_and_condition_channels(cond, 2)
    d = GaussianDiffusion(timesteps=50)
    condition = pairs.condition(cond, images, masks, 8, META)

    def oracle(x_t, t, c):
        assert x_t.shape == (2, target.stop - target.start, 8, 8)
        assert c.shape == (2, given.stop - given.start, 8, 8)
        return d.predict_noise_from_start(x_t, t, other_half(cond, c))

    gen = torch.Generator().manual_seed(0)
    x = d.sample(lambda x_t, t: oracle(x_t, t, condition), (2, target.stop - target.start, 8, 8),
                 'ddim', 10, generator=gen)
    got_images, got_masks = bits.unpack(pairs.pair_tensor(cond, x, condition, 2), META)
    assert np.array_equal(got_images, images) and np.array_equal(got_masks, masks)
    assert (got_masks[1] == 2).all() and (got_images[1] == PALETTE[2]).all()


# --- train_gen.py end to end ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """For each cond: a 4-iter run (to train_gen's default out_dir) and 2 + 2 resumed to 4."""
    tmp = tmp_path_factory.mktemp('conditional')
    make_dataset(tmp / 'data')
    for cond in CONDS:
        run(['train_gen.py', f'--cond={cond}'], tmp)
        run(['train_gen.py', f'--cond={cond}', f'--out_dir=b-{cond}', '--max_iters=2'], tmp)
        run(['train_gen.py', f'--cond={cond}', f'--out_dir=b-{cond}', '--init_from=resume'], tmp)
    return tmp


@pytest.mark.parametrize('cond', CONDS)
def test_channels_and_exact_resume(trained, cond):
    a, b = load(trained / OUT_DIRS[cond] / 'ckpt.pt'), load(trained / f'b-{cond}' / 'ckpt.pt')
    assert a['cond'] == a['config']['cond'] == cond and a['scale'] == 1
    # the tiny data: 3 classes + an ignore code -> 2 label channels beside the 3 RGB ones
    C, C_cond = {'image': (2, 3), 'mask': (3, 2)}[cond]
    args = a['model_args']
    assert (args['in_channels'], args['out_channels'], args['cond_channels']) == (C, C, C_cond)
    assert a['model']['conv_in.weight'].shape[1] == C + C_cond  # x_t and the condition
    assert a['iter_num'] == b['iter_num'] == 4
    for key in ['model', 'ema']:  # bit-identical: the data/noise/dropout stream replayed
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    log = (trained / f'b-{cond}' / 'log.txt').read_text()
    assert 'iter 4: loss ' in log and 'step 2: val loss ' in log and 'step 4: val loss ' in log


@pytest.mark.parametrize('cond', CONDS)
def test_grid_is_condition_sample_target_of_one_real_pair(trained, cond):
    """4 val pairs, 3 panels of 16 px (+ 2 px pads) each: for 'image' the real image | the
    sampled mask | the real mask, for 'mask' the real mask | the sampled image | the real image;
    the first and the last panel are the two halves of one real val pair."""
    grid = np.asarray(Image.open(trained / OUT_DIRS[cond] / 'grid_000004.png').convert('RGB'))
    assert grid.shape == (20, 4 * 3 * 20, 3)
    meta = pairs.load_dataset(trained / 'data' / 'tiny', size=16)[0]
    images, masks = pairs.load_dataset(trained / 'data' / 'tiny', size=16)[1]['val']
    colours = pairs.colorize(masks, meta['palette'])  # (N, 16, 16, 3)
    images_first = cond == 'image'
    firsts, lasts = (images, colours) if images_first else (colours, images)
    panel = lambda cell, p: grid[2:18, 60 * cell + 20 * p + 2:60 * cell + 20 * p + 18]
    for cell in range(4):
        match = [j for j in range(len(images)) if np.array_equal(panel(cell, 0), firsts[j])]
        assert match, f'cell {cell}: the condition panel is no real val {cond}'
        assert np.array_equal(panel(cell, 2), lasts[match[0]])  # its own pair's other half
        sample = panel(cell, 1).reshape(-1, 3)
        if cond == 'image':  # a decoded mask: palette colours (or the ignore magenta) only
            allowed = {tuple(c) for c in meta['palette']} | {pairs.IGNORE_RGB}
            assert {tuple(c) for c in sample} <= allowed
        assert not np.array_equal(panel(cell, 1), panel(cell, 2))  # 4 iterations learn nothing


def test_torchrun_two_processes(trained):
    out = run(['train_gen.py', '--cond=mask', '--out_dir=d', '--backend=gloo', '--device=cpu',
               '--max_iters=2', '--gradient_accumulation_steps=2'], trained, torchrun=True)
    assert out.count('saving checkpoint') == 1
    ck = load(trained / 'd' / 'ckpt.pt')
    assert ck['iter_num'] == 2 and ck['cond'] == 'mask'


def last_line(out):
    return out.strip().splitlines()[-1]


def test_a_checkpoint_of_the_other_cond_is_refused_in_one_line(trained):
    # resumed as the other conditional variant, or as G
    out = run(['train_gen.py', f'--out_dir={OUT_DIRS["image"]}', '--init_from=resume',
               '--cond=mask'], trained, check=False)
    assert last_line(out) == (f"{OUT_DIRS['image']}/ckpt.pt was trained with cond='image', this "
                              "run has 'mask'")
    out = run(['train_gen.py', f'--out_dir={OUT_DIRS["mask"]}', '--init_from=resume'], trained,
              check=False)
    assert last_line(out) == (f"{OUT_DIRS['mask']}/ckpt.pt was trained with cond='mask', this "
                              "run has 'none'")
    # sample.py needs their in_dir (the other refusals: test_mismatches_are_one_line_...)
    ckpt = f'{OUT_DIRS["image"]}/ckpt.pt'
    out = run(['sample.py', f'--ckpt={ckpt}', '--out_dir=s', '--num_samples=2'], trained,
              check=False)
    assert last_line(out) == ("sample.py: error: in_dir must name the pair folder (images/ + "
                              f"masks/) whose images {ckpt} is given (cond='image'), got ''")
    assert 'Traceback' not in out
    for cond in CONDS:
        ckpt = f'{OUT_DIRS[cond]}/ckpt.pt'
        out = run(['superres.py', f'--ckpt={ckpt}', '--in_dir=s', '--out_dir=up'], trained,
                  check=False)
        assert last_line(out) == (f"{ckpt}: a generator with cond={cond!r}, not a G_SR "
                                  "(cond='lowres'); train one with train_gen.py --cond=lowres "
                                  "--scale=2")
        assert 'Traceback' not in out
    assert not (trained / 's').exists() and not (trained / 'up').exists()


def test_bad_settings_are_one_line_each(tmp_path):
    make_dataset(tmp_path / 'data')
    for cond, role in [('image', 'it generates them'), ('mask', 'it is given them')]:
        out = run(['train_gen.py', f'--cond={cond}', '--label_encoding=none'], tmp_path,
                  check=False)
        assert last_line(out) == (f'train_gen.py: error: label_encoding must give cond={cond} '
                                  f"label channels ({role}), got 'none'")
        out = run(['train_gen.py', f'--cond={cond}', '--scale=2'], tmp_path, check=False)
        assert last_line(out) == (f"train_gen.py: error: scale=2 is G_SR's factor: cond={cond} "
                                  'generates at image_size from the pair itself, drop --scale')
    assert not list(tmp_path.glob('out-*'))  # nothing written


# --- sample.py with a conditional generator (issue 24, step 2) -----------------------------------

GIVEN = {'image': 'images', 'mask': 'masks'}  # what each cond is given of in_dir's pairs


# configs/tiny.py's sampling settings on the command line: a config file's keys for other stages
# each make the configurator parse every script (seconds per run on a busy CPU)
TINY_SAMPLING = ['--dataset=tiny', '--sampler=ddim', '--steps=5', '--batch_size=4', '--device=cpu',
                 '--dtype=float32']


def sample_here(cwd, *args):
    """sample.py with the tiny config's sampling settings, run in this process (runpy, as `python
    sample.py` runs it): None when it finishes, else its exit message. The caller patches sys.argv
    and the cwd back (monkeypatch)."""
    os.chdir(cwd)
    sys.argv = ['sample.py', *TINY_SAMPLING, *args]
    try:
        runpy.run_path(str(ROOT / 'sample.py'), run_name='__main__')
    except SystemExit as e:
        return e.code
    return None


@pytest.fixture
def inproc(monkeypatch, one_thread):
    """sample_here, with sys.argv and the cwd restored afterwards."""
    monkeypatch.setattr(sys, 'argv', list(sys.argv))
    monkeypatch.chdir(os.getcwd())
    return sample_here


def folder_pairs(folder):
    return pairs.load_pairs(folder)[:2]  # uint8 images (N, H, W, 3), masks (N, H, W)


def write_palette_pairs(folder, n=5, size=16, seed=4):
    """A pair folder whose images are their masks' palette colours (ignore pixels: class 0's), so
    an oracle knows either half from the other (other_half); masks have a few ignore pixels."""
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, 3, (n, size // 4, size // 4), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    masks[:, 0, :3] = 255
    images = np.array(PALETTE, np.uint8)[np.where(masks == 255, 0, masks)]
    for i in range(n):
        pairs.save_pair(folder, f'p{i}', images[i], masks[i], PALETTE)
    pairs.save_json(dict(classes=['a', 'b', 'c'], palette=PALETTE, num_classes=3,
                         ignore_index=255), os.path.join(folder, 'meta.json'))
    return images, masks


@pytest.fixture(scope='module')
def sampled(trained):
    """The tiny val split exported by pairs.py's CLI at the generators' 16 px (val16) and at 32
    (val32, resized by sample.py); cond=image sampled for val32's images (scored: each once), and
    cond=mask for val16's masks with ratio 2 (two images per mask)."""
    out = run_script(['pairs.py', 'export_split', 'data/tiny', 'val16', '16', 'val'], trained)
    assert out == ''
    pairs.export_split(trained / 'data' / 'tiny', trained / 'val32', 32, 'val')
    outs = {}
    outs['image'] = run_script(['sample.py', *TINY_SAMPLING, f'--ckpt={OUT_DIRS["image"]}/ckpt.pt',
                                '--in_dir=val32', '--out_dir=s-image'], trained)
    outs['mask'] = run_script(['sample.py', *TINY_SAMPLING, f'--ckpt={OUT_DIRS["mask"]}/ckpt.pt',
                               '--in_dir=val16', '--out_dir=s-mask', '--ratio=2'], trained)
    return trained, outs


def test_export_split_cli_takes_the_split(sampled):
    tmp, _ = sampled
    val = pairs.load_dataset(tmp / 'data' / 'tiny', size=16, splits=('val',))[1]['val']
    images, masks = folder_pairs(tmp / 'val16')
    assert np.array_equal(images, val[0]) and np.array_equal(masks, val[1])  # all 4, in order
    assert json.loads((tmp / 'val16' / 'meta.json').read_text())['source'] == \
        'the val split of data/tiny at 16'
    out = run_script(['pairs.py', 'export_split', 'data/tiny', 'v-test', '16', 'test'], tmp,
                     check=False)
    assert last_line(out) == ('usage: python pairs.py export_split DATASET_DIR OUT_DIR SIZE '
                              '[SPLIT: train (the default) or val] (got: export_split data/tiny '
                              'v-test 16 test)')
    assert not (tmp / 'v-test').exists()


def test_cond_image_folder_keeps_the_given_images_and_is_scored(sampled):
    """4 pairs for val32's 4 images: each written image is its source resized to 16 (the given
    half as the UNet saw it), beside a decoded mask; results.json in seg.py's schema."""
    tmp, outs = sampled
    folder = tmp / 's-image'
    images, masks = folder_pairs(folder)
    src_images, src_masks = pairs.resize_pair(*folder_pairs(tmp / 'val32'), 16)
    assert images.shape == (4, 16, 16, 3) and masks.shape == (4, 16, 16)
    assert np.array_equal(images, src_images)  # exactly the given, resized, images
    assert set(np.unique(masks)) <= {0, 1, 2, 255}
    meta = json.loads((folder / 'meta.json').read_text())
    assert (meta['source'], meta['cond'], meta['in_dir'], meta['mean_of']) == \
        ('sample.py', 'image', 'val32', 1)
    assert len(meta['in_digest']) == 16
    assert Image.open(folder / 'grid.png').size == (4 * 2 * 132, 132)  # 16 px shown at 8x
    results = json.loads((folder / 'results.json').read_text())
    for key in ['miou', 'mean_f1', 'iou', 'f1', 'pixel_acc', 'confusion_matrix', 'classes',
                'seed', 'iter_num']:  # what seg.py's final results.json holds, and report.py reads
        assert key in results, key
    assert results['classes'] == ['a', 'b', 'c'] and results['iter_num'] == 4
    assert results['selected'] is None and results['history'] == []
    assert 0 <= results['miou'] <= 1 and f"mIoU {results['miou']:.4f} of the masks" in outs['image']
    assert 'class   IoU     F1' in outs['image']  # seg.py's per-class table
    # the confusion matrix counts every labelled true pixel once (sampled ignore: its own column)
    cm, missed = np.array(results['confusion_matrix']), np.array(results['sampled_ignore'])
    labelled = np.bincount(src_masks[src_masks != 255], minlength=3)
    assert np.array_equal(cm.sum(1) + missed, labelled)


def test_cond_mask_folder_keeps_the_given_masks(sampled):
    """ratio 2: 8 pairs, pair i holding val16's mask i % 4 exactly, with its own image (seed +
    i: pairs i and i + 4 differ); not scored."""
    tmp, outs = sampled
    images, masks = folder_pairs(tmp / 's-mask')
    src_masks = folder_pairs(tmp / 'val16')[1]
    assert images.shape == (8, 16, 16, 3)
    assert np.array_equal(masks, np.concatenate([src_masks, src_masks]))
    assert all(not np.array_equal(images[i], images[i + 4]) for i in range(4))
    assert not (tmp / 's-mask' / 'results.json').exists()
    assert 'rank 0: 8 of 8 indices to sample' in outs['mask']
    assert json.loads((tmp / 's-mask' / 'meta.json').read_text())['cond'] == 'mask'


def oracle_forward(diffusion, cond):
    """A UNet.forward that predicts the eps of the target other_half derives from its condition."""
    def forward(self, x, t, c=None, x_self=None):
        return diffusion.predict_noise_from_start(x, t, other_half(cond, c))
    return forward


@pytest.mark.parametrize('cond', CONDS)
def test_an_oracle_unet_gives_the_given_pairs_and_miou_100(sampled, inproc, monkeypatch, cond):
    """With the UNet's forward patched to an oracle, sample.py writes in_dir's pairs back:
    cond=mask the given masks (ignore included: the tiny data code it) beside their palette
    images (where labelled); cond=image the given images beside their true masks, so
    results.json says mIoU 1.0, which report.py puts in its table as the run 'segdiff'."""
    import unet
    tmp, _ = sampled
    given = tmp / f'palette-{cond}'
    images, masks = write_palette_pairs(given)
    ck = load(tmp / OUT_DIRS[cond] / 'ckpt.pt')
    monkeypatch.setattr(unet.UNet, 'forward', oracle_forward(GaussianDiffusion(**ck['diffusion']),
                                                             cond))
    out_dir = tmp / 'sweep' / 'segdiff' / 'seed1' if cond == 'image' else tmp / 'oracle-mask'
    assert inproc(tmp, f'--ckpt={OUT_DIRS[cond]}/ckpt.pt', f'--in_dir={given}',
                  f'--out_dir={out_dir}') is None
    got_images, got_masks = folder_pairs(out_dir)
    labelled = masks != 255
    if cond == 'mask':  # (the oracle paints ignore pixels a class colour: no class's)
        assert np.array_equal(got_masks, masks)
        assert np.array_equal(got_images[labelled], images[labelled])
        return
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_masks[labelled], masks[labelled])  # (ignore: the oracle says 'a')
    results = json.loads((out_dir / 'results.json').read_text())
    assert results['miou'] == results['mean_f1'] == results['pixel_acc'] == 1.0
    assert results['iou'] == {'a': 1.0, 'b': 1.0, 'c': 1.0}
    out = run_script(['report.py', '--sweep_dir=sweep', '--baseline=none', '--dataset=tiny'], tmp)
    assert '| segdiff | 1 | 100.00' in out, out


def test_mean_of_averages_the_label_channels_of_k_seeded_samples(sampled, inproc):
    """mean_of=2: pair i's mask decodes the mean label channels of the samples seeded
    (seed + i) * 2 + 0 and + 1, as computed here; 2 pairs per forward pass of batch_size 4."""
    tmp, _ = sampled
    ckpt = f'{OUT_DIRS["image"]}/ckpt.pt'
    assert inproc(tmp, f'--ckpt={ckpt}', '--in_dir=val16', '--out_dir=mean2', '--mean_of=2') is None
    assert json.loads((tmp / 'mean2' / 'meta.json').read_text())['mean_of'] == 2
    assert json.loads((tmp / 'mean2' / 'results.json').read_text())['mean_of'] == 2
    ck = load(tmp / ckpt)
    model = UNet(UNetConfig(**ck['model_args']))
    model.load_state_dict(ck['ema'])
    model.eval()
    d = GaussianDiffusion(**ck['diffusion'])
    images = folder_pairs(tmp / 'val16')[0]
    written = folder_pairs(tmp / 'mean2')[1]
    for i in range(4):
        c = pairs.condition('image', images[i:i + 1], None, 16, ck['meta'])  # (1, 3, 16, 16)
        gens = [torch.Generator().manual_seed((1337 + i) * 2 + j) for j in range(2)]
        with torch.no_grad():
            x = d.sample(lambda x_t, t, **kw: model(x_t, t, c.repeat(2, 1, 1, 1), **kw),
                         (2, 2, 16, 16), 'ddim', 5, generator=gens)
        mean = pairs.pair_tensor('image', x.mean(0, keepdim=True), c, 2)
        single = pairs.pair_tensor('image', x[:1], c, 2)
        want = bits.unpack(mean, ck['meta'])[1][0]
        assert (written[i] == want).mean() > 0.98  # (float rounding may differ with the batch)
        assert not np.array_equal(want, bits.unpack(single, ck['meta'])[1][0])


def test_resume_skips_done_pairs_and_refuses_another_in_dir(sampled, inproc):
    """A killed run (pair 1's image written, not its mask) resumes: pair 0 is kept, pair 1 is
    redone; then in_dir with other pairs (same path, or another path) is refused in one line and
    nothing is added."""
    tmp, _ = sampled
    shutil.copytree(tmp / 'val16', tmp / 'given')
    args = [f'--ckpt={OUT_DIRS["mask"]}/ckpt.pt', '--in_dir=given', '--out_dir=res']
    assert inproc(tmp, *args, '--num_samples=2') is None
    first = folder_pairs(tmp / 'res')[0]
    stamp = os.stat(tmp / 'res' / 'images' / '000000.png').st_mtime_ns
    os.remove(tmp / 'res' / 'masks' / '000001.png')
    assert inproc(tmp, *args, '--num_samples=4') is None
    assert os.stat(tmp / 'res' / 'images' / '000000.png').st_mtime_ns == stamp
    images = folder_pairs(tmp / 'res')[0]
    assert len(images) == 4 and np.abs(images[1].astype(int) - first[1]).max() <= 1  # seed + 1
    names = sorted(os.listdir(tmp / 'res' / 'images'))
    # the same path with another pair in it, then another path with the same pairs
    src_images, src_masks = folder_pairs(tmp / 'val16')
    pairs.save_pair(tmp / 'given', 0, src_images[1], src_masks[1], PALETTE)  # pair 0 := pair 1
    message = inproc(tmp, *args, '--num_samples=5')
    assert message.startswith(f'{os.path.join("res", "meta.json")}: the folder holds pairs of '
                              'another run (in_digest ') and '\n' not in message
    message = inproc(tmp, *args[:1], '--in_dir=val16', '--out_dir=res', '--num_samples=5')
    assert "in_dir 'given' there, 'val16' now" in message and '\n' not in message
    assert sorted(os.listdir(tmp / 'res' / 'images')) == names


@pytest.fixture(scope='module')
def mismatched(sampled):
    """A G and a G_SR checkpoint (a cond=mask one relabelled: the cond decides, not the weights),
    and val16 with other class names."""
    tmp, _ = sampled
    ck = load(tmp / OUT_DIRS['mask'] / 'ckpt.pt')
    torch.save(dict(ck, cond='none'), tmp / 'as-g.pt')
    torch.save(dict(ck, cond='lowres', scale=2), tmp / 'as-sr.pt')
    shutil.copytree(tmp / 'val16', tmp / 'other-classes')
    meta = json.loads((tmp / 'val16' / 'meta.json').read_text())
    pairs.save_json(dict(meta, classes=['x', 'y', 'z']), str(tmp / 'other-classes' / 'meta.json'))
    return tmp


@pytest.mark.parametrize('case', ['g-with-in_dir', 'no-in_dir', 'classes', 'mean_of-mask',
                                  'margin-mask', 'g_sr'])
def test_mismatches_are_one_line_and_write_nothing(mismatched, inproc, case):
    tmp = mismatched
    image_ck, mask_ck = (f'{OUT_DIRS[c]}/ckpt.pt' for c in CONDS)
    args, want = {
        'g-with-in_dir': (['--ckpt=as-g.pt', '--in_dir=val16'],
                          "sample.py: error: in_dir is given to a conditional generator (cond "
                          "image / mask); as-g.pt is G (cond='none'), which is given nothing: "
                          "drop --in_dir=val16"),
        'no-in_dir': ([f'--ckpt={image_ck}'],
                      f"sample.py: error: in_dir must name the pair folder (images/ + masks/) "
                      f"whose images {image_ck} is given (cond='image'), got ''"),
        'classes': ([f'--ckpt={mask_ck}', '--in_dir=other-classes'],
                    f"in_dir other-classes: classes ['x', 'y', 'z'] are not the generator's "
                    f"['a', 'b', 'c'] ({mask_ck})"),
        'mean_of-mask': ([f'--ckpt={mask_ck}', '--in_dir=val16', '--mean_of=3'],
                         f"sample.py: error: mean_of=3 averages masks sampled for one image "
                         f"(cond='image'); {mask_ck} has cond='mask'"),
        'margin-mask': ([f'--ckpt={mask_ck}', '--in_dir=val16', '--save_margin=True'],
                        f"sample.py: error: save_margin: {mask_ck} (cond='mask') samples no "
                        "masks (they are given), so there are no bit margins"),
        'g_sr': (['--ckpt=as-sr.pt', '--in_dir=val16'],
                 "as-sr.pt: a generator with cond='lowres' (G_SR upsamples pairs with "
                 "superres.py); sample.py needs G (cond='none') or a conditional generator "
                 "(cond='image' or 'mask') of train_gen.py"),
    }[case]
    assert inproc(tmp, *args, f'--out_dir=bad-{case}') == want  # SystemExit(one line): exit 1
    assert not (tmp / f'bad-{case}').exists()


def test_torchrun_two_processes_sample_and_score_once(sampled):
    """cond=image under torchrun: ranks 0 and 1 take pairs 0, 2 and 1, 3; the master scores all
    4 once; the masks are the one-process run's (s-image)."""
    tmp, _ = sampled
    out = run_script(['sample.py', *TINY_SAMPLING, f'--ckpt={OUT_DIRS["image"]}/ckpt.pt',
                      '--in_dir=val32', '--out_dir=s-ddp', '--backend=gloo'], tmp, torchrun=True)
    assert 'rank 0: 2 of 2 indices to sample' in out and 'rank 1: 2 of 2 indices to sample' in out
    assert out.count('wrote s-ddp/results.json') == 1
    ddp, single = folder_pairs(tmp / 's-ddp'), folder_pairs(tmp / 's-image')
    assert np.array_equal(ddp[0], single[0]) and (ddp[1] == single[1]).mean() > 0.98
