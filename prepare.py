"""Turn a dataset into the one prepared format every stage reads (docs/STYLE.md R8: once).

Writes data_dir/<dataset>/:
    {train,val}_images.npy  uint8 (N, P, P, 3)     load with np.load(path, mmap_mode='r')
    {train,val}_masks.npy   uint8 (N, P, P)        class index 0..K-1, 255 = ignore
    meta.json               classes, palette, num_classes, ignore_index, codes, patch_size,
                            counts, class_freq / ignore_fraction per split, border, source, config
    preview.png             a few train patches, each beside its colourised mask
    sources.json            where each patch came from: {split: {scenes: [image names],
                            patches: [[scene, y, x], ...]}} (pixel offsets in the scene)

    python prepare.py                                          # the embedded toy set -> data/toy
    python prepare.py configs/loveda.py --raw_dir=~/LoveDA     # Train.zip/Val.zip or unzipped
    python prepare.py configs/openearthmap.py --raw_dir=~/OpenEarthMap_wo_xBD
    python prepare.py configs/isaid.py --raw_dir=~/iSAID       # part*.zip + Semantic_masks/
    python prepare.py configs/folder.py --raw_dir=~/mine --dataset=mine   # images/ + masks/
    python prepare.py --reader=lowdata --raw_dir=data/mine --dataset=mine_split64 --n_d=64

Scenes are cut into patch_size patches on a grid from (0, 0), `border` deciding the remainder at
the right/bottom edge. Memory stays flat: pass 1 counts patches from the headers, pass 2 decodes
one scene at a time into .npy files of the final size, in a hidden folder renamed at the very end
(a failed run leaves no data/<dataset>). Downloads, class tables, label codes: docs/DATASETS.md.
The readers (a download -> scenes, a class table and a mask decoder) live in readers.py; this
file checks the settings, patches the scenes, counts the statistics and writes the output.
The 'lowdata' reader cuts a prepared dataset into the low-data protocol's disjoint groups (see
draw_groups): data/<dataset> (train = D, val = the source's val) and data/<dataset>_oracle (train
= the oracle's patches, val = the selection set), each with split.json, the record of the draw.
References: SatSynth, Toker et al., CVPR 2024 (Sec. 4.5, 5.1); nanoGPT data/*/prepare.py.
"""
import json
import os
import re
import shutil
import time

import numpy as np

import pairs
from configurator import check_settings, configure
from readers import close_archives, fail, index, load_mask, open_image  # the dataset readers
from toydata import toy_scene  # the embedded toy scenes

# -----------------------------------------------------------------------------
data_dir = 'data'       # prepared datasets live in data_dir/<dataset>/
dataset = 'toy'         # the output name
out_dir = ''            # unused here; declared so that every stage shares the vocabulary
reader = 'toy'          # 'toy' | 'loveda' | 'openearthmap' | 'isaid' | 'folder' | 'lowdata'
raw_dir = ''            # the download: zips and/or unzipped folders; 'lowdata': a prepared set
patch_size = 256        # side P of the square patches (toy: the scene size)
border = 'drop'         # remainder at the right/bottom edge: 'drop' | 'pad' | 'shift' (see grid)
max_ignore = 1.0        # drop patches whose ignore fraction exceeds this; 1.0 keeps every patch
max_offpalette = 0.001  # colour masks: more off-palette pixels than this fraction is an error
mask_format = 'auto'    # folder: 'index' | 'colour' | 'auto' (colour if any mask is RGB)
classes_file = ''       # folder: the classes.json to use (default: raw_dir's classes.json)
ignore_code = None      # generator code K for 255? None: the reader's (LoveDA yes, others no)
val_fraction = 0.2      # 'folder' without train/ and val/ sub-folders: share of scenes for val
n_train = 512           # toy: train scenes
n_val = 128             # toy: val scenes
seed = 1337             # toy scenes, the 'folder' random split and the 'lowdata' draw
n_preview = 8           # patches shown in preview.png
n_d = 64                # lowdata: patches in D (drawn from the source's train split)
oracle_ratio = 3        # lowdata: the oracle holds oracle_ratio x n_d other train patches
n_select = 32           # lowdata: patches of the selection set (picks best.pt)
by_source = False       # lowdata: whole source images per group (needs the source's sources.json)
split_file = ''         # lowdata: redo the draw recorded in this split.json instead of drawing
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- the low-data split
GROUPS = ('d', 'oracle', 'select')  # drawn from the source's train split; 'val' is its val split
# The lowdata reader's two outputs: (name suffix, the group in its train split, the group in its
# val split). <dataset>: D and the source's val split (the reported one); <dataset>_oracle: the
# oracle and the selection set.
OUTPUTS = (('', 'd', 'val'), ('_oracle', 'oracle', 'select'))


def draw_groups(cfg, src, n_train, sources):
    """The low-data protocol's groups: disjoint lists of the source's train patch indices, D
    (n_d), the oracle (oracle_ratio x n_d) and the selection set (n_select), by a permutation
    seeded with `seed`. by_source: whole source images are dealt to the groups in a seeded order,
    each group taking images until it has enough patches, then its first k in a seeded order
    (so the patches of one image are never in two groups; the rest of the last image is unused)."""
    sizes = dict(d=cfg['n_d'], oracle=cfg['oracle_ratio'] * cfg['n_d'], select=cfg['n_select'])
    need = sum(sizes.values())
    if need > n_train:
        fail(src, f"{n_train} train patches, too few for D {sizes['d']} + oracle "
             f"{sizes['oracle']} + selection {sizes['select']} = {need}")
    rng = np.random.default_rng(cfg['seed'])
    groups = {}
    if not cfg['by_source']:  # one permutation, cut into consecutive runs of the group sizes
        order = rng.permutation(n_train).tolist()
        start = 0
        for name, k in sizes.items():
            groups[name] = sorted(order[start:start + k])
            start += k
        return groups
    if sources is None:
        fail(src, 'by_source needs sources.json: prepare the raw data again with this prepare.py')
    scene_of = np.array([scene for scene, _, _ in sources['train']['patches']])  # patch -> image
    images = iter(rng.permutation(len(sources['train']['scenes'])).tolist())
    for name, k in sizes.items():
        members = []  # the train patches of the images this group has taken
        while len(members) < k:
            image = next(images, None)
            if image is None:
                fail(src, f'too few whole train images for D {sizes["d"]} + oracle '
                     f'{sizes["oracle"]} + selection {sizes["select"]} patches with by_source')
            members += np.flatnonzero(scene_of == image).tolist()
        chosen = rng.permutation(members)[:k]  # k of them, in a seeded order
        groups[name] = sorted(chosen.tolist())
    return groups


def redo_groups(path, src, counts):
    """The groups of an earlier draw, from its split.json, checked against the source."""
    try:
        with open(path) as f:
            record = json.load(f)
        groups = {name: [int(i) for i in record['groups'][name]] for name in GROUPS}
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(path, f'not a split.json written by prepare.py ({type(e).__name__}: {e})')
    if record.get('source_counts') != counts:
        fail(path, f"drawn from a source with {record.get('source_counts')} patches, {src} has "
             f'{counts}')
    every = [i for name in GROUPS for i in groups[name]]
    if len(set(every)) != len(every) or not all(0 <= i < counts['train'] for i in every):
        fail(path, 'its groups overlap or name patches outside the source train split')
    return groups


def index_lowdata(cfg):
    """The two outputs of the lowdata reader: [(dataset name, (scenes, table, notes))]. Each
    scene is one patch of the prepared source dataset raw_dir, named by its source image."""
    src = os.path.abspath(os.path.expanduser(cfg['raw_dir']))
    meta, _ = pairs.load_dataset(src)
    path = os.path.join(src, 'sources.json')
    sources = None
    if os.path.exists(path):
        with open(path) as f:
            sources = json.load(f)
    if cfg['split_file']:
        groups = redo_groups(cfg['split_file'], src, meta['counts'])
    else:
        groups = draw_groups(cfg, src, meta['counts']['train'], sources)
    groups['val'] = list(range(meta['counts']['val']))

    def scene(group, i, out_split):  # patch i of a group, as a scene of an output split
        split = 'val' if group == 'val' else 'train'  # the source split the group indexes
        if sources is None:  # (a source prepared before sources.json existed)
            name = f'{split} patch {i}'
            y, x = 0, 0  # its place in its source image: unknown
        else:
            k, y, x = sources[split]['patches'][i]
            name = sources[split]['scenes'][k]
        return dict(split=out_split, patch=(src, split, i), scene=name, origin=(y, x))

    images = {}  # the source images each group draws from, for the record
    for group in (*GROUPS, 'val'):
        images[group] = sorted({scene(group, i, '')['scene'] for i in groups[group]})
    outputs_described = {}
    for suffix, train, val in OUTPUTS:
        outputs_described[cfg['dataset'] + suffix] = dict(train=train, val=val)
    record = dict(source=src, source_counts=meta['counts'], seed=cfg['seed'],
                  by_source=cfg['by_source'], split_file=cfg['split_file'],
                  sizes={group: len(groups[group]) for group in GROUPS},
                  groups={group: groups[group] for group in GROUPS},  # source train indices
                  outputs=outputs_described, images=images)
    coded = meta['codes']['ignore_code'] is not None
    table = dict(classes=meta['classes'], palette=meta['palette'], patch_size=meta['patch_size'],
                 background_class=meta.get('background_class'),
                 coded=coded, record=record, source=f'lowdata split of {src} (split.json)')
    outputs = []
    for suffix, train, val in OUTPUTS:
        scenes = [scene(train, i, 'train') for i in groups[train]]
        scenes += [scene(val, i, 'val') for i in groups[val]]
        outputs.append((cfg['dataset'] + suffix, (scenes, table, {})))
    return outputs


# ----------------------------------------------------------------------------- patching
BORDER = {  # what happens to the H % P rows / W % P columns left at a scene's far edges
    'drop': 'non-overlapping grid from (0, 0); the remainder strips are not used',
    'shift': 'non-overlapping grid from (0, 0) + a last row/column ending at the edge (overlaps)',
    'pad': 'non-overlapping grid from (0, 0) running past the edge: image 0, mask 255 (ignore)'}


def grid(n, P, border):
    """Patch starts along an axis of n pixels (see BORDER); n < P gives none unless 'pad'."""
    starts = list(range(0, n - P + 1, P))  # the whole patches
    remainder = n % P
    if remainder and border == 'pad':
        starts.append(n - remainder)  # one more patch, running past the edge
    elif remainder and border == 'shift' and n > P:
        starts.append(n - P)  # one more patch, ending at the edge (overlapping the one before)
    return starts


def load_scene(scene, cfg, spec):
    """One scene: image (H, W, 3), mask (H, W) of class indices and its off-palette count."""
    if 'toy' in scene:
        image, mask = toy_scene(np.random.default_rng(scene['toy']), cfg['patch_size'])
        return image, mask, 0
    if 'patch' in scene:  # lowdata: one patch of a prepared dataset
        folder, split, i = scene['patch']
        image = np.load(os.path.join(folder, f'{split}_images.npy'), mmap_mode='r')[i]
        mask = np.load(os.path.join(folder, f'{split}_masks.npy'), mmap_mode='r')[i]
        return image, mask, 0
    mask, off = load_mask(scene['mask'], scene['mask_name'], spec, cfg['max_offpalette'])
    im = open_image(scene['image'], scene['image_name'])
    if im.mode not in ('RGB', 'RGBA', 'L', 'LA', 'P'):  # grayscale DOTA scenes become RGB
        fail(scene['image_name'], f'unsupported image mode {im.mode} (want 8-bit RGB or gray)')
    image = np.asarray(im.convert('RGB'))  # (H, W, 3) uint8
    if image.shape[:2] != mask.shape:  # headers agreed (pass 1), so this is a broken file
        mask_h, mask_w = mask.shape
        image_h, image_w = image.shape[:2]
        fail(scene['mask_name'], f'decodes to ({mask_w}, {mask_h}), its image '
             f'({image_w}, {image_h})')  # (width, height), as PIL gives sizes
    return image, mask, off


def cut(image, mask, starts, P):
    """(n, P, P, 3) and (n, P, P) patches at the (y, x) starts, padding past the edge if needed."""
    H, W = mask.shape
    pad_h = max(0, max(y for y, _ in starts) + P - H)  # rows the last patch needs past the edge
    pad_w = max(0, max(x for _, x in starts) + P - W)
    mask = np.pad(mask, ((0, pad_h), (0, pad_w)), constant_values=255)
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    image_patches = np.stack([image[y:y + P, x:x + P] for y, x in starts])
    mask_patches = np.stack([mask[y:y + P, x:x + P] for y, x in starts])
    return image_patches, mask_patches


def build(cfg, out, indexed=None):
    """Both passes, writing into the folder `out` the dataset that index(cfg) describes (or
    `indexed`, its scenes, class table and notes); returns meta.json's dict."""
    scenes, table, notes = indexed or index(cfg)
    P = table.get('patch_size', cfg['patch_size'])  # (lowdata: the source's patch size)
    border = cfg['border']
    t0 = time.time()
    spec = table.get('spec')  # the mask decoder (None for toy and lowdata scenes)
    K = len(table['classes'])
    splits = ('train', 'val')
    # pass 1: the patch grid of every scene from its header, so the outputs get their exact size
    counts = dict.fromkeys(splits, 0)  # patches per split
    notes = dict(notes, too_small=0, mostly_ignore=0)  # scenes and patches skipped, and why
    for sc in scenes:
        in_memory = 'toy' in sc or 'patch' in sc  # generated, or a patch of a prepared set
        if in_memory:
            W, H = P, P
            w, h = P, P
        else:
            W, H = open_image(sc['image'], sc['image_name'], header_only=True).size
            w, h = open_image(sc['mask'], sc['mask_name'], header_only=True).size
        if (w, h) != (W, H):
            fail(sc['mask_name'], f'mask is {w}x{h} but its image {sc["image_name"]} is {W}x{H}')
        sc['starts'] = [(y, x) for y in grid(H, P, border) for x in grid(W, P, border)]
        if not sc['starts']:
            notes['too_small'] += 1
        if sc['starts'] and cfg['max_ignore'] < 1:  # only then must pass 1 decode the masks
            image, mask, _ = load_scene(sc, cfg, spec)
            _, masks = cut(image, mask, sc['starts'], P)
            keep = (masks == 255).mean((1, 2)) <= cfg['max_ignore']  # per patch
            notes['mostly_ignore'] += int((~keep).sum())
            sc['starts'] = [start for start, k in zip(sc['starts'], keep) if k]
        counts[sc['split']] += len(sc['starts'])
    for s in splits:  # an empty split is an error here, else train_gen.py fails far from the cause
        if counts[s]:
            continue
        if not any(sc['split'] == s for sc in scenes):
            why = f'no {s} scenes'
        elif cfg['max_ignore'] == 1:
            why = f'every {s} image is smaller than patch_size (lower it, or --border=pad)'
        else:
            why = f'every {s} image is smaller than patch_size or has no patch within max_ignore'
        fail(cfg['raw_dir'] or cfg['dataset'], f'0 {s} patches of {P}x{P}: {why}')
    path = {}  # (split, 'images' or 'masks') -> its .npy file
    for s in splits:  # created at full size (sparse on disk) and filled in pass 2
        path[s, 'images'] = os.path.join(out, f'{s}_images.npy')
        path[s, 'masks'] = os.path.join(out, f'{s}_masks.npy')
        np.lib.format.open_memmap(path[s, 'images'], 'w+', np.uint8, (counts[s], P, P, 3))
        np.lib.format.open_memmap(path[s, 'masks'], 'w+', np.uint8, (counts[s], P, P))
    # pass 2: one scene at a time, re-opening the memmap per scene: a page written through a
    # mapping stays resident until unmapped, so one mapping over LoveDA's 8 GB would peak at 8 GB.
    # hist[s][0]: pixels per mask value in the whole scenes, hist[s][1]: in the patches cut
    hist = {s: np.zeros((2, 256), np.int64) for s in splits}
    filled = dict.fromkeys(splits, 0)  # patches written so far per split
    offpalette = {}  # mask file -> its off-palette pixels (turned into ignore)
    sources = {s: dict(scenes=[], patches=[]) for s in splits}  # sources.json: patch -> image
    scene_number = {s: {} for s in splits}  # scene name -> its index in sources[s]['scenes']
    for sc in scenes:
        if not sc['starts']:
            continue
        image, mask, off = load_scene(sc, cfg, spec)
        images, masks = cut(image, mask, sc['starts'], P)
        s = sc['split']
        first = filled[s]  # where this scene's patches go
        n = len(masks)
        np.load(path[s, 'images'], mmap_mode='r+')[first:first + n] = images  # a new mapping
        np.load(path[s, 'masks'], mmap_mode='r+')[first:first + n] = masks  # per write: unmapped
        hist[s][0] += np.bincount(mask.ravel(), minlength=256)
        hist[s][1] += np.bincount(masks.ravel(), minlength=256)
        filled[s] = first + n
        names = sources[s]['scenes']
        if sc['scene'] not in scene_number[s]:  # (lowdata: many scenes are one source image)
            scene_number[s][sc['scene']] = len(names)
            names.append(sc['scene'])
        origin_y, origin_x = sc.get('origin', (0, 0))  # lowdata: the patch's place in its image
        for y, x in sc['starts']:
            sources[s]['patches'].append([scene_number[s][sc['scene']], origin_y + y, origin_x + x])
        if off:
            offpalette[sc['mask_name']] = off
    assert filled == counts  # pass 2 wrote exactly the patches pass 1 counted
    assert all(h[:, K:255].sum() == 0 for h in hist.values())  # class indices and 255 only
    n_scenes = {s: len(sources[s]['scenes']) for s in splits}  # lowdata: source images, not patches
    coded = cfg['ignore_code']  # does the generator give ignore a code of its own (bits.py)?
    if coded is None:  # the reader's default: LoveDA codes ignore; lowdata keeps its source's
        coded = table.get('coded', cfg['reader'] == 'loveda')
    class_freq = {}  # per split: the fraction of the labelled patch pixels per class
    ignore_fraction = {}  # per split: the fraction of patch pixels that are ignore
    class_pixels = {}  # per split: labelled patch pixels per class
    scene_class_pixels = {}  # per split: whole-scene pixels per class, then the ignore pixels
    for s, h in hist.items():
        class_freq[s] = (h[1, :K] / max(1, h[1, :K].sum())).round(6).tolist()
        ignore_fraction[s] = float(h[1, 255] / max(1, h[1].sum()))
        class_pixels[s] = h[1, :K].tolist()
        scene_class_pixels[s] = h[0, :K].tolist() + [int(h[0, 255])]
    meta = dict(name=cfg['dataset'], classes=table['classes'], palette=table['palette'],
                background_class=table['background_class'],  # Copy-Paste pastes the others
                num_classes=K, ignore_index=255, patch_size=P, counts=counts, scenes=n_scenes,
                codes=dict(num_codes=K + 1 if coded else K,  # the label codes bits.py encodes
                           ignore_code=K if coded else None),
                class_freq=class_freq, ignore_fraction=ignore_fraction, class_pixels=class_pixels,
                scene_class_pixels=scene_class_pixels,
                border=border, border_note=BORDER[border], max_ignore=cfg['max_ignore'],
                skipped=notes, offpalette_pixels=offpalette, source=table['source'], config=cfg)
    pairs.save_json(meta, os.path.join(out, 'meta.json'))
    pairs.save_json(sources, os.path.join(out, 'sources.json'))
    if 'record' in table:  # lowdata: which source patch went where
        pairs.save_json(table['record'], os.path.join(out, 'split.json'))
    # the preview: train patches spread over the split (never empty), beside their masks
    n_preview = min(cfg['n_preview'], counts['train'])
    preview = np.linspace(0, counts['train'] - 1, n_preview).astype(int)  # patch indices
    images = np.load(path['train', 'images'], mmap_mode='r')[preview]
    masks = np.load(path['train', 'masks'], mmap_mode='r')[preview]
    pairs.save_png(pairs.make_grid(images, masks, table['palette'], nrow=4), f'{out}/preview.png')
    summary = (f"{cfg['dataset']}: {counts['train']} train / {counts['val']} val patches of "
               f"{P}x{P} from {n_scenes['train']} / {n_scenes['val']} scenes in "
               f"{time.time() - t0:.1f}s; skipped {notes}")
    if offpalette:
        summary += f'; off-palette pixels {offpalette}'
    print(summary)
    print('class                 train     val   (fraction of labelled pixels)')
    for k, name in enumerate(table['classes']):
        print(f"{name:20s} {class_freq['train'][k]:6.4f}  {class_freq['val'][k]:6.4f}")
    print(f"{'(ignore)':20s} {ignore_fraction['train']:6.4f}  {ignore_fraction['val']:6.4f}")
    return meta


def killed(name, f):
    """Whether folder f is a .<name>.tmp-<pid>[.old] that a killed run left behind."""
    m = re.fullmatch(re.escape(f'.{name}.tmp-') + r'(\d{1,9})(\.old)?', f)
    if m is None:  # not a temporary folder of <name>
        return False
    pid = int(m[1])
    if pid == os.getpid():  # ours, yet not made by this run (pids repeat in containers): stale
        return True
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except OSError as e:  # ProcessLookupError: it has ended; PermissionError: another user's
        return isinstance(e, ProcessLookupError)
    return False  # that run is still going


def prepare(cfg):
    """Build data_dir/<dataset> atomically: in a hidden temporary folder, renamed at the end
    (lowdata: <dataset> and <dataset>_oracle, both renamed once both are complete)."""
    readers = ('toy', 'loveda', 'openearthmap', 'isaid', 'folder', 'lowdata')
    problems = []  # one per bad setting, all reported before anything is written
    if cfg['reader'] not in readers:
        problems.append(f"reader must be {'|'.join(readers)}, got {cfg['reader']!r}")
    if cfg['border'] not in BORDER:
        problems.append(f"border must be drop|pad|shift, got {cfg['border']!r}")
    if type(cfg['patch_size']) is not int or cfg['patch_size'] < 1:
        problems.append(f"patch_size must be a whole number >= 1, got {cfg['patch_size']!r}")
    if not 0 <= cfg['max_ignore'] <= 1:
        problems.append(f"max_ignore must be in [0, 1], got {cfg['max_ignore']}")
    if not 0 <= cfg['val_fraction'] <= 1:
        problems.append(f"val_fraction must be in [0, 1], got {cfg['val_fraction']}")
    if cfg['ignore_code'] not in (None, True, False):
        problems.append(f"ignore_code must be None, True or False, got {cfg['ignore_code']!r}")
    if cfg['mask_format'] not in ('auto', 'index', 'colour'):
        problems.append(f"mask_format must be auto|index|colour, got {cfg['mask_format']!r}")
    if cfg['reader'] == 'lowdata':
        for key in ('n_d', 'oracle_ratio', 'n_select'):
            if type(cfg[key]) is not int or cfg[key] < 1:
                problems.append(f'{key} must be a whole number >= 1, got {cfg[key]!r}')
        source = ''
        if cfg['raw_dir']:
            source = os.path.abspath(os.path.expanduser(cfg['raw_dir']))
        if source == os.path.abspath(os.path.join(cfg['data_dir'], cfg['dataset'])):
            problems.append(f'dataset must not be its own source raw_dir, got {cfg["dataset"]!r} '
                            f'(it would replace {source})')
    check_settings('prepare.py', problems)
    os.makedirs(cfg['data_dir'], exist_ok=True)
    if cfg['reader'] == 'lowdata':
        outputs = index_lowdata(cfg)
    else:
        outputs = [(cfg['dataset'], None)]  # build() indexes the raw data itself
    done = []  # (temporary folder, final folder) of the outputs built
    metas = []
    try:
        for name, indexed in outputs:
            final = os.path.join(cfg['data_dir'], name)
            tmp = os.path.join(cfg['data_dir'], f'.{name}.tmp-{os.getpid()}')
            for f in sorted(os.listdir(cfg['data_dir'])):
                if killed(name, f):
                    print(f"removing {os.path.join(cfg['data_dir'], f)}: the temporary folder "
                          'of a killed run')
                    shutil.rmtree(os.path.join(cfg['data_dir'], f))
            os.makedirs(tmp)
            done.append((tmp, final))
            metas.append(build(dict(cfg, dataset=name), tmp, indexed))
        for tmp, final in done:
            if os.path.exists(final):  # an old copy is replaced only once the new one is complete
                os.replace(final, tmp + '.old')
            os.replace(tmp, final)
            shutil.rmtree(tmp + '.old', ignore_errors=True)
            print(f'wrote {final}/')
    except BaseException:  # errors and Ctrl-C alike: leave nothing half-written behind
        for tmp, _ in done:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        close_archives()
    return metas[0]


if __name__ == '__main__':
    prepare(configure(globals()))

# Expected output of `python prepare.py` (~18 s of CPU time on 2 cores; 55 s wall-clock while
# shared with other jobs; peak RSS 0.26 GB, mostly torch imported through pairs): "toy: 512 train /
# 128 val patches of 256x256 from 512 / 128 scenes", then the class fractions (train, val) bare_soil
# .3234 .3533, building .0216 .0225, road .0730 .0767, water .0574 .0558, tree .0978 .0958,
# agriculture .4268 .3959. A LoveDA-sized input (2522 tiles of 1024 -> 40,352 patches, 10 GB of
# .npy) peaks at 0.29 GB RSS, as 252 tiles do (0.28 GB): memory does not grow with the dataset.
