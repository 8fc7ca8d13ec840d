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
The 'lowdata' reader cuts a prepared dataset into the low-data protocol's disjoint groups (see
draw_groups): data/<dataset> (train = D, val = the source's val) and data/<dataset>_oracle (train
= the oracle's patches, val = the selection set), each with split.json, the record of the draw.
References: SatSynth, Toker et al., CVPR 2024 (Sec. 4.5, 5.1); nanoGPT data/*/prepare.py.
"""
import io
import json
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

import pairs
from configurator import configure
from toydata import TOY, toy_scene  # the embedded toy scenes

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

# Class tables. LoveDA and OpenEarthMap store 0 = no-data/unknown, so raw value v is class v - 1.
LOVEDA = dict(classes='background building road water barren forest agriculture'.split(),
              palette=[[255, 255, 255], [255, 0, 0], [255, 255, 0], [0, 0, 255], [159, 129, 183],
                       [0, 255, 0], [255, 195, 128]], background_class=0)  # mmseg's colours
OEM = dict(classes='bareland rangeland developed_space road tree water agriculture_land building'
           .split(), palette=[[128, 0, 0], [0, 255, 36], [148, 148, 148], [255, 255, 255],
                              [34, 97, 38], [0, 69, 255], [75, 181, 73], [222, 31, 7]],
           background_class=None)  # utils.py; class 0 is bareland, not a background
# iSAID: 16 classes with background (as mmseg, reduce_zero_label=False; the paper's 15 are the
# foreground). R, G, B on disk, from the devkit's labels.py (FarSeg swaps storage_tank, roundabout).
ISAID = dict(classes='background ship storage_tank baseball_diamond tennis_court basketball_court '
             'ground_track_field bridge large_vehicle small_vehicle helicopter swimming_pool '
             'roundabout soccer_ball_field plane harbor'.split(),
             palette=[[0, 0, 0], [0, 0, 63], [0, 63, 63], [0, 63, 0], [0, 63, 127], [0, 63, 191],
                      [0, 63, 255], [0, 127, 63], [0, 127, 127], [0, 0, 127], [0, 0, 191],
                      [0, 0, 255], [0, 191, 127], [0, 127, 191], [0, 127, 255], [0, 100, 155]],
             background_class=0)
# Image and mask regexes over the paths of a recursive walk (zip members appear as <zip>/<member>),
# the layouts described in configs/<reader>.py. All groups together name the scene; the split is
# the 'train' or 'val' folder named in group 1 (folder: the path above images/, which may also
# name a scene folder, e.g. "Tile 1"; none: the scenes are split at random).
PATTERNS = {
    'loveda': (r'(?:^|/)(Train|Val)/(Urban|Rural)/images_png/(\d+)\.png$',
               r'(?:^|/)(Train|Val)/(Urban|Rural)/masks_png/(\d+)\.png$'),
    'isaid': (r'(?:^|/)(train|val)/(?:.*/)?(P\d{4})\.png$',
              r'(?:^|/)(train|val)/(?:.*/)?(P\d{4})_instance_color_RGB\.png$'),
    'folder': (r'^(?:(.*)/)?images/([^/]+)\.(?i:png|tiff?|jpe?g)$',
               r'^(?:(.*)/)?masks/([^/]+)\.(?i:png|tiff?)$')}
SPLIT_FOLDER = r'(?i)(?:^|/)(train|val)(?:/|$)'  # where in group 1 the split is named
Image.MAX_IMAGE_PIXELS = 400_000_000  # DOTA scenes reach ~52 MP; PIL warns above 89 MP anyway


def fail(where, problem):
    """Every bad input ends here: a non-zero exit with a message naming the file and the problem."""
    raise SystemExit(f'prepare.py: error: {where}: {problem}')


# ----------------------------------------------------------------------------- file access
_zips = {}  # open ZipFile per archive: members are read in place, never extracted to disk


def walk(root):
    """Every file under root as [(posix path relative to root, (file, zip member or None))],
    plain files first so that an unzipped copy wins over the same file inside a zip."""
    if not os.path.isdir(root):
        fail(root or "raw_dir ''", 'raw_dir is not a folder (give --raw_dir=...)')
    files, members = [], []
    for folder, _, names in sorted(os.walk(root)):
        for path in [os.path.join(folder, name) for name in sorted(names)]:
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            if not rel.lower().endswith('.zip'):
                files.append((rel, (path, None)))
                continue
            try:
                _zips[path] = _zips.get(path) or zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as e:
                fail(path, f'unreadable zip ({e})')
            members += [(f'{rel}/{m}', (path, m)) for m in _zips[path].namelist() if m[-1] != '/']
    return files + members


def read_bytes(src):
    path, member = src
    return Path(path).read_bytes() if member is None else _zips[path].read(member)


def open_image(src, name, header_only=False):
    """A PIL image of a file or zip member; header_only: its size, from its first bytes only."""
    path, member = src
    try:
        im = Image.open(path if member is None else _zips[path].open(member) if header_only
                        else io.BytesIO(read_bytes(src)))
        if not header_only:
            im.load()  # a truncated file fails here
        return im
    except (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile,
            Image.DecompressionBombError) as e:
        fail(name, f'unreadable or truncated image ({type(e).__name__}: {e})')


def load_mask(src, name, spec, max_offpalette):
    """Decode a mask into class indices (H, W) uint8, 255 = ignore; also its off-palette count.
    spec['lut'] maps a raw value (iSAID: the colour R | G << 8 | B << 16) to its class, -1 where
    the dataset defines none: an error for index masks, ignore for colours (up to a threshold)."""
    im = open_image(src, name)
    if spec['colour']:  # iSAID, colour-coded folders: one flat colour per class
        if im.mode not in ('RGB', 'RGBA', 'P'):
            fail(name, f'expected an RGB colour mask, got mode {im.mode}' + spec.get('hint', ''))
        rgb = np.pad(np.asarray(im.convert('RGB')), ((0, 0), (0, 0), (0, 1)))  # (H, W, 4) RGB0
        raw = rgb.view('<u4')[..., 0]  # R | G << 8 | B << 16 without temporaries: DOTA is big
    elif im.mode in ('L', 'P'):  # a 'P' mask holds raw indices: never .convert('L') it
        raw = np.asarray(im)
    else:
        fail(name, f'expected a single-channel 8-bit index mask, got mode {im.mode}')
    out = spec['lut'][raw]  # (H, W) int16
    bad = out < 0
    off, found = int(np.count_nonzero(bad)), np.unique(raw[bad])[:5].tolist()
    if off and not spec['colour'] and not spec.get('lenient'):
        fail(name, f'mask values {found} not in {spec["values"]}' + spec.get('hint', ''))
    if off and spec.get('lenient'):  # OpenEarthMap (docs/DATASETS.md): > 8 -> ignore + warning
        print(f'warning: {name}: {off} pixels with undefined values {found} -> ignore (255)')
    elif off > max_offpalette * out.size:
        fail(name, f'{off} off-palette pixels ({off / out.size:.3%} > max_offpalette='
             f'{max_offpalette}), e.g. RGB {[(k & 255, k >> 8 & 255, k >> 16) for k in found]}')
    out[bad] = 255
    return out.astype(np.uint8), off


def make_lut(values, classes, colour=False):
    """The raw value -> class table of load_mask (values not listed map to -1)."""
    lut = np.full(1 << 24 if colour else 256, -1, np.int16)
    lut[values] = classes
    return dict(lut=lut, colour=colour, values=sorted(values))


# ----------------------------------------------------------------------------- readers
def pair_up(files, reader, raw_dir):
    """Scenes [dict(split, image, mask, image_name, mask_name, scene)] from the reader's two
    regexes; `scene` is the image's path under raw_dir (sources.json names scenes by it)."""
    found, dups = {}, 0
    for role, pattern in enumerate(PATTERNS[reader]):
        for rel, src in files:
            m = re.search(pattern, rel)
            if m is None:
                continue
            split = re.search(SPLIT_FOLDER, m[1] or '')
            key = (split[1].lower() if split else 'all',) + tuple(g or '' for g in m.groups())
            slot = found.setdefault(key, [None, None])
            dups += slot[role] is not None  # the same scene in a folder and in a zip
            slot[role] = slot[role] or (rel, src)
    for image, mask in found.values():
        if image is None or mask is None:
            rel = (image or mask)[0]
            fail(os.path.join(raw_dir, rel), 'has no matching ' + ('image' if image is None
                                                                 else 'mask'))
    scenes = [dict(split=key[0], image=image[1], mask=mask[1], scene=image[0],
                   image_name=os.path.join(raw_dir, image[0]),
                   mask_name=os.path.join(raw_dir, mask[0]))
              for key, (image, mask) in sorted(found.items())]
    return scenes, dict(duplicates=dups)  # the first copy is used


def index_openearthmap(files, raw_dir):
    """Scenes listed in train.txt / val.txt; a listed tile whose image is missing (the xBD tiles
    of OpenEarthMap_wo_xBD) is skipped and counted, a missing label is an error."""
    lists, tifs = {}, {}
    for rel, src in files:
        if m := re.search(r'(?:^|/)(train|val)\.txt$', rel):
            lists.setdefault(m[1], (rel, src))
        if m := re.search(r'(?:^|/)[^/]+/(images|labels)/([^/]+\.tiff?)$', rel):
            tifs.setdefault((m[1], m[2]), (os.path.join(raw_dir, rel), src))
    scenes, missing = [], 0
    for split, (rel, src) in sorted(lists.items()):
        for name in filter(None, map(str.strip, read_bytes(src).decode().splitlines())):
            image, label = tifs.get(('images', name)), tifs.get(('labels', name))  # LF/CRLF/CR
            if image is None:
                missing += 1
            elif label is None:
                fail(image[0], f'listed in {rel} but labels/{name} is missing')
            else:
                scenes.append(dict(split=split, image=image[1], mask=label[1], scene=name,
                                   image_name=image[0], mask_name=label[0]))
    return scenes, dict(missing_image=missing)  # the xBD tiles, unless you compiled them


def folder_classes(cfg, raw, scenes):
    """The folder reader's class table and mask decoder. Index masks ('L' or 'P', values 0..K-1
    and ignore_index) or colour masks (RGB, or 'P' in a colour-coded set), each colour of
    classes.json's palette one class and each of its `ignore_colours` 255 (ignore)."""
    path = cfg['classes_file'] and os.path.abspath(os.path.expanduser(cfg['classes_file']))
    if not path:  # raw_dir's own description, as pairs.read_classes looks for it
        path = next((os.path.join(raw, f) for f in ('meta.json', 'classes.json')
                     if os.path.exists(os.path.join(raw, f))), '')
    if not path:
        fail(raw, 'no classes.json (or meta.json) describing the classes; or give --classes_file')
    if not os.path.isfile(path):
        fail(path, 'classes_file does not exist')
    table = pairs.read_classes(os.path.dirname(path), names=(os.path.basename(path),))
    K, ignore = len(table['classes']), table['ignore_index']
    if not K <= ignore < 256:
        fail(path, f'need ignore_index in {K}..255, got {ignore}')
    # the background class (Copy-Paste never pastes it): "background": a class name or null;
    # without the key, a class named "background" if there is one
    named = [k for k, name in enumerate(table['classes']) if name.lower() == 'background']
    background = table.get('background', table['classes'][named[0]] if named else None)
    if background is not None and background not in table['classes']:
        fail(path, f'"background" must be one of the classes or null, got {background!r}')
    table = dict(table, background_class=None if background is None
                 else table['classes'].index(background))
    fmt = cfg['mask_format']
    if fmt == 'auto':  # a set with any RGB mask is colour-coded, its 'P' masks too
        modes = {open_image(sc['mask'], sc['mask_name'], True).mode for sc in scenes}
        fmt = 'colour' if modes & {'RGB', 'RGBA'} else 'index'
    if fmt == 'index':
        spec = make_lut([*range(K), ignore], [*range(K), 255])
        spec['hint'] = ' (colour-coded masks? --mask_format=colour)'
        return table, spec
    with open(path) as f:
        given = json.load(f)
    ignore_colours = given.get('ignore_colours', []) if isinstance(given, dict) else []
    colours = [tuple(c) for c in table['palette']]
    problems = []
    if not isinstance(given, dict) or 'palette' not in given:
        problems.append('colour masks need a "palette": the mask colour of each class')
    if not (isinstance(ignore_colours, list) and all(
            isinstance(c, list) and len(c) == 3 and all(type(v) is int and 0 <= v < 256 for v in c)
            for c in ignore_colours)):
        problems.append('"ignore_colours" must be a list of [r, g, b]')
        ignore_colours = []
    ignore_colours = [tuple(c) for c in ignore_colours]
    repeated = sorted({c for c in colours + ignore_colours
                       if (colours + ignore_colours).count(c) > 1})
    if repeated:
        problems.append(f'colours listed twice (palette, ignore_colours): {repeated}')
    if problems:
        fail(path, '; '.join(problems))
    spec = make_lut([r | g << 8 | b << 16 for r, g, b in colours + ignore_colours],
                    [*range(K)] + [255] * len(ignore_colours), True)
    spec['hint'] = ' (an index mask? --mask_format=index)'
    return dict(table, ignore_colours=[list(c) for c in ignore_colours]), spec


def index(cfg):
    """The configured dataset's scenes, class table (with `spec`, the mask decoder) and notes."""
    reader, raw = cfg['reader'], cfg['raw_dir'] and os.path.abspath(os.path.expanduser(
        cfg['raw_dir']))  # '' stays '': no silent scan of the working directory
    if reader == 'toy':
        scenes = [dict(split=split, toy=(cfg['seed'], s, i), scene=f"toy {cfg['seed']} {split} {i}")
                  for s, split in enumerate(('train', 'val')) for i in range(cfg['n_' + split])]
        return scenes, dict(TOY, source=f'toy generator of prepare.py, seed {cfg["seed"]}'), {}
    files = walk(raw)
    scenes, notes = (index_openearthmap(files, raw) if reader == 'openearthmap'
                     else pair_up(files, reader, raw))
    if reader in ('loveda', 'openearthmap'):  # raw 0 = no-data / unknown -> ignore, v -> v - 1
        table = LOVEDA if reader == 'loveda' else OEM
        spec = make_lut(range(len(table['classes']) + 1), [255, *range(len(table['classes']))])
        spec['lenient'] = reader == 'openearthmap'  # LoveDA defines no value > 7: those are errors
    elif reader == 'isaid':  # background (0, 0, 0) is class 0 of 16
        table = ISAID
        spec = make_lut([r | g << 8 | b << 16 for r, g, b in ISAID['palette']], range(16), True)
        spec['hint'] = ' (an mmseg-converted copy? use the original *_instance_color_RGB.png)'
    else:  # folder: the pair layout sample.py writes; classes from classes.json / meta.json
        table, spec = folder_classes(cfg, raw, scenes)
        splits = {s['split'] for s in scenes}
        if 'all' in splits and len(splits) > 1:
            fail(raw, 'mixes images/ at the top with train/ or val/ sub-folders')
        if splits == {'all'}:  # a seeded random split of whole images
            n_val = int(round(cfg['val_fraction'] * len(scenes)))
            for rank, i in enumerate(np.random.default_rng(cfg['seed']).permutation(len(scenes))):
                scenes[i]['split'] = 'val' if rank < n_val else 'train'
    if not scenes:
        fail(raw, f'no {reader} files found (configs/{reader}.py describes the layout)')
    return scenes, dict(classes=list(table['classes']), palette=[list(c) for c in table['palette']],
                        background_class=table['background_class'], spec=spec,
                        source=f'{reader} files under {raw}'), notes


# ----------------------------------------------------------------------------- the low-data split
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
    if not cfg['by_source']:
        order = rng.permutation(n_train).tolist()
        for name, k in sizes.items():
            groups[name], order = sorted(order[:k]), order[k:]
        return groups
    if sources is None:
        fail(src, 'by_source needs sources.json: prepare the raw data again with this prepare.py')
    scene_of = np.array([scene for scene, _, _ in sources['train']['patches']])
    images = iter(rng.permutation(len(sources['train']['scenes'])).tolist())
    for name, k in sizes.items():
        members = []
        while len(members) < k:
            image = next(images, None)
            if image is None:
                fail(src, f'too few whole train images for D {sizes["d"]} + oracle '
                     f'{sizes["oracle"]} + selection {sizes["select"]} patches with by_source')
            members += np.flatnonzero(scene_of == image).tolist()
        groups[name] = sorted(rng.permutation(members)[:k].tolist())
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


GROUPS = ('d', 'oracle', 'select')  # drawn from the source's train split; 'val' is its val split
# The lowdata reader's two outputs: (name suffix, the group in its train split, the group in its
# val split). <dataset>: D and the source's val split (the reported one); <dataset>_oracle: the
# oracle and the selection set.
OUTPUTS = (('', 'd', 'val'), ('_oracle', 'oracle', 'select'))


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
            name, y, x = f'{split} patch {i}', 0, 0
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
    starts = list(range(0, n - P + 1, P))
    if n % P and (border == 'pad' or border == 'shift' and n > P):
        starts.append(n - n % P if border == 'pad' else n - P)
    return starts


def load_scene(scene, cfg, spec):
    """One scene: image (H, W, 3), mask (H, W) of class indices and its off-palette count."""
    if 'toy' in scene:
        return *toy_scene(np.random.default_rng(scene['toy']), cfg['patch_size']), 0
    if 'patch' in scene:  # lowdata: one patch of a prepared dataset
        folder, split, i = scene['patch']
        return [np.load(os.path.join(folder, f'{split}_{kind}.npy'), mmap_mode='r')[i]
                for kind in ('images', 'masks')] + [0]
    mask, off = load_mask(scene['mask'], scene['mask_name'], spec, cfg['max_offpalette'])
    im = open_image(scene['image'], scene['image_name'])
    if im.mode not in ('RGB', 'RGBA', 'L', 'LA', 'P'):  # grayscale DOTA scenes become RGB
        fail(scene['image_name'], f'unsupported image mode {im.mode} (want 8-bit RGB or gray)')
    image = np.asarray(im.convert('RGB'))  # (H, W, 3) uint8
    if image.shape[:2] != mask.shape:  # headers agreed (pass 1), so this is a broken file
        fail(scene['mask_name'], f'decodes to {mask.shape[::-1]}, its image {image.shape[1::-1]}')
    return image, mask, off


def cut(image, mask, starts, P):
    """(n, P, P, 3) and (n, P, P) patches at the (y, x) starts, padding past the edge if needed."""
    ph, pw = (max(0, max(st[a] for st in starts) + P - mask.shape[a]) for a in (0, 1))
    mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=255)
    image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    return [np.stack([a[y:y + P, x:x + P] for y, x in starts]) for a in (image, mask)]


def build(cfg, out, indexed=None):
    """Both passes, writing into the folder `out` the dataset that index(cfg) describes (or
    `indexed`, its scenes, class table and notes); returns meta.json's dict."""
    scenes, table, notes = indexed or index(cfg)
    P, border, t0 = table.get('patch_size', cfg['patch_size']), cfg['border'], time.time()
    spec, K, splits = table.get('spec'), len(table['classes']), ('train', 'val')
    # pass 1: the patch grid of every scene from its header, so the outputs get their exact size
    counts, notes = dict.fromkeys(splits, 0), dict(notes, too_small=0, mostly_ignore=0)
    for sc in scenes:
        in_memory = 'toy' in sc or 'patch' in sc  # generated, or a patch of a prepared set
        W, H = (P, P) if in_memory else open_image(sc['image'], sc['image_name'], True).size
        w, h = (W, H) if in_memory else open_image(sc['mask'], sc['mask_name'], True).size
        if (w, h) != (W, H):
            fail(sc['mask_name'], f'mask is {w}x{h} but its image {sc["image_name"]} is {W}x{H}')
        sc['starts'] = [(y, x) for y in grid(H, P, border) for x in grid(W, P, border)]
        notes['too_small'] += not sc['starts']
        if sc['starts'] and cfg['max_ignore'] < 1:  # only then must pass 1 decode the masks
            _, masks = cut(*load_scene(sc, cfg, spec)[:2], sc['starts'], P)
            keep = (masks == 255).mean((1, 2)) <= cfg['max_ignore']
            notes['mostly_ignore'] += int((~keep).sum())
            sc['starts'] = [s for s, k in zip(sc['starts'], keep) if k]
        counts[sc['split']] += len(sc['starts'])
    for s in [s for s in splits if not counts[s]]:  # else train_gen.py fails, far from the cause
        why = f'every {s} image is smaller than patch_size' + (' (lower it, or --border=pad)'
              if cfg['max_ignore'] == 1 else ' or has no patch within max_ignore')
        fail(cfg['raw_dir'] or cfg['dataset'], f'0 {s} patches of {P}x{P}: ' + (
            why if any(sc['split'] == s for sc in scenes) else f'no {s} scenes'))
    path = {(s, k): os.path.join(out, f'{s}_{k}.npy') for s in splits for k in ('images', 'masks')}
    for s in splits:  # created at full size (sparse on disk) and filled in pass 2
        np.lib.format.open_memmap(path[s, 'images'], 'w+', np.uint8, (counts[s], P, P, 3))
        np.lib.format.open_memmap(path[s, 'masks'], 'w+', np.uint8, (counts[s], P, P))
    # pass 2: one scene at a time, re-opening the memmap per scene: a page written through a
    # mapping stays resident until unmapped, so one mapping over LoveDA's 8 GB would peak at 8 GB.
    hist = {s: np.zeros((2, 256), np.int64) for s in splits}  # pixels per value: scenes, patches
    filled, n_scenes, offpalette = dict.fromkeys(splits, 0), dict.fromkeys(splits, 0), {}
    sources = {s: dict(scenes=[], patches=[]) for s in splits}  # sources.json: patch -> image
    scene_number = {s: {} for s in splits}
    for sc in (sc for sc in scenes if sc['starts']):
        image, mask, off = load_scene(sc, cfg, spec)
        images, masks = cut(image, mask, sc['starts'], P)
        s, k, n = sc['split'], filled[sc['split']], len(masks)
        for kind, patches in (('images', images), ('masks', masks)):  # a new mapping per write
            np.load(path[s, kind], mmap_mode='r+')[k:k + n] = patches  # (unmapped at once)
        hist[s] += [np.bincount(m.ravel(), minlength=256) for m in (mask, masks)]
        filled[s], n_scenes[s] = k + n, n_scenes[s] + 1
        names = sources[s]['scenes']
        if sc['scene'] not in scene_number[s]:  # (lowdata: many scenes are one source image)
            scene_number[s][sc['scene']] = len(names)
            names.append(sc['scene'])
        origin_y, origin_x = sc.get('origin', (0, 0))  # lowdata: the patch's place in its image
        sources[s]['patches'] += [[scene_number[s][sc['scene']], origin_y + y, origin_x + x]
                                  for y, x in sc['starts']]
        if off:
            offpalette[sc['mask_name']] = off
    assert filled == counts and all(h[:, K:255].sum() == 0 for h in hist.values())
    n_scenes = {s: len(sources[s]['scenes']) for s in splits}  # lowdata: source images, not patches
    coded = cfg['ignore_code']
    if coded is None:  # the reader's default: LoveDA codes ignore; lowdata keeps its source's
        coded = table.get('coded', cfg['reader'] == 'loveda')
    meta = dict(name=cfg['dataset'], classes=table['classes'], palette=table['palette'],
                background_class=table['background_class'],  # Copy-Paste pastes the others
                num_classes=K, ignore_index=255, patch_size=P, counts=counts, scenes=n_scenes,
                codes=dict(num_codes=K + coded, ignore_code=K if coded else None),  # bits.py
                class_freq={s: (h[1, :K] / max(1, h[1, :K].sum())).round(6).tolist()
                            for s, h in hist.items()},
                ignore_fraction={s: float(h[1, 255] / max(1, h[1].sum())) for s, h in hist.items()},
                class_pixels={s: h[1, :K].tolist() for s, h in hist.items()},  # ... in the patches
                scene_class_pixels={s: [*h[0, :K].tolist(), int(h[0, 255])]  # whole scenes + ignore
                                    for s, h in hist.items()},
                border=border, border_note=BORDER[border], max_ignore=cfg['max_ignore'],
                skipped=notes, offpalette_pixels=offpalette, source=table['source'], config=cfg)
    pairs.save_json(meta, os.path.join(out, 'meta.json'))
    pairs.save_json(sources, os.path.join(out, 'sources.json'))
    if 'record' in table:  # lowdata: which source patch went where
        pairs.save_json(table['record'], os.path.join(out, 'split.json'))
    # the preview: train patches spread over the split (never empty), beside their masks
    i = np.linspace(0, counts['train'] - 1, min(cfg['n_preview'], counts['train'])).astype(int)
    images, masks = [np.load(path['train', k], mmap_mode='r')[i] for k in ('images', 'masks')]
    pairs.save_png(pairs.make_grid(images, masks, table['palette'], nrow=4), f'{out}/preview.png')
    print(f"{cfg['dataset']}: {counts['train']} train / {counts['val']} val patches of {P}x{P} "
          f"from {n_scenes['train']} / {n_scenes['val']} scenes in {time.time() - t0:.1f}s; "
          f"skipped {notes}" + f'; off-palette pixels {offpalette}' * bool(offpalette))
    print('class                 train     val   (fraction of labelled pixels)')
    freq = {s: [*meta['class_freq'][s], meta['ignore_fraction'][s]] for s in splits}
    for k, name in enumerate(table['classes'] + ['(ignore)']):
        print(f"{name:20s} {freq['train'][k]:6.4f}  {freq['val'][k]:6.4f}")
    return meta


def killed(name, f):
    """Whether folder f is a .<name>.tmp-<pid>[.old] that a killed run left behind."""
    m = re.fullmatch(re.escape(f'.{name}.tmp-') + r'(\d{1,9})(\.old)?', f)
    if not m or int(m[1]) == os.getpid():  # ours is an earlier run's: pids repeat (containers)
        return bool(m)
    try:
        os.kill(int(m[1]), 0)  # signal 0 only checks that the process exists
    except OSError as e:  # ProcessLookupError: it has ended; PermissionError: another user's
        return isinstance(e, ProcessLookupError)
    return False


def prepare(cfg):
    """Build data_dir/<dataset> atomically: in a hidden temporary folder, renamed at the end
    (lowdata: <dataset> and <dataset>_oracle, both renamed once both are complete)."""
    readers = ('toy', 'loveda', 'openearthmap', 'isaid', 'folder', 'lowdata')
    problems = []
    if cfg['reader'] not in readers:
        problems.append(f"unknown reader {cfg['reader']!r} ({'|'.join(readers)})")
    if cfg['border'] not in BORDER:
        problems.append(f"border must be drop|pad|shift, got {cfg['border']!r}")
    if not 0 <= cfg['max_ignore'] <= 1:
        problems.append(f"max_ignore must be in [0, 1], got {cfg['max_ignore']}")
    if cfg['ignore_code'] not in (None, True, False):
        problems.append(f"ignore_code must be None, True or False, got {cfg['ignore_code']!r}")
    if cfg['mask_format'] not in ('auto', 'index', 'colour'):
        problems.append(f"mask_format must be auto|index|colour, got {cfg['mask_format']!r}")
    if cfg['reader'] == 'lowdata':
        for key in ('n_d', 'oracle_ratio', 'n_select'):
            if type(cfg[key]) is not int or cfg[key] < 1:
                problems.append(f'{key} must be a whole number >= 1, got {cfg[key]!r}')
        source = os.path.abspath(os.path.expanduser(cfg['raw_dir'])) if cfg['raw_dir'] else ''
        if source == os.path.abspath(os.path.join(cfg['data_dir'], cfg['dataset'])):
            problems.append(f'dataset {cfg["dataset"]!r} would replace its own source raw_dir')
    if problems:  # one line per problem, before anything is written
        raise SystemExit('\n'.join(f'prepare.py: error: config: {p}' for p in problems))
    os.makedirs(cfg['data_dir'], exist_ok=True)
    if cfg['reader'] == 'lowdata':
        outputs = index_lowdata(cfg)
    else:
        outputs = [(cfg['dataset'], None)]  # build() indexes the raw data itself
    done, metas = [], []  # (temporary folder, final folder) of the outputs built
    try:
        for name, indexed in outputs:
            final = os.path.join(cfg['data_dir'], name)
            tmp = os.path.join(cfg['data_dir'], f'.{name}.tmp-{os.getpid()}')
            for f in [f for f in sorted(os.listdir(cfg['data_dir'])) if killed(name, f)]:
                print(f"removing {os.path.join(cfg['data_dir'], f)}: the temporary folder of a "
                      'killed run')
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
        _zips.clear()  # closes the archives
    return metas[0]


if __name__ == '__main__':
    prepare(configure(globals()))

# Expected output of `python prepare.py` (~18 s of CPU time on 2 cores; 55 s wall-clock while
# shared with other jobs; peak RSS 0.26 GB, mostly torch imported through pairs): "toy: 512 train /
# 128 val patches of 256x256 from 512 / 128 scenes", then the class fractions (train, val) bare_soil
# .3234 .3533, building .0216 .0225, road .0730 .0767, water .0574 .0558, tree .0978 .0958,
# agriculture .4268 .3959. A LoveDA-sized input (2522 tiles of 1024 -> 40,352 patches, 10 GB of
# .npy) peaks at 0.29 GB RSS, as 252 tiles do (0.28 GB): memory does not grow with the dataset.
