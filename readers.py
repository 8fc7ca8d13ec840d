"""The dataset readers of prepare.py: from a download (zips and/or unzipped folders) to a list of
scenes, a class table and a mask decoder. prepare.py does the rest (patching, statistics, the
atomic output folder, the low-data split).

    scenes, table, notes = readers.index(cfg)   # cfg: prepare.py's config dict
    mask, off_palette = readers.load_mask(scene['mask'], scene['mask_name'], table['spec'], 0.001)

A scene is a dict(split ('train', 'val' or 'all'), image, mask (each a (file, zip member or None)
source), image_name, mask_name (paths for messages), scene (its name in sources.json)); the toy
reader's scenes carry `toy`, a seed, instead of files. The five readers are toy, loveda,
openearthmap, isaid and folder; their layouts are in configs/<reader>.py and docs/DATASETS.md.
Zip members are read in place, never extracted. Every bad input exits with one line naming the
file (fail). Imports pairs (read_classes) and toydata from the project.
"""
import io
import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

import pairs
from toydata import TOY

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
    """Every bad input ends here: a non-zero exit with a message naming the file and the problem
    (in prepare.py's name: these readers run only inside prepare.py)."""
    raise SystemExit(f'prepare.py: error: {where}: {problem}')


def rgb_code(r, g, b):
    """One integer per colour, R | G << 8 | B << 16: how load_mask reads an RGB pixel."""
    return r | g << 8 | b << 16


# ----------------------------------------------------------------------------- file access
_zips = {}  # open ZipFile per archive: members are read in place, never extracted to disk


def close_archives():
    """Close every zip that walk() opened (prepare.py calls it when it is done)."""
    for archive in _zips.values():
        archive.close()
    _zips.clear()


def walk(root):
    """Every file under root as [(posix path relative to root, (file, zip member or None))],
    plain files first so that an unzipped copy wins over the same file inside a zip."""
    if not os.path.isdir(root):
        fail(root or "raw_dir ''", 'raw_dir is not a folder (give --raw_dir=...)')
    files = []
    members = []
    for folder, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            if not rel.lower().endswith('.zip'):
                files.append((rel, (path, None)))
                continue
            if path not in _zips:
                try:
                    _zips[path] = zipfile.ZipFile(path)
                except (OSError, zipfile.BadZipFile) as e:
                    fail(path, f'unreadable zip ({e})')
            for member in _zips[path].namelist():
                if not member.endswith('/'):  # (a name ending in '/' is a folder entry)
                    members.append((f'{rel}/{member}', (path, member)))
    return files + members


def read_bytes(src):
    """The bytes of a (file, zip member or None) source."""
    path, member = src
    if member is None:
        return Path(path).read_bytes()
    return _zips[path].read(member)


def open_image(src, name, header_only=False):
    """A PIL image of a file or zip member; header_only: its size, from its first bytes only."""
    path, member = src
    try:  # (a damaged zip member fails in open or read: inside the try as well)
        if member is None:
            stream = path  # PIL reads a plain file lazily, header first
        elif header_only:
            stream = _zips[path].open(member)  # the member's first bytes, decompressed on demand
        else:
            stream = io.BytesIO(read_bytes(src))
        im = Image.open(stream)
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
    hint = spec.get('hint', '')  # how to fix the most likely mistake, added to the messages
    if spec['colour']:  # iSAID, colour-coded folders: one flat colour per class
        if im.mode not in ('RGB', 'RGBA', 'P'):
            fail(name, f'expected an RGB colour mask, got mode {im.mode}' + hint)
        # Each pixel's R, G, B bytes plus a zero byte, read as one little-endian uint32, is
        # R | G << 8 | B << 16 (rgb_code), computed without temporaries: DOTA scenes are big
        rgb0 = np.pad(np.asarray(im.convert('RGB')), ((0, 0), (0, 0), (0, 1)))  # (H, W, 4)
        raw = rgb0.view('<u4')[..., 0]  # (H, W)
    elif im.mode in ('L', 'P'):  # a 'P' mask holds raw indices: never .convert('L') it
        raw = np.asarray(im)
    else:
        fail(name, f'expected a single-channel 8-bit index mask, got mode {im.mode}')
    out = spec['lut'][raw]  # (H, W) int16
    bad = out < 0
    off = int(np.count_nonzero(bad))  # pixels whose value the dataset does not define
    found = np.unique(raw[bad])[:5].tolist()  # the first five such values, for the messages
    if off and not spec['colour'] and not spec.get('lenient'):
        fail(name, f'mask values {found} not in {spec["values"]}' + hint)
    if off and spec.get('lenient'):  # OpenEarthMap (docs/DATASETS.md): > 8 -> ignore + warning
        print(f'warning: {name}: {off} pixels with undefined values {found} -> ignore (255)')
    elif off > max_offpalette * out.size:
        examples = [(code & 255, code >> 8 & 255, code >> 16) for code in found]  # back to RGB
        fail(name, f'{off} off-palette pixels ({off / out.size:.3%} > max_offpalette='
             f'{max_offpalette}), e.g. RGB {examples}')
    out[bad] = 255
    return out.astype(np.uint8), off


def make_lut(values, classes, colour=False):
    """The raw value -> class table of load_mask (values not listed map to -1)."""
    n_values = 2 ** 24 if colour else 256  # every rgb_code, or every 8-bit value
    lut = np.full(n_values, -1, np.int16)
    lut[values] = classes
    return dict(lut=lut, colour=colour, values=sorted(values))


# ----------------------------------------------------------------------------- readers
def pair_up(files, reader, raw_dir):
    """Scenes [dict(split, image, mask, image_name, mask_name, scene)] from the reader's two
    regexes; `scene` is the image's path under raw_dir (sources.json names scenes by it)."""
    found = {}  # scene key -> [image, mask], each (path under raw_dir, source) or None
    duplicates = 0  # the same scene in a folder and in a zip: the first copy is used
    for role, pattern in enumerate(PATTERNS[reader]):  # role 0: the images, 1: the masks
        for rel, src in files:
            m = re.search(pattern, rel)
            if m is None:
                continue
            split = re.search(SPLIT_FOLDER, m[1] or '')
            split_name = split[1].lower() if split else 'all'  # 'all': split at random later
            key = (split_name,) + tuple(group or '' for group in m.groups())
            slot = found.setdefault(key, [None, None])
            if slot[role] is None:
                slot[role] = (rel, src)
            else:
                duplicates += 1
    for image, mask in found.values():
        if image is None:
            fail(os.path.join(raw_dir, mask[0]), 'has no matching image')
        if mask is None:
            fail(os.path.join(raw_dir, image[0]), 'has no matching mask')
    scenes = []
    for key, (image, mask) in sorted(found.items()):
        scenes.append(dict(split=key[0], image=image[1], mask=mask[1], scene=image[0],
                           image_name=os.path.join(raw_dir, image[0]),
                           mask_name=os.path.join(raw_dir, mask[0])))
    return scenes, dict(duplicates=duplicates)


def index_openearthmap(files, raw_dir):
    """Scenes listed in train.txt / val.txt; a listed tile whose image is missing (the xBD tiles
    of OpenEarthMap_wo_xBD) is skipped and counted, a missing label is an error."""
    lists = {}  # split -> (path of its list, source)
    tifs = {}  # ('images' or 'labels', file name) -> (path for messages, source)
    for rel, src in files:
        if m := re.search(r'(?:^|/)(train|val)\.txt$', rel):
            lists.setdefault(m[1], (rel, src))
        if m := re.search(r'(?:^|/)[^/]+/(images|labels)/([^/]+\.tiff?)$', rel):
            tifs.setdefault((m[1], m[2]), (os.path.join(raw_dir, rel), src))
    scenes = []
    missing = 0
    for split, (rel, src) in sorted(lists.items()):
        for line in read_bytes(src).decode().splitlines():  # LF, CRLF or CR line ends
            name = line.strip()
            if not name:
                continue
            image = tifs.get(('images', name))
            label = tifs.get(('labels', name))
            if image is None:
                missing += 1
            elif label is None:
                fail(image[0], f'listed in {rel} but labels/{name} is missing')
            else:
                scenes.append(dict(split=split, image=image[1], mask=label[1], scene=name,
                                   image_name=image[0], mask_name=label[0]))
    return scenes, dict(missing_image=missing)  # the xBD tiles, unless you compiled them


def _is_rgb(colour):
    """Whether a JSON value is one [r, g, b] colour of 8-bit integers."""
    return (isinstance(colour, list) and len(colour) == 3
            and all(type(v) is int and 0 <= v < 256 for v in colour))


def folder_classes(cfg, raw, scenes):
    """The folder reader's class table and mask decoder. Index masks ('L' or 'P', values 0..K-1
    and ignore_index) or colour masks (RGB, or 'P' in a colour-coded set), each colour of
    classes.json's palette one class and each of its `ignore_colours` 255 (ignore)."""
    path = ''
    if cfg['classes_file']:
        path = os.path.abspath(os.path.expanduser(cfg['classes_file']))
    else:  # raw_dir's own description, as pairs.read_classes looks for it
        for candidate in ('meta.json', 'classes.json'):
            if os.path.exists(os.path.join(raw, candidate)):
                path = os.path.join(raw, candidate)
                break
    if not path:
        fail(raw, 'no classes.json (or meta.json) describing the classes; or give --classes_file')
    if not os.path.isfile(path):
        fail(path, 'classes_file does not exist')
    table = pairs.read_classes(os.path.dirname(path), names=(os.path.basename(path),))
    K = len(table['classes'])
    ignore = table['ignore_index']
    if not K <= ignore < 256:
        fail(path, f'need ignore_index in {K}..255, got {ignore}')
    # the background class (Copy-Paste never pastes it): "background": a class name or null;
    # without the key, a class named "background" if there is one
    named = [k for k, name in enumerate(table['classes']) if name.lower() == 'background']
    background = table.get('background', table['classes'][named[0]] if named else None)
    if background is not None and background not in table['classes']:
        fail(path, f'"background" must be one of the classes or null, got {background!r}')
    if background is None:
        background_class = None
    else:
        background_class = table['classes'].index(background)
    table = dict(table, background_class=background_class)
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
    problems = []  # every problem of the file, in one line
    if not isinstance(given, dict) or 'palette' not in given:
        problems.append('colour masks need a "palette": the mask colour of each class')
    if not (isinstance(ignore_colours, list) and all(_is_rgb(c) for c in ignore_colours)):
        problems.append('"ignore_colours" must be a list of [r, g, b]')
        ignore_colours = []
    ignore_colours = [tuple(c) for c in ignore_colours]
    listed = colours + ignore_colours
    repeated = sorted({c for c in listed if listed.count(c) > 1})
    if repeated:
        problems.append(f'colours listed twice (palette, ignore_colours): {repeated}')
    if problems:
        fail(path, '; '.join(problems))
    # each palette colour is its class, each ignore colour 255
    spec = make_lut([rgb_code(*c) for c in listed], [*range(K)] + [255] * len(ignore_colours),
                    colour=True)
    spec['hint'] = ' (an index mask? --mask_format=index)'
    return dict(table, ignore_colours=[list(c) for c in ignore_colours]), spec


def index(cfg):
    """The configured dataset's scenes, class table (with `spec`, the mask decoder) and notes."""
    reader = cfg['reader']
    raw = ''  # '' stays '': no silent scan of the working directory
    if cfg['raw_dir']:
        raw = os.path.abspath(os.path.expanduser(cfg['raw_dir']))
    if reader == 'toy':  # generated scenes: a seed each, no files
        scenes = []
        for split_number, split in enumerate(('train', 'val')):
            for i in range(cfg['n_' + split]):
                scenes.append(dict(split=split, toy=(cfg['seed'], split_number, i),
                                   scene=f"toy {cfg['seed']} {split} {i}"))
        return scenes, dict(TOY, source=f'toy generator of prepare.py, seed {cfg["seed"]}'), {}
    files = walk(raw)
    if reader == 'openearthmap':
        scenes, notes = index_openearthmap(files, raw)
    else:
        scenes, notes = pair_up(files, reader, raw)
    if reader in ('loveda', 'openearthmap'):  # raw 0 = no-data / unknown -> ignore, v -> v - 1
        table = LOVEDA if reader == 'loveda' else OEM
        K = len(table['classes'])
        spec = make_lut(range(K + 1), [255, *range(K)])
        spec['lenient'] = reader == 'openearthmap'  # LoveDA defines no value > 7: those are errors
    elif reader == 'isaid':  # background (0, 0, 0) is class 0 of 16
        table = ISAID
        spec = make_lut([rgb_code(*c) for c in ISAID['palette']], range(16), colour=True)
        spec['hint'] = ' (an mmseg-converted copy? use the original *_instance_color_RGB.png)'
    else:  # folder: the pair layout sample.py writes; classes from classes.json / meta.json
        table, spec = folder_classes(cfg, raw, scenes)
        splits = {s['split'] for s in scenes}
        if 'all' in splits and len(splits) > 1:
            fail(raw, 'mixes images/ at the top with train/ or val/ sub-folders')
        if splits == {'all'}:  # a seeded random split of whole images
            n_val = int(round(cfg['val_fraction'] * len(scenes)))
            order = np.random.default_rng(cfg['seed']).permutation(len(scenes))
            for rank, i in enumerate(order):  # the first n_val scenes of the order are val
                scenes[i]['split'] = 'val' if rank < n_val else 'train'
    if not scenes:
        fail(raw, f'no {reader} files found (configs/{reader}.py describes the layout)')
    table = dict(classes=list(table['classes']), palette=[list(c) for c in table['palette']],
                 background_class=table['background_class'], spec=spec,
                 source=f'{reader} files under {raw}')
    return scenes, table, notes
