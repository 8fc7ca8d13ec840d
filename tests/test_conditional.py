"""The conditional generators of issue 24 on the one UNet / GaussianDiffusion / train_gen.py:
cond='image' (the mask's label channels given the image, SegDiff-like) and cond='mask' (the
image given the mask's label channels). CPU, configs/tiny.py, seconds each.

Covers: pairs' one table of target and condition channels and its condition builder (the
slices of bits.pack), an oracle model that reads its condition (so the condition is respected
all the way to the decoded pair), and for each cond: a run with the right channels, 2 + 2
iterations == 4 bit for bit, the grid (condition | sample | target of one real pair), a torchrun
run, and one-line refusals (a resume with the other cond, sample.py and superres.py,
label_encoding none, a scale).
"""
import numpy as np
import pytest
import torch
from PIL import Image

import bits
import pairs
from conftest import PALETTE, make_dataset
from diffusion import GaussianDiffusion
from test_train_gen import load, run

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
    roles = {'image': 'masks given an image, SegDiff: sampling it is not built yet',
             'mask': 'images given a mask: sampling it is not built yet'}
    for cond in CONDS:
        ckpt = f'{OUT_DIRS[cond]}/ckpt.pt'
        out = run(['sample.py', f'--ckpt={ckpt}', '--out_dir=s', '--num_samples=2'], trained,
                  check=False)
        assert last_line(out) == (f"{ckpt}: a generator with cond={cond!r} ({roles[cond]}); "
                                  "sample.py needs an unconditional G (train_gen.py, cond='none')")
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
