"""docs/STYLE.md checks, derived from the code itself (no whitelist of allowed imports):

R13 has no test: line counts are a guide, never a cap (a cap rewards compressed code; a file
    past ~450 lines is split by responsibility instead, see docs/STYLE.md).
R14 the import DAG: project imports (`import X` / `from X import ...` anywhere in a file, nested
    ones included, X a top-level module of the repo) form an acyclic graph; the leaves
    (configurator, bits, unet, fpn, diffusion) import nothing from the project, pairs only bits
    (it builds the generator's condition with the codec); and no module
    imports a stage script, i.e. a module that does its work on import: a statement of its module
    body (not under `if __name__ == '__main__':`, not inside a def) calls configure(...).
R5  identical DDP blocks: the torchrun scripts share one DDP setup block, character for character.
Atomic writes: outside pairs.py no module writes a file itself (torch.save, np.save, json.dump,
    PIL's .save, open(..., 'w')): pairs.save_png/save_json/save_text/save_checkpoint write to a
    temporary name and rename, so a kill never leaves a half-written file. Only log appends
    (open(..., 'a')) and prepare.py (whose whole output folder is renamed at the end) are exempt.

The graph checks are plain functions over a {module: source text} dict, so the tests at the end
show, on planted fake modules (in memory, nothing written to the repo), that they do catch a
cycle, a stage import and a leaf import, and pass a clean graph.
"""
import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAVES = ['configurator', 'bits', 'unet', 'fpn', 'diffusion', 'augment']  # (pairs imports bits only: below)
DDP_SCRIPTS = ['train_gen.py', 'superres.py', 'seg.py', 'sample.py']


# --- the checkers: functions of {module name: source text} ---------------------------------------

def sources(folder=ROOT):
    """{module: source} of the top-level project modules in folder."""
    return {p.stem: p.read_text() for p in sorted(Path(folder).glob('*.py'))}


def import_graph(srcs):
    """{module: the project modules it imports anywhere in the file}."""
    graph = {}
    for name, src in srcs.items():
        found = set()
        for node in ast.walk(ast.parse(src, filename=f'{name}.py')):
            if isinstance(node, ast.Import):
                found |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split('.')[0])
        graph[name] = found & set(srcs)
    return graph


def _is_main_guard(stmt):
    return isinstance(stmt, ast.If) and ast.unparse(stmt.test).replace('"', "'") in (
        "__name__ == '__main__'", "'__main__' == __name__")


def _calls_configure(node):
    return any(isinstance(n, ast.Call) and 'configure' in (getattr(n.func, 'id', None),
                                                          getattr(n.func, 'attr', None))
               for n in ast.walk(node))


def stage_scripts(srcs):
    """The modules that do their work on import: a module-body statement calls configure(...)."""
    return {name for name, src in srcs.items()
            if any(_calls_configure(stmt) for stmt in ast.parse(src).body
                   if not _is_main_guard(stmt)
                   and not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)))}


def find_cycle(graph):
    """One import cycle as a path [a, b, ..., a], or None if the graph is acyclic."""
    state = {}  # absent: unvisited, 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def leaf_imports(graph, leaves=LEAVES):
    """['leaf imports [...]'] for each existing leaf that imports from the project."""
    return [f'{leaf}.py is a leaf but imports {sorted(graph[leaf])}'
            for leaf in leaves if graph.get(leaf)]


def stage_imports(srcs, graph):
    """['a imports stage script(s) [...]'] for each module importing a stage script."""
    stages = stage_scripts(srcs)
    return [f'{name}.py imports stage script(s) {sorted(deps & stages)} (they run on import)'
            for name, deps in sorted(graph.items()) if deps & stages]


def dag_problems(srcs, leaves=LEAVES):
    """Every R14 violation in srcs, as messages; [] when the import graph is clean."""
    graph = import_graph(srcs)
    cycle = find_cycle(graph)
    return (leaf_imports(graph, leaves) + stage_imports(srcs, graph)
            + ([f'import cycle: {" -> ".join(cycle)}'] if cycle else []))


# --- R14 on the repo -----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def repo():
    srcs = sources()
    return srcs, import_graph(srcs)


@pytest.mark.parametrize('leaf', LEAVES)
def test_leaves_import_nothing_from_the_project(repo, leaf):
    srcs, graph = repo
    if leaf not in srcs:
        pytest.skip(f'{leaf}.py not written yet')
    assert not leaf_imports(graph, [leaf]), leaf_imports(graph, [leaf])


def test_pairs_imports_only_the_codec(repo):
    srcs, graph = repo
    assert graph['pairs'] <= {'bits'}, sorted(graph['pairs'])


def test_no_import_cycle(repo):
    cycle = find_cycle(repo[1])
    assert cycle is None, f'import cycle: {" -> ".join(cycle)}'


def test_no_module_imports_a_stage_script(repo):
    problems = stage_imports(*repo)
    assert not problems, '\n'.join(problems)


def test_stage_detection_on_the_repo(repo):
    # guards the detector: if a torchrun script hid its configure call (in a def, under __main__),
    # it would stop counting as a stage script and importing it would pass unnoticed
    stages = stage_scripts(repo[0])
    present = {Path(f).stem for f in DDP_SCRIPTS} & set(repo[0])
    assert present <= stages, f'torchrun scripts not run on import: {sorted(present - stages)}'
    importable = {'metrics', 'prepare', 'report', 'tables', *LEAVES}  # their CLI is under __main__
    assert not stages & importable


# --- R14 checkers on planted fake modules (in memory) --------------------------------------------

STAGE = "from configurator import configure\nlr = 1.0\nconfig = configure(globals())\n"
LIBRARY = ("x = 1\nif __name__ == '__main__':\n"
           "    from configurator import configure\n    configure(globals())\n")


def test_checker_passes_a_clean_graph():
    srcs = {'configurator': 'def configure(g): return g\n', 'bits': 'import os\n',
            'lib': 'import bits\n' + LIBRARY, 'train': 'import bits, lib\n' + STAGE,
            'other': 'import os.path\ndef f():\n    from lib import x\n    return x\n'}
    assert stage_scripts(srcs) == {'train'}
    assert dag_problems(srcs, ['configurator', 'bits']) == []


def test_checker_catches_a_planted_cycle():
    srcs = {'a': 'import b\n', 'b': 'def f():\n    from a import g\n', 'c': 'import a\n'}
    assert find_cycle(import_graph(srcs)) in (['a', 'b', 'a'], ['b', 'a', 'b'])
    assert any('import cycle: a -> b -> a' in p for p in dag_problems(srcs, []))
    assert find_cycle(import_graph({'a': 'import a\n'})) == ['a', 'a']


@pytest.mark.parametrize('stage', [STAGE,
                                   'import configurator\nconfigurator.configure(globals())\n',
                                   'with open("x") as f:\n    cfg = configure(globals())\n'])
def test_checker_catches_a_planted_stage_import(stage):
    srcs = {'configurator': '', 'train': stage, 'lib': LIBRARY,
            'bench': 'import lib\ndef f():\n    from train import lr\n'}
    assert stage_scripts(srcs) == {'train'}
    assert dag_problems(srcs, ['configurator']) == [
        "bench.py imports stage script(s) ['train'] (they run on import)"]


def test_checker_catches_a_planted_leaf_import():
    srcs = {'bits': 'def f():\n    import unet\n', 'unet': 'import torch\n'}
    assert dag_problems(srcs, ['bits', 'unet', 'missing']) == [
        "bits.py is a leaf but imports ['unet']"]  # a leaf not written yet is no problem


# --- R5 DDP blocks -------------------------------------------------------------------------------

def ddp_block(path):
    text = path.read_text()
    m = re.search(r'^( *)# --- DDP.*?^\1# --- end DDP ---$', text, re.S | re.M)
    assert m, f'{path.name} has no DDP block between the marker comments'
    return textwrap.dedent(m.group(0))  # a no-op at top level; tolerates a block under __main__


def test_ddp_blocks_identical():
    present = [ROOT / f for f in DDP_SCRIPTS if (ROOT / f).exists()]
    if len(present) < 2:
        pytest.skip('fewer than two torchrun scripts yet')
    blocks = {p.name: ddp_block(p) for p in present}
    first = blocks[present[0].name]
    for name, block in blocks.items():
        assert block == first, f'the DDP block of {name} differs from {present[0].name}\'s'
        assert len(block.splitlines()) <= 20


# --- atomic writes -----------------------------------------------------------------------------

def direct_writes(src):
    """Line numbers of calls in src that write a file without pairs' temporary-name-and-rename."""
    lines = []
    for node in ast.walk(ast.parse(src)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, 'id', '')
        owner = getattr(f.value, 'id', '') if isinstance(f, ast.Attribute) else ''
        mode = [a.value for a in node.args[1:2] + [k.value for k in node.keywords
                if k.arg == 'mode'] if isinstance(a, ast.Constant)]
        if (name == 'save' and owner != 'pairs') or name in ('dump', 'savez', 'imwrite') or \
                (name == 'open' and any(c in m for m in mode for c in 'wx')):
            lines.append(node.lineno)
    return lines


def test_writes_are_atomic():
    bad = {m: direct_writes(s) for m, s in sources().items() if m not in ('pairs', 'prepare')}
    assert not {m: v for m, v in bad.items() if v}, 'write through pairs.save_* (atomic)'
    assert direct_writes("import torch\ntorch.save(x, 'a.pt')\nopen('l', 'a')\n"
                         "Image.fromarray(a).save('p.png')\nopen(p, mode='wb')\n") == [2, 4, 5]
