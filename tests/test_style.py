"""STYLE.md checks: file budgets (R13), identical DDP blocks (R5), the import DAG (R14)."""
import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DDP_SCRIPTS = ['train_gen.py', 'superres.py', 'seg.py', 'sample.py']
# stage scripts that run on import; seg.py and metrics.py keep their loops under __main__
STAGES = {'prepare', 'train_gen', 'sample', 'superres', 'bench'}
# what each module may import from the project (STYLE.md R14 and the README's module map)
ALLOWED = {
    'configurator': set(), 'bits': set(), 'unet': set(), 'diffusion': set(),
    'prepare': {'configurator', 'bits'},
    'train_gen': {'configurator', 'bits', 'unet', 'diffusion'},
    'sample': {'configurator', 'bits', 'unet', 'diffusion'},
    'superres': {'configurator', 'bits', 'unet', 'diffusion', 'metrics'},  # metrics: eval mode
    'seg': {'configurator', 'bits', 'metrics'},
    'metrics': {'configurator', 'bits', 'seg'},  # seg only lazily, inside the feature function
    'bench': {'configurator', 'bits', 'unet', 'diffusion', 'seg'},
    'report': {'configurator'},
}


def py_files():
    return sorted(list(ROOT.glob('*.py')) + list(ROOT.glob('configs/*.py'))
                  + list(ROOT.glob('tests/*.py')))


@pytest.mark.parametrize('path', py_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hard_cap_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= 500, f'{path.name} has {n} lines; STYLE.md R13 caps any file at 500'
    if path.parent.name == 'configs':
        assert n <= 40, f'{path.name}: config files are recipes of <= 40 lines'


def ddp_block(path):
    text = path.read_text()
    m = re.search(r'^( *)# --- DDP.*?^\1# --- end DDP ---$', text, re.S | re.M)
    assert m, f'{path.name} has no DDP block between the marker comments'
    return textwrap.dedent(m.group(0))  # seg.py's block sits under `if __name__ == '__main__':`


def test_ddp_blocks_identical():
    present = [ROOT / f for f in DDP_SCRIPTS if (ROOT / f).exists()]
    if len(present) < 2:
        pytest.skip('fewer than two torchrun scripts yet')
    blocks = {p.name: ddp_block(p) for p in present}
    first = blocks[present[0].name]
    for name, block in blocks.items():
        assert block == first, f'the DDP block of {name} differs from {present[0].name}\'s'
        assert len(block.splitlines()) <= 20


@pytest.mark.parametrize('name', sorted(ALLOWED))
def test_import_dag(name):
    path = ROOT / f'{name}.py'
    if not path.exists():
        pytest.skip(f'{name}.py not written yet')
    tree = ast.parse(path.read_text())
    project = set(ALLOWED)
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            hit = {m.split('.')[0] for m in mods if m} & project
            (top if node in tree.body else lazy).update(hit)
    assert (top | lazy) <= ALLOWED[name], f'{name}.py imports {sorted((top | lazy) - ALLOWED[name])}'
    assert not (top & STAGES), f'{name}.py imports a stage script'
    if name == 'metrics':
        assert 'seg' not in top, 'metrics.py must import seg lazily (seg imports metrics)'
