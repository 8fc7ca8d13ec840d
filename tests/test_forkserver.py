"""tests/forkserver.py, the suite's stand-in for `python SCRIPT`: a run is really forked from the
server (torch already imported), and it sees and does what a plain interpreter's run does: argv,
sys.path[0], __file__, cwd, environment, stdin, stdout and stderr, the exit code of a SystemExit
message, a traceback, a signal; a run whose environment would start python differently is left
to a plain interpreter."""
import os
import subprocess
import sys

import pytest

from conftest import stage_python

PROBE = '''import os, sys
print('forked', 'torch' in sys.modules)  # a plain interpreter has not imported it yet
print(sys.argv, sys.path[0], __file__, os.getcwd(), os.environ.get('PROBE'), sys.stdin.read())
print('to stderr', file=sys.stderr)
what = sys.argv[1]
if what == 'message':
    sys.exit('one line')
if what == 'code':
    sys.exit(3)
if what == 'raise':
    raise ValueError('a traceback')
if what == 'signal':
    import signal
    os.kill(os.getpid(), signal.SIGTERM)
'''


def both(tmp_path, *args, **env):
    """The probe run by a plain python and through the fork server, in tmp_path/work."""
    (tmp_path / 'probe.py').write_text(PROBE)
    (tmp_path / 'work').mkdir(exist_ok=True)
    python, extra = stage_python()
    env = dict(os.environ, OMP_NUM_THREADS='1', PROBE='x', **env)
    return [subprocess.run(cmd + ['../probe.py', *args], cwd=tmp_path / 'work', input='in',
                           capture_output=True, text=True, env=dict(env, **extra))
            for cmd in ([sys.executable], python)]


@pytest.mark.parametrize('what', ['ok', 'message', 'code', 'signal'])
def test_a_forked_run_is_a_plain_run(tmp_path, what):
    plain, forked = both(tmp_path, what)
    assert plain.stdout.startswith('forked False\n') and forked.stdout.startswith('forked True\n')
    assert forked.stdout.split('\n', 1)[1] == plain.stdout.split('\n', 1)[1]
    assert f"['../probe.py', '{what}'] {tmp_path} {tmp_path}/work/../probe.py " in plain.stdout
    assert (forked.stderr, forked.returncode) == (plain.stderr, plain.returncode)
    assert plain.returncode == {'ok': 0, 'message': 1, 'code': 3, 'signal': -15}[what]


def test_a_traceback_and_exit_code_1(tmp_path):
    plain, forked = both(tmp_path, 'raise')
    for p in (plain, forked):
        lines = p.stderr.splitlines()
        assert p.returncode == 1 and lines[1] == 'Traceback (most recent call last):'
        assert lines[-1] == 'ValueError: a traceback'


def test_another_start_up_environment_runs_a_plain_python(tmp_path):
    plain, forked = both(tmp_path, 'ok', PYTHONPATH=str(tmp_path))
    assert forked.stdout == plain.stdout and forked.stdout.startswith('forked False\n')


def test_still_forked_once_this_process_has_imported_torch_dynamo(tmp_path):
    """(torch._dynamo sets TORCHINDUCTOR_CACHE_DIR here, as in the server: the same start-up.)"""
    import torch._dynamo  # noqa: F401
    assert 'TORCHINDUCTOR_CACHE_DIR' in os.environ
    plain, forked = both(tmp_path, 'ok')
    assert forked.stdout.startswith('forked True\n') and plain.stdout.startswith('forked False\n')
