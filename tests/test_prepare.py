"""prepare.py: the toy generator, patching policies, the 'folder' reader, atomic output and the
command line (the real-data readers are in test_readers.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import pairs
import prepare
import toydata
from conftest import run_prepare as run, run_python


def test_toy_is_deterministic_and_has_the_promised_classes(tmp_path):
    meta, a = run(tmp_path / 'a', n_train=4, n_val=2)
    _, b = run(tmp_path / 'b', n_train=4, n_val=2)
    _, c = run(tmp_path / 'c', n_train=4, n_val=2, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a['train_images'], c['train_images'])
    assert not np.array_equal(a['train_images'], a['val_images'][:1].repeat(4, 0))
    assert a['train_images'].shape == (4, 256, 256, 3) and a['val_masks'].shape == (2, 256, 256)
    assert meta['classes'] == ['bare_soil', 'building', 'road', 'water', 'tree', 'agriculture']
    assert meta['num_classes'] == 6 and len(meta['palette']) == 6
    assert meta['counts'] == {'train': 4, 'val': 2} and meta['ignore_fraction']['train'] == 0
    assert meta['codes'] == {'num_codes': 6, 'ignore_code': None}  # 3 bits, no ignore code
    assert (tmp_path / 'a/data/toy/preview.png').exists()
    saved = json.loads((tmp_path / 'a/data/toy/meta.json').read_text())
    assert saved['config']['n_train'] == 4 and saved['border'] == 'drop'


def test_toy_scenes_look_like_the_spec():
    """Over a few scenes: every class occurs, buildings and roads are rare, fields and soil are
    common, and the image is not noise (the mask explains much of its colour)."""
    scenes = [prepare.toy_scene(np.random.default_rng([0, 0, i]), 128) for i in range(12)]
    images, masks = np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])
    freq = np.bincount(masks.ravel(), minlength=6) / masks.size
    assert masks.max() == 5 and (freq > 0).all()
    assert freq[1] < 0.08 and freq[2] < 0.15 and freq[0] + freq[5] > 0.5
    means = np.stack([images[masks == k].mean(0) for k in range(6)])  # (K, 3) mean colour
    assert means[3, 2] > means[3, 0] and means[4, 1] < means[5, 1]  # water bluish, trees dark


def test_grid_policies():
    assert prepare.grid(1024, 256, 'drop') == prepare.grid(1024, 256, 'pad') == [0, 256, 512, 768]
    assert prepare.grid(1000, 256, 'drop') == [0, 256, 512]
    assert prepare.grid(1000, 256, 'shift') == [0, 256, 512, 744]
    assert prepare.grid(1000, 256, 'pad') == [0, 256, 512, 768]
    assert prepare.grid(100, 256, 'shift') == [] and prepare.grid(100, 256, 'pad') == [0]


def pair_folder(root, rng, n, size=(40, 48), K=3, splits=('',)):
    """The pair layout sample.py writes (pairs.save_pair) plus its classes.json."""
    scenes = {}
    for split in splits:
        for i in range(n):
            image = rng.integers(0, 256, size + (3,), dtype=np.uint8)
            mask = rng.integers(0, K, size, dtype=np.uint8)
            mask[0, :5] = 255
            pairs.save_pair(root / split, i, image, mask, toydata.TOY['palette'][:K])
            scenes[split, i] = image, mask
    (root / 'classes.json').write_text(json.dumps(
        {'classes': ['a', 'b', 'c'][:K], 'palette': toydata.TOY['palette'][:K],
         'ignore_index': 255}))
    return scenes


def test_folder_reader_with_random_split_and_padding(tmp_path):
    scenes = pair_folder(tmp_path / 'mine', np.random.default_rng(0), 5)
    meta, d = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                  patch_size=32, border='pad', val_fraction=0.4)
    assert meta['counts'] == {'train': 3 * 4, 'val': 2 * 4} and meta['classes'] == ['a', 'b', 'c']
    assert meta['codes'] == {'num_codes': 3, 'ignore_code': None}  # the folder default: no code
    everything = np.concatenate([d['train_masks'], d['val_masks']])
    assert set(np.unique(everything)) == {0, 1, 2, 255}
    # every source scene is found, padded: a 40x48 scene gives 2x2 patches of 32
    firsts = {m[:32, :32].tobytes() for _, m in scenes.values()}
    assert firsts == {p.tobytes() for p in everything[::4]}
    assert (everything[1::4][:, :, 16:] == 255).all() and (everything[2::4][:, 8:] == 255).all()
    # drop: scenes are cut to the whole patches only; too small ones are skipped and counted
    pairs.save_pair(tmp_path / 'mine', 0, np.zeros((16, 16, 3)), np.zeros((16, 16)), [[0] * 3] * 3)
    meta, _ = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                  patch_size=32, border='drop', val_fraction=0.4)
    assert meta['skipped']['too_small'] == 1 and sum(meta['counts'].values()) == 4


def test_no_train_or_val_patches_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    pair_folder(tmp_path / 'mine', np.random.default_rng(0), 5)  # 40x48 scenes
    run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=32)
    good = (tmp_path / 'data/mine/meta.json').read_bytes()
    def no_memmaps(*args, **kw):  # the check comes before the big .npy files are created
        raise AssertionError('open_memmap called')
    monkeypatch.setattr(np.lib.format, 'open_memmap', no_memmaps)
    with pytest.raises(SystemExit, match=r'mine: 0 train patches of 48x48: every train image is '
                       r'smaller than patch_size') as e:
        run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=48)
    assert '\n' not in str(e.value)
    with pytest.raises(SystemExit, match=r'toy: 0 val patches of 32x32: no val scenes'):
        run(tmp_path, n_train=1, n_val=0, patch_size=32)
    assert os.listdir(tmp_path / 'data') == ['mine']  # the good copy, untouched; no tmp folder
    assert (tmp_path / 'data/mine/meta.json').read_bytes() == good


def test_stale_temporary_folders_of_killed_runs_are_removed(tmp_path, capsys):
    p = subprocess.Popen([sys.executable, '-c', ''])
    p.wait()  # a pid whose process is gone, as after a kill -9 of prepare.py
    live = os.getppid()  # alive while this test runs (another run of prepare.py, say)
    data = tmp_path / 'data'
    folders = [f'.toy.tmp-{p.pid}', f'.toy.tmp-{p.pid}.old', f'.toy.tmp-{live}',
               f'.other.tmp-{p.pid}', f'.toy2.tmp-{p.pid}']
    for f in folders:
        (data / f).mkdir(parents=True)
        (data / f / 'train_images.npy').write_bytes(b'half-written')
    run(tmp_path, n_train=1, n_val=1, patch_size=32)
    assert sorted(os.listdir(data)) == sorted(['toy'] + folders[2:])  # other names, live pids
    assert f'.toy.tmp-{p.pid}' in capsys.readouterr().out
    # our own pid's folder can only be an earlier run's (pids repeat, e.g. in a container)
    (data / f'.toy.tmp-{os.getpid()}').mkdir()
    run(tmp_path, n_train=1, n_val=1, patch_size=32)
    assert sorted(os.listdir(data)) == sorted(['toy'] + folders[2:])


def test_folder_reader_takes_a_class_map_or_list_and_writes_a_default_palette(tmp_path):
    pair_folder(tmp_path / 'mine', np.random.default_rng(4), 2, size=(32, 32))
    for given in [{'0': 'soil', '1': 'tree', '2': 'road'}, ['soil', 'tree', 'road']]:
        (tmp_path / 'mine/classes.json').write_text(json.dumps(given))
        meta, _ = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                      patch_size=32, val_fraction=0.5)
        saved = json.loads((tmp_path / 'data/mine/meta.json').read_text())
        assert saved['classes'] == ['soil', 'tree', 'road'] == meta['classes']
        assert saved['palette'] == pairs.default_palette(3) and saved['num_classes'] == 3
    (tmp_path / 'mine/classes.json').write_text(json.dumps({'classes': 'soil tree road'}))
    with pytest.raises(SystemExit, match=r'mine/classes\.json: want \{"classes": .*; got '):
        run(tmp_path, reader='folder', dataset='mine2', raw_dir=tmp_path / 'mine', patch_size=32)


def test_folder_reader_with_split_folders_and_max_ignore(tmp_path):
    scenes = pair_folder(tmp_path / 'mine', np.random.default_rng(1), 2, size=(32, 64),
                         splits=('train', 'val'))
    scenes['val', 1][1][:, 32:] = 255  # a patch that is all ignore ...
    pairs.save_pair(tmp_path / 'mine' / 'val', 1, *scenes['val', 1], toydata.TOY['palette'][:3])
    meta, d = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                  patch_size=32, max_ignore=0.5)  # ... is dropped
    assert meta['counts'] == {'train': 4, 'val': 3} and meta['skipped']['mostly_ignore'] == 1
    assert np.array_equal(d['val_images'][2], scenes['val', 1][0][:, :32])
    # a value that is neither a class nor the ignore index is an error naming the file
    Image.fromarray(np.full((32, 64), 7, np.uint8)).save(tmp_path / 'mine/train/masks/000000.png')
    with pytest.raises(SystemExit, match=r'train/masks/000000\.png: mask values \[7\] not in'):
        run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=32)


def test_a_failed_run_keeps_the_old_output_and_leaves_nothing_else(tmp_path):
    pair_folder(tmp_path / 'mine', np.random.default_rng(2), 3)
    with pytest.raises(SystemExit, match="ignore_code must be None, True or False"):
        run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', ignore_code='y')
    meta, _ = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                  patch_size=16, ignore_code=True)  # the knob: 255 gets code K = 3 of its own
    assert meta['codes'] == {'num_codes': 4, 'ignore_code': 3}
    (tmp_path / 'mine/images/000002.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 30)
    with pytest.raises(SystemExit, match=r'images/000002\.png: unreadable or truncated'):
        run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=16)
    assert os.listdir(tmp_path / 'data') == ['mine']  # no temporary folder left behind
    assert json.loads((tmp_path / 'data/mine/meta.json').read_text())['counts'] == meta['counts']


def cli(tmp_path, *args):
    return run_python(['prepare.py', *args], cwd=tmp_path, timeout=120)


def test_cli_with_a_dataset_config_and_bad_input(tmp_path):
    pair_folder(tmp_path / 'mine', np.random.default_rng(3), 2, size=(32, 32))
    r = cli(tmp_path, 'configs/folder.py', '--raw_dir=mine', '--patch_size=32',
            '--val_fraction=0.5')
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / 'data/mydata/meta.json').read_text())
    assert meta['counts'] == {'train': 1, 'val': 1} and meta['config']['reader'] == 'folder'
    assert meta['codes'] == {'num_codes': 3, 'ignore_code': None}  # configs/folder.py's knob
    r = cli(tmp_path, 'configs/loveda.py', '--raw_dir=nowhere')
    assert r.returncode != 0 and 'nowhere: raw_dir is not a folder' in r.stderr
    with pytest.raises(SystemExit, match='no isaid files found'):  # not iSAID's layout
        run(tmp_path, reader='isaid', dataset='x', raw_dir=tmp_path / 'mine')
    assert sorted(os.listdir(tmp_path / 'data')) == ['mydata']


# --- the lowdata reader: the low-data protocol's disjoint groups of a prepared dataset ----------
def load_split(data, name):
    folder = data / name
    arrays = {f'{s}_{k}': np.load(folder / f'{s}_{k}.npy') for s in ('train', 'val')
              for k in ('images', 'masks')}
    return json.loads((folder / 'split.json').read_text()), arrays


def patch_keys(images):  # one key per patch, to find patches in the source again
    return [a.tobytes() for a in images]


def test_lowdata_groups_are_disjoint_recorded_and_reproducible(tmp_path):
    pair_folder(tmp_path / 'mine', np.random.default_rng(5), 6, size=(32, 64))  # 2 per scene
    run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=32,
        val_fraction=0.34)  # 4 train scenes (8 patches) and 2 val scenes (4 patches)
    data = tmp_path / 'data'
    source = {k: np.load(data / 'mine' / f'{k}.npy') for k in ('train_images', 'val_images')}
    meta, _ = run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='low', n_d=1,
                  oracle_ratio=3, n_select=2, seed=4)
    record, low = load_split(data, 'low')
    _, oracle = load_split(data, 'low_oracle')
    groups = record['groups']
    assert {k: len(v) for k, v in groups.items()} == {'d': 1, 'oracle': 3, 'select': 2}
    every = sum(groups.values(), [])
    assert len(set(every)) == len(every) and max(every) < 8  # disjoint train patches
    keys = patch_keys(source['train_images'])
    assert patch_keys(low['train_images']) == [keys[i] for i in groups['d']]
    assert patch_keys(oracle['train_images']) == [keys[i] for i in groups['oracle']]
    assert patch_keys(oracle['val_images']) == [keys[i] for i in groups['select']]
    assert np.array_equal(low['val_images'], source['val_images'])  # the reported split, whole
    assert meta['counts'] == {'train': 1, 'val': 4} and meta['classes'] == ['a', 'b', 'c']
    # the record redoes the draw exactly, whatever the seed
    run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='again', seed=99,
        split_file=data / 'low' / 'split.json')
    again, redone = load_split(data, 'again')
    assert again['groups'] == groups
    assert all(np.array_equal(redone[k], low[k]) for k in low)
    # another seed draws other groups; a source with too few patches is refused with numbers
    run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='other', n_d=1, n_select=2,
        seed=5)
    assert load_split(data, 'other')[0]['groups'] != groups
    with pytest.raises(SystemExit, match=r'8 train patches, too few for D 2 \+ oracle 6 \+ '
                                         r'selection 2 = 10'):
        run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='big', n_d=2, n_select=2)
    assert not (data / 'big').exists() and not (data / 'big_oracle').exists()
    assert not [f for f in os.listdir(data) if f.startswith('.')]  # no temporary folders


def test_lowdata_by_source_keeps_whole_images_apart(tmp_path):
    pair_folder(tmp_path / 'mine', np.random.default_rng(6), 8, size=(64, 64))  # 4 per scene
    run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=32,
        val_fraction=0.25)  # 6 train scenes, 24 patches
    data = tmp_path / 'data'
    sources = json.loads((data / 'mine' / 'sources.json').read_text())
    image_of = [sources['train']['scenes'][k] for k, _, _ in sources['train']['patches']]
    for by_source in (False, True):
        for seed in range(6):
            run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='low', n_d=2,
                oracle_ratio=3, n_select=3, seed=seed, by_source=by_source)
            record, _ = load_split(data, 'low')
            images = {g: {image_of[i] for i in record['groups'][g]} for g in record['groups']}
            shared = (images['d'] & images['oracle']) | (images['d'] & images['select']) | (
                images['oracle'] & images['select'])
            if by_source:
                assert not shared, (seed, images)
                assert record['images']['d'] == sorted(images['d'])
            elif shared:
                break  # a patch-level draw does share images (else the test shows nothing)
        else:
            assert by_source, 'six patch-level draws never shared an image'
    with pytest.raises(SystemExit, match=r'too few whole train images'):
        run(tmp_path, reader='lowdata', raw_dir=data / 'mine', dataset='low', n_d=5,
            oracle_ratio=3, n_select=3, by_source=True)  # 23 of 24 patches, but in 7 images


def test_background_class_in_meta(tmp_path):
    """meta.json names the class Copy-Paste never pastes: none for the toy data (every class is
    land cover); for a folder, classes.json's "background" (a name or null), else a class named
    background."""
    meta, _ = run(tmp_path / 't', n_train=1, n_val=1)
    assert meta['background_class'] is None
    pair_folder(tmp_path / 'mine', np.random.default_rng(0), 4, size=(32, 32))
    for given, want in ((None, None), ('b', 1)):  # pair_folder's classes are a, b, c
        info = json.loads((tmp_path / 'mine' / 'classes.json').read_text())
        (tmp_path / 'mine' / 'classes.json').write_text(json.dumps(dict(info, background=given)))
        meta, _ = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                      patch_size=32, val_fraction=0.25)
        assert meta['background_class'] == want
    named = dict(info, classes=['background', 'b', 'c'])
    named.pop('background', None)
    (tmp_path / 'mine' / 'classes.json').write_text(json.dumps(named))
    meta, _ = run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine',
                  patch_size=32, val_fraction=0.25)
    assert meta['background_class'] == 0
    (tmp_path / 'mine' / 'classes.json').write_text(json.dumps(dict(named, background='sky')))
    with pytest.raises(SystemExit, match='"background" must be one of the classes'):
        run(tmp_path, reader='folder', dataset='mine', raw_dir=tmp_path / 'mine', patch_size=32)
    meta, _ = run(tmp_path, reader='lowdata', raw_dir=tmp_path / 'data' / 'mine', dataset='low',
                  n_d=1, oracle_ratio=1, n_select=1)
    assert meta['background_class'] == 0  # kept from the source
