"""Run `python SCRIPT ARGS...` as a fresh process without paying for `import torch` each time.

Most of a tiny stage run is start-up: importing torch (~2 s on a busy 2-core machine), then
torch._dynamo (~2.5 s more: torch.optim imports it when the first optimizer is built) and the
configurator's parse of every config block (~0.5 s), against 1-3 s of work. The suite starts
hundreds of such runs (experiments.sh over a hundred), so this file keeps one server process that
has imported torch, numpy, scipy, PIL and the project's modules once, and forks it for every run.
Each run is still its own process: its own cwd, environment, argv, stdin/stdout/stderr (the
client's, passed over the socket), exit code (a SystemExit message or a traceback on stderr, as
python prints them) and module state (a fork of an interpreter that has run nothing yet). The
server never runs a torch operation, so no thread pool is inherited. A run whose environment
would start an interpreter differently (PYTHONPATH, OMP_NUM_THREADS, ...: startup()) is not
forked: its client runs a plain python instead.

    python tests/forkserver.py serve SOCKET     # conftest.py starts it once per test session
    python -S tests/forkserver.py SCRIPT ARGS   # a client: `python SCRIPT ARGS` via the server
                                                # in $SATSYNTH_FORKSERVER (PY= for the .sh)

Also `-c CODE` and `-m MODULE` (torchrun: the launcher, and with --no-python each rank). A client
falls back to a plain python (exec) when no server is named or it cannot be reached, or for
other interpreter options. The real start-up path stays covered: test_golden.py runs every stage
with a plain interpreter (run_script(..., fresh=True)), and so does check.py for its stages.
"""
import json
import os
import select
import signal
import socket
import struct
import sys

ENV = 'SATSYNTH_FORKSERVER'
FALLBACK = -1000  # the server's reply when it cannot stand for a fresh interpreter
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the client ------------------------------------------------------------------------------------

def client(args):
    """Send args, cwd, environment and fds 0-2 to the server; exit as the run exits."""
    path = os.environ.get(ENV)
    if not path or not args or (args[0].startswith('-') and args[0] not in ('-c', '-m')):
        os.execv(sys.executable, [sys.executable] + args)
    request = json.dumps(dict(argv=args, cwd=os.getcwd(), env=dict(os.environ))).encode()
    request = struct.pack('!I', len(request)) + request
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        sent = socket.send_fds(s, [request], [0, 1, 2])
        s.sendall(request[sent:])
    except OSError:  # no server (stopped, or another machine's path), no fd 0-2: a plain python
        os.execv(sys.executable, [sys.executable] + args)
    reply = b''
    while len(reply) < 4:
        part = s.recv(4 - len(reply))
        if not part:
            sys.exit('forkserver: the server went away')
        reply += part
    status = struct.unpack('!i', reply)[0]  # the exit code, or -N for signal N (as subprocess)
    if status == FALLBACK:  # this environment would start python differently: a plain one
        os.execv(sys.executable, [sys.executable] + args)
    if status < 0:
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


# --- the server ------------------------------------------------------------------------------------

def serve(path):
    launch = dict(os.environ)  # (before the imports: torch._dynamo sets TORCHINDUCTOR_CACHE_DIR)
    import importlib
    import warnings
    import torch
    import torch._dynamo  # noqa: F401  (what torch.optim imports on first use: the slow half)
    sys.path.insert(0, ROOT)
    for name in ['numpy', 'scipy.linalg', 'scipy.ndimage', 'PIL.Image', 'augment', 'bits',
                 'configurator', 'diffusion', 'fpn', 'metrics', 'pairs', 'plots', 'readers',
                 'segmenters', 'toydata', 'unet']:
        try:  # (a module that fails here fails again, as it would, in the runs that import it)
            importlib.import_module(name)
        except Exception:
            pass
    if 'configurator' in sys.modules:  # every config block in ROOT, parsed once (its cache)
        sys.modules['configurator']._stage_keys()
    sys.path.remove(ROOT)
    pristine = list(warnings.filters)
    added = {k: v for k, v in os.environ.items() if k not in launch}  # what the imports set
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    parent = os.getppid()
    print('ready', flush=True)
    while os.getppid() == parent:  # the session that started it is gone: stop
        if select.select([listener], [], [], 1.0)[0]:
            conn = listener.accept()[0]
            if os.fork() == 0:
                try:
                    listener.close()
                    handle(conn, launch, added, pristine)
                finally:  # (never back into this loop)
                    os._exit(1)
            conn.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap finished handlers
                pass
        except ChildProcessError:
            pass


def startup(env):
    """What the interpreter and its libraries read from the environment once, at import: PYTHON*
    (PYTHONWARNINGS apart: work() applies it), torch's and the thread pools' settings, LD_*.
    torchrun's TORCHELASTIC_* and TORCH_NCCL_* are read when a process group starts."""
    return {k: v for k, v in env.items()
            if k.startswith(('PYTHON', 'TORCH', 'OMP_', 'MKL_', 'KMP_', 'GOMP_', 'OPENBLAS_',
                             'LD_')) or k.endswith('_NUM_THREADS')
            if k != 'PYTHONWARNINGS' and not k.startswith(('TORCHELASTIC_', 'TORCH_NCCL_'))}


def handle(conn, launch, added, pristine):
    """One run: fork the worker, wait for it (killing it if the client goes away), reply."""
    head, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    while len(head) < 4 or len(head) < 4 + struct.unpack('!I', head[:4])[0]:
        part = conn.recv(1 << 20)
        if not part:  # the client went away before it had sent everything
            os._exit(1)
        head += part
    request = json.loads(head[4:])
    asked = {k: v for k, v in startup(request['env']).items() if added.get(k) != v}
    if asked != startup(launch):  # (a value the imports set is one it would have anyway)
        conn.sendall(struct.pack('!i', FALLBACK))
        os._exit(0)
    pid = os.fork()
    if pid == 0:
        try:
            conn.close()
            os._exit(work(request, dict(added, **request['env']), fds, pristine))
        finally:
            os._exit(1)
    for fd in fds:
        os.close(fd)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if select.select([conn], [], [], 0.02)[0]:  # readable = closed: the client was killed
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os._exit(0)
    code = os.waitstatus_to_exitcode(status)
    try:
        conn.sendall(struct.pack('!i', code))
    except OSError:
        pass
    os._exit(0)


def work(request, env, fds, pristine):
    """As `python ARGV` would: argv, sys.path[0], cwd, environment (the run's, and what the
    server's imports set), warnings; then the script as __main__ and the interpreter's exit
    (SystemExit, a traceback, atexit)."""
    import atexit
    import io
    import runpy
    import threading
    import traceback
    import types
    import warnings
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(env)
    warnings.filters[:] = pristine
    warnings._processoptions([w for w in os.environ.get('PYTHONWARNINGS', '').split(',') if w])
    argv = request['argv']
    try:
        if argv[0] == '-m':
            sys.argv = [argv[1]] + argv[2:]  # (run_module puts the module's path first)
            sys.path[0] = os.getcwd()  # (the server's own was tests/)
            runpy.run_module(argv[1], run_name='__main__', alter_sys=True)
        else:  # -c CODE, or a script: its code run in a new __main__, as python runs it
            main = types.ModuleType('__main__')
            if argv[0] == '-c':
                sys.argv, sys.path[0], source, name = ['-c'] + argv[2:], '', argv[1], '<string>'
            else:
                sys.argv, name = list(argv), os.path.join(os.getcwd(), argv[0])  # (not normed)
                sys.path[0] = os.path.dirname(os.path.realpath(name))
                with io.open_code(name) as f:
                    source = f.read()
                main.__file__ = name
            sys.modules['__main__'] = main
            exec(compile(source, name, 'exec'), main.__dict__)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    return code


if __name__ == '__main__':
    if sys.argv[1:2] == ['serve']:
        serve(sys.argv[2])
    else:
        client(sys.argv[1:])
