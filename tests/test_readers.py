"""prepare.py's real-data readers (readers.py) on tiny fixtures written here in the real layouts
(docs/DATASETS.md):
LoveDA (folders and zips), iSAID (devkit folders and mmseg zips), OpenEarthMap (GeoTIFFs)."""
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import bits
import prepare
import readers
from configurator import configure
from conftest import ROOT, run_prepare as run


def save(path, array, mode=None, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode).save(path, **kw)


def zip_tree(root, zpath, prefix):
    """Zip root/prefix/** into zpath with members prefix/..., then delete the folder copy."""
    with zipfile.ZipFile(zpath, 'w') as z:
        for f in sorted((root / prefix).rglob('*')):
            z.write(f, f.relative_to(root).as_posix())
    for f in sorted((root / prefix).rglob('*'), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    (root / prefix).rmdir()


def patches(a, P):  # (H, W, ...) -> row-major (n, P, P, ...), the order prepare.py writes
    return np.stack([a[y:y + P, x:x + P] for y in range(0, a.shape[0] - P + 1, P)
                     for x in range(0, a.shape[1] - P + 1, P)])


def loveda_tree(root, rng, bad_value=None):
    raw = {}
    for split, scene, i in [('Train', 'Rural', 0), ('Train', 'Urban', 1366),
                            ('Val', 'Urban', 3514)]:
        mask = rng.integers(1, 8, (64, 64))
        mask[:16, :20] = 0  # no-data
        if bad_value is not None:
            mask[5, 5] = bad_value
        image = rng.integers(0, 256, (64, 64, 3))
        save(root / split / scene / 'images_png' / f'{i}.png', image)
        save(root / split / scene / 'masks_png' / f'{i}.png', mask, 'L')
        raw[split, scene] = image, mask
    save(root / 'Test' / 'Rural' / 'images_png' / '4191.png', image)  # no masks: not read
    return raw


@pytest.mark.parametrize('zipped', [False, True])
def test_loveda(tmp_path, zipped):
    raw = loveda_tree(tmp_path / 'LoveDA', np.random.default_rng(0))
    if zipped:
        for split in ('Train', 'Val', 'Test'):
            zip_tree(tmp_path / 'LoveDA', tmp_path / 'LoveDA' / f'{split}.zip', split)
    meta, d = run(tmp_path, reader='loveda', dataset='lv', raw_dir=tmp_path / 'LoveDA',
                  patch_size=32)
    assert meta['counts'] == {'train': 8, 'val': 4} and meta['num_classes'] == 7
    image, mask = raw['Train', 'Urban']  # scenes sorted by (split, scene, id): Rural then Urban
    expect = np.where(mask == 0, 255, mask - 1)
    assert np.array_equal(d['train_masks'][4:], patches(expect, 32))
    assert np.array_equal(d['train_images'][4:], patches(image, 32))
    assert np.array_equal(d['val_masks'], patches(np.where(raw['Val', 'Urban'][1] == 0, 255,
                                                           raw['Val', 'Urban'][1] - 1), 32))
    assert meta['ignore_fraction']['train'] == pytest.approx(2 * 16 * 20 / (2 * 64 * 64))
    assert sum(meta['class_freq']['val']) == pytest.approx(1)
    # the generator's code table: no-data is code 7 of 8, so 3 bits, and 7 decodes to 255
    assert meta['codes'] == {'num_codes': 8, 'ignore_code': 7} and bits.num_codes(meta) == 8
    x = bits.pack(d['train_images'][4:], d['train_masks'][4:], meta)
    assert x.shape[1] == 3 + 3 and np.array_equal(bits.unpack(x, meta)[1], d['train_masks'][4:])


def test_loveda_value_above_7_is_an_error(tmp_path):
    loveda_tree(tmp_path / 'LoveDA', np.random.default_rng(1), bad_value=9)
    with pytest.raises(SystemExit, match=r'masks_png/0\.png: mask values \[9\]'):
        run(tmp_path, reader='loveda', dataset='lv', raw_dir=tmp_path / 'LoveDA', patch_size=32)
    assert os.listdir(tmp_path / 'data') == []  # neither data/lv nor a temporary folder


def isaid_scene(rng, gray=False, n_off=0):
    """A 64x96 scene: mask from the iSAID colour table (+ n_off off-palette pixels), its image."""
    pal = np.array(readers.ISAID['palette'], np.uint8)
    index = rng.integers(0, 16, (64, 96))
    colour = pal[index]
    colour.reshape(-1, 3)[:n_off] = (1, 63, 63)  # near storage_tank, but not in the table
    index.reshape(-1)[:n_off] = 255
    image = rng.integers(0, 256, (64, 96) if gray else (64, 96, 3))
    return image, colour, index


@pytest.mark.parametrize('layout', ['devkit', 'mmseg_zips'])
def test_isaid(tmp_path, layout):
    rng, root = np.random.default_rng(2), tmp_path / 'iSAID'
    scenes = {'P0000': isaid_scene(rng, gray=True, n_off=20), 'P0003': isaid_scene(rng)}
    for split, pid in [('train', 'P0000'), ('val', 'P0003')]:
        image, colour, _ = scenes[pid]
        save(root / split / 'images' / f'{pid}.png', image)
        save(root / split / 'images' / f'{pid}_instance_color_RGB.png', colour)
        save(root / split / 'images' / f'{pid}_instance_id_RGB.png', colour)  # not the semantic one
        if layout == 'mmseg_zips':  # images/part1.zip and Semantic_masks/images.zip, under images/
            for zname, suffix in [('images/part1.zip', ''), ('Semantic_masks/images.zip',
                                                             '_instance_color_RGB')]:
                (root / split / zname).parent.mkdir(exist_ok=True)
                with zipfile.ZipFile(root / split / zname, 'w') as z:
                    name = f'{pid}{suffix}.png'
                    z.write(root / split / 'images' / name, f'images/{name}')
            for f in (root / split / 'images').glob('P*.png'):
                f.unlink()
    meta, d = run(tmp_path, reader='isaid', dataset='is', raw_dir=root, patch_size=32,
                  border='drop', max_offpalette=0.01)
    gray, _, index = scenes['P0000']
    assert meta['counts'] == {'train': 6, 'val': 6} and meta['num_classes'] == 16
    assert np.array_equal(d['train_images'], patches(np.repeat(gray[..., None], 3, 2), 32))
    assert np.array_equal(d['train_masks'], patches(index, 32))
    assert np.array_equal(d['val_masks'], patches(scenes['P0003'][2], 32))
    assert list(meta['offpalette_pixels'].values()) == [20]
    assert meta['scene_class_pixels']['train'][-1] == 20  # off-palette -> ignore
    # 20 stray ignore pixels in train: still the paper's 16 codes in 4 bits (C = 7), no 5th bit
    assert meta['ignore_fraction']['train'] > 0 and bits.num_codes(meta) == 16
    assert meta['codes'] == {'num_codes': 16, 'ignore_code': None}
    assert bits.pack(d['train_images'], d['train_masks'], meta).shape[1] == 7
    with pytest.raises(SystemExit, match=r'P0000_instance_color_RGB\.png: 20 off-palette pixels'):
        run(tmp_path, reader='isaid', dataset='is2', raw_dir=root, patch_size=32)
    assert not (tmp_path / 'data' / 'is2').exists()


def test_openearthmap(tmp_path):
    rng, root = np.random.default_rng(3), tmp_path / 'OpenEarthMap_wo_xBD'
    tiles = {}
    for region, name in [('aachen', 'aachen_1.tif'), ('aachen', 'aachen_2.tif'),
                         ('christchurch', 'christchurch_1.tif')]:
        label, image = rng.integers(0, 9, (80, 80)), rng.integers(0, 256, (80, 80, 3))
        label[70:, 75:] = 13 if name == 'aachen_2.tif' else label[70:, 75:]  # undefined: ignore
        save(root / region / 'images' / name, image, compression='tiff_deflate')
        save(root / region / 'labels' / name, label, 'L', compression='tiff_deflate')
        tiles[name] = image, np.where((label == 0) | (label > 8), 255, label - 1)
    save(root / 'palu' / 'labels' / 'palu_1.tif', np.ones((80, 80)), 'L')  # xBD: image missing
    (root / 'train.txt').write_bytes(b'aachen_1.tif\rpalu_1.tif\rchristchurch_1.tif\r')  # CR only
    (root / 'val.txt').write_bytes(b'aachen_2.tif\r\n\r\n')
    border = configure(dict(vars(prepare)), [str(ROOT / 'configs/openearthmap.py')])['border']
    meta, d = run(tmp_path, reader='openearthmap', dataset='oem', raw_dir=root, patch_size=32,
                  border=border)
    assert meta['skipped']['missing_image'] == 1 and meta['num_classes'] == 8
    assert sum(meta['offpalette_pixels'].values()) == 50  # the 10x5 block of 13s, warned
    assert meta['counts'] == {'train': 8, 'val': 4}  # starts 0 and 32 per axis: no overlap
    image, mask = tiles['aachen_2.tif']
    assert np.array_equal(d['val_masks'], patches(mask, 32))  # every pixel at most once
    assert np.array_equal(d['val_images'][1], image[:32, 32:64])
    assert np.array_equal(d['train_masks'][4], tiles['christchurch_1.tif'][1][:32, :32])
    # 8 classes in 3 bits (the paper's C = 6); unknown has no code and is left out of G's loss
    assert meta['codes'] == {'num_codes': 8, 'ignore_code': None} and bits.num_codes(meta) == 8
    w = bits.loss_weight(d['val_masks'], meta)
    assert w.shape == (4, 6, 32, 32) and torch.equal(w[:, 3] == 0, torch.as_tensor(
        d['val_masks'] == 255))


def test_openearthmap_config_cuts_the_papers_non_overlapping_patches():
    """SatSynth Sec. 5.1: non-overlapping 256x256 patches. The 1000x1000 tiles give 3 x 3 (the
    232-px remainder is dropped; 'shift' gave 4 x 4 = 16, edge pixels counted twice), xBD's 1024
    tiles 4 x 4."""
    cfg = configure(dict(vars(prepare)), [str(ROOT / 'configs/openearthmap.py')])
    assert cfg['patch_size'] == 256 and cfg['border'] == 'drop'
    per_tile = lambda n: len(prepare.grid(n, cfg['patch_size'], cfg['border'])) ** 2
    assert per_tile(1000) == 9 and per_tile(1024) == 16


def test_size_mismatch_and_truncated_file_are_errors(tmp_path):
    root = tmp_path / 'LoveDA'
    loveda_tree(root, np.random.default_rng(4))
    good = (root / 'Val/Urban/masks_png/3514.png').read_bytes()
    save(root / 'Val/Urban/masks_png/3514.png', np.ones((64, 48)), 'L')
    with pytest.raises(SystemExit, match=r'3514\.png: mask is 48x64 but its image .* is 64x64'):
        run(tmp_path, reader='loveda', dataset='lv', raw_dir=root, patch_size=32)
    (root / 'Val/Urban/masks_png/3514.png').write_bytes(good[:len(good) // 2])
    with pytest.raises(SystemExit, match=r'3514\.png: unreadable or truncated'):
        run(tmp_path, reader='loveda', dataset='lv', raw_dir=root, patch_size=32)
    assert os.listdir(tmp_path / 'data') == []


# --- the folder reader with colour-coded masks (the Dubai aerial set's layout) -------------------
COLOURS = [[60, 16, 152], [132, 41, 246], [110, 193, 228]]  # three classes, as Dubai's first three
UNLABELLED, BLACK, STRAY = [155, 155, 155], [0, 0, 0], [1, 2, 3]


def colour_tree(root, rng, stray_pixels=2):
    """Two scene folders, each with images/ (JPEG) and masks/ (PNG): scene 'A' 48x40 with an RGB
    mask, scene 'B' 32x64 with a palette-mode mask whose palette indices are NOT class indices;
    both name their one image 'part_1' (as Dubai's tiles do). Returns the expected index masks."""
    want = {}
    for scene, (h, w), mode in (('Tile A', (40, 48), 'RGB'), ('Tile B', (64, 32), 'P')):
        labels = rng.integers(0, 3, (h, w))
        labels[:4, :6] = 255  # 'Unlabeled'
        labels[-2:, -3:] = 254  # black (unannotated): ignore too
        rgb = np.array(COLOURS + [UNLABELLED] * 252 + [BLACK, UNLABELLED], np.uint8)[labels]
        expected = np.where(labels >= 254, 255, labels)
        if scene == 'Tile A' and stray_pixels:
            rgb[10, 10:10 + stray_pixels] = STRAY  # an off-palette colour, e.g. an edge artefact
            expected[10, 10:10 + stray_pixels] = 255
        yy, xx = np.indices((h, w))  # smooth (JPEG keeps it to a few grey levels) + a little noise
        image = np.stack([40 + 2 * yy, 60 + 3 * xx, 200 - yy - xx], -1) + rng.integers(0, 4, (h, w, 3))
        save(root / scene / 'images' / 'part_1.jpg', image, quality=95)
        if mode == 'RGB':
            save(root / scene / 'masks' / 'part_1.png', rgb)
        else:  # palette-mode: index k of the file has colour table[k], a permutation of ours
            table = [STRAY, BLACK] + COLOURS[::-1] + [UNLABELLED]
            index = np.zeros((h, w), np.uint8)
            for k, colour in enumerate(table):
                index[(rgb == colour).all(-1)] = k
            im = Image.fromarray(index, 'P')
            im.putpalette(sum(table, []))
            (root / scene / 'masks').mkdir(parents=True)
            im.save(root / scene / 'masks' / 'part_1.png')
        want[scene] = image, expected
    return want


def classes_json(path, **extra):
    path.write_text(json.dumps(dict({'classes': ['building', 'land', 'road'], 'palette': COLOURS,
                                     'ignore_colours': [UNLABELLED, BLACK]}, **extra)))
    return path


def test_folder_reader_decodes_colour_masks_through_the_palette(tmp_path):
    root = tmp_path / 'dubai'
    want = colour_tree(root, np.random.default_rng(0))
    meta, d = run(tmp_path, reader='folder', dataset='dubai', raw_dir=root, patch_size=16,
                  classes_file=classes_json(tmp_path / 'classes.json'), val_fraction=0.5,
                  seed=3, max_offpalette=0.002)  # 2 of 1920 pixels
    sources = json.loads((tmp_path / 'data/dubai/sources.json').read_text())
    got = {}
    for split in ('train', 'val'):  # each image went to one split, whole
        (name,) = sources[split]['scenes']
        got[name.split('/')[0]] = d[f'{split}_images'], d[f'{split}_masks'], sources[split]
    assert sorted(got) == ['Tile A', 'Tile B']  # the same stem in two scene folders: two scenes
    for scene, (image, expected) in want.items():
        images, masks, src = got[scene]
        assert np.array_equal(masks, patches(expected, 16))  # exact: colours -> classes, 255
        assert np.abs(images.astype(int) - patches(image, 16)).mean() < 3  # JPEG, quality 95
        h, w = expected.shape
        assert src['patches'] == [[0, y, x] for y in range(0, h - 15, 16)
                                  for x in range(0, w - 15, 16)]  # where each patch came from
    assert sorted(meta['counts'].values()) == [6, 8]  # 2 x 3 and 4 x 2 patches: sizes differ
    assert list(meta['offpalette_pixels'].values()) == [2]  # counted, below max_offpalette


def test_folder_reader_colour_mask_errors(tmp_path):
    root = tmp_path / 'dubai'
    colour_tree(root, np.random.default_rng(1), stray_pixels=8)  # 8 / 1920 > 0.001
    classes = classes_json(tmp_path / 'classes.json')
    with pytest.raises(SystemExit, match=r'Tile A/masks/part_1\.png: 8 off-palette pixels .*'
                                         r'RGB \[\(1, 2, 3\)\]'):
        run(tmp_path, reader='folder', dataset='d', raw_dir=root, classes_file=classes,
            patch_size=16, val_fraction=0.5)
    # the palette is what maps colours; without one (or read as index masks) it is refused
    no_palette = tmp_path / 'names.json'
    no_palette.write_text(json.dumps(['building', 'land', 'road']))
    with pytest.raises(SystemExit, match=r'names\.json: colour masks need a "palette"'):
        run(tmp_path, reader='folder', dataset='d', raw_dir=root, classes_file=no_palette,
            patch_size=16, val_fraction=0.5)
    with pytest.raises(SystemExit, match=r'expected a single-channel 8-bit index mask'):
        run(tmp_path, reader='folder', dataset='d', raw_dir=root, classes_file=classes,
            patch_size=16, mask_format='index', val_fraction=0.5)
    twice = classes_json(tmp_path / 'twice.json', ignore_colours=[COLOURS[0]])
    with pytest.raises(SystemExit, match=r'twice\.json: colours listed twice'):
        run(tmp_path, reader='folder', dataset='d', raw_dir=root, classes_file=twice,
            patch_size=16, val_fraction=0.5)
    assert os.listdir(tmp_path / 'data') == []  # nothing half-written
    run(tmp_path, reader='folder', dataset='d', raw_dir=root, classes_file=classes,
        patch_size=16, max_offpalette=0.01, val_fraction=0.5)  # allowed: the 8 pixels become ignore
