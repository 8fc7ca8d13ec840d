"""configurator.py: file-then-CLI order, type rules, '=' in values, config paths from any cwd,
and which config-file keys are skipped (knobs of another stage's config block) or rejected
(typos, loop state assigned after configure, constants)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import configurator  # noqa: E402
from configurator import configure  # noqa: E402


def knobs():
    return {'batch_size': 8, 'learning_rate': 1e-3, 'out_dir': 'out', 'compile': False,
            'ch_mult': (1, 2), 'ckpt': None, '_private': 1}


def test_files_then_cli_in_order(tmp_path):
    a, b = tmp_path / 'a.py', tmp_path / 'b.py'
    a.write_text("batch_size = 16\nout_dir = 'from_a'\n")
    b.write_text("batch_size = 32\nch_mult = [1, 2, 4]\n")
    g = knobs()
    cfg = configure(g, [str(a), str(b), '--batch_size=64', '--learning_rate', '2'])
    assert g['batch_size'] == 64 and cfg['batch_size'] == 64
    assert g['out_dir'] == 'from_a' and g['ch_mult'] == (1, 2, 4)
    assert g['learning_rate'] == 2.0 and isinstance(g['learning_rate'], float)  # int -> float ok
    assert '_private' not in cfg


def test_strings_none_and_equals_inside_value():
    g = knobs()
    configure(g, ['--out_dir=a=b', '--ckpt=runs/x.pt'])
    assert g['out_dir'] == 'a=b' and g['ckpt'] == 'runs/x.pt'  # None -> anything, literal fallback


@pytest.mark.parametrize('arg,msg', [('--batch_sise=3', "closest known: ['batch_size']"),
                                     ('--batch_size=1.5', 'is int'),
                                     ('--compile=1', 'is bool'),
                                     ('--out_dir=3', 'is str'),
                                     ('--batch_size', 'needs a value'),
                                     ('nope.py', 'not found')])
def test_errors(arg, msg):
    with pytest.raises(SystemExit, match=msg.replace('[', r'\[').replace(']', r'\]')):
        configure(knobs(), [arg])


FAKE_STAGES = {  # a folder of tiny stage scripts: only the config blocks declare knobs
    'a.py': "from configurator import configure\nlr = 1.0\ncrop = 64\nLAYERS = 3\n"
            "config = configure(globals())\niter_num = 0\n",
    'b.py': "steps = 10\nif __name__ == '__main__':\n    config = configure(globals())\nstep = 0\n",
    'c.py': "helper = 1\n",  # never calls configure: declares nothing
    'd.py': "x = (\n",  # a sibling with a SyntaxError (being edited) is skipped
}


def fake_folder(tmp_path):
    folder = tmp_path / 'stages'
    folder.mkdir()
    for name, text in FAKE_STAGES.items():
        (folder / name).write_text(text)
    return folder


def test_stage_keys_are_config_blocks_only(tmp_path):
    assert configurator._stage_keys(str(fake_folder(tmp_path))) == {'lr', 'crop', 'steps'}


def test_file_keys_of_other_stages_are_skipped_unknown_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(configurator, '_HERE', str(fake_folder(tmp_path)))
    f = tmp_path / 'c.py'
    f.write_text("batch_size = 4\ncrop = 32\nsteps = 5\n")  # declared by a.py, b.py
    g = knobs()
    configure(g, [str(f)])
    assert g['batch_size'] == 4 and 'crop' not in g and 'steps' not in g
    for line in ['batch_sizee = 4', 'iter_num = 1', 'step = 1', 'LAYERS = 2', 'helper = 2']:
        f.write_text(line + "\n")  # a typo, loop state after configure, a constant, no stage
        with pytest.raises(SystemExit, match='unknown key'):
            configure(knobs(), [str(f)])
    with pytest.raises(SystemExit, match='unknown key'):
        configure(knobs(), ['--crop=3'])  # on the command line every key must be known


def test_real_stages_knobs_skipped_loop_state_rejected(tmp_path):
    f = tmp_path / 'c.py'  # knobs of train_gen.py / superres.py / seg.py config blocks
    f.write_text("batch_size = 4\nmax_iters = 10\neval_interval = 5\ncrop_size = 64\n"
                 "sampler = 'ddpm'\n")
    g = knobs()
    configure(g, [str(f)])
    assert g['batch_size'] == 4 and not {'max_iters', 'crop_size', 'sampler'} & set(g)
    for line in ['iter_num = 100', 'ddp = True']:  # assigned after configure(globals())
        f.write_text(line + "\n")
        with pytest.raises(SystemExit, match='unknown key'):
            configure(knobs(), [str(f)])
    with pytest.raises(SystemExit, match='unknown key'):
        configure(knobs(), ['--max_iters=3'])


def test_check_settings_one_line_per_problem_or_returns(capsys):
    """The one idiom every stage uses for its settings: no problems, it returns (and prints
    nothing); problems, a non-zero exit with one '<script>: error: <problem>' line each."""
    assert configurator.check_settings('seg.py', []) is None
    assert capsys.readouterr() == ('', '')
    problems = ['batch_size must be >= 1, got 0', "dtype must be float32 or bfloat16, got 'fp8'"]
    with pytest.raises(SystemExit) as e:
        configurator.check_settings('seg.py', problems)
    assert str(e.value).splitlines() == ['seg.py: error: batch_size must be >= 1, got 0',
                                         "seg.py: error: dtype must be float32 or bfloat16, got "
                                         "'fp8'"]
    # sys.exit(message): Python prints the message to stderr and exits with status 1 (the
    # stage tests run the scripts as subprocesses and see that status)
    assert isinstance(e.value.code, str)

def test_config_path_from_cwd_then_repo_folder(tmp_path, monkeypatch):
    assert configurator._HERE == str(ROOT)  # "the repo folder"; a fake one below: no repo writes
    repo, cwd = tmp_path / 'repo', tmp_path / 'cwd'
    for folder, size in [(repo, 3), (cwd, 5)]:
        (folder / 'configs').mkdir(parents=True)
        (folder / 'configs' / 'only_repo.py').write_text(f"batch_size = {size}\n")
    (cwd / 'configs' / 'only_repo.py').rename(cwd / 'configs' / 'both.py')
    (repo / 'configs' / 'both.py').write_text("batch_size = 7\n")
    monkeypatch.setattr(configurator, '_HERE', str(repo))
    monkeypatch.chdir(cwd)
    g = {'batch_size': 1}
    configure(g, ['configs/only_repo.py'])
    assert g['batch_size'] == 3  # not in the working directory: found in the repo folder
    configure(g, ['configs/both.py'])
    assert g['batch_size'] == 5  # the working directory comes first


def test_every_shipped_config_key_is_some_stage_knob():
    """A renamed knob must be renamed in configs/ too, or every run of that recipe fails."""
    import ast
    import glob
    known = configurator._stage_keys()
    for path in sorted(glob.glob(str(ROOT / 'configs' / '*.py'))):
        tree = ast.parse(open(path).read())
        keys = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name) and not t.id.startswith('_')}
        assert keys <= known, f'{path}: {sorted(keys - known)} are no stage knob'
