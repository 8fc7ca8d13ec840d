"""The one config mechanism, shared by every stage script (nanoGPT's configurator, made strict).

    python train_gen.py configs/isaid.py configs/gen_base.py --batch_size=32 --ratio 3

A stage script declares its knobs as plain globals, then calls `config = configure(globals())`.
Config files are trusted Python, exec'd left to right; then `--key=value` (or `--key value`)
overrides apply, parsed with ast.literal_eval, falling back to a string. Type changes other than
int->float and None->anything are errors. A command-line key the script does not declare is an
error. A config-file key is an error unless some script in this folder declares it in its config
block (the lower-case `name = value` lines of its module body before the first statement that
calls configure): then a script that does not use it skips it, so one configs/isaid.py serves
every stage, while loop state assigned after configure (iter_num, ddp) stays an unknown key.
Relative config paths are tried from the working directory, then from this file's folder.

After configure, each stage checks its settings the same way: it collects one problem string per
bad setting (the setting, what it got, what it wants) and calls check_settings(script, problems)
before it writes anything, which exits with one line per problem.
"""
import ast, difflib, functools, glob, os, sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_TYPES = (int, float, bool, str, tuple, type(None))


def _calls_configure(node):  # configure(...) or configurator.configure(...) anywhere in node
    return any(isinstance(n, ast.Call) and 'configure' in (getattr(n.func, 'id', None),
                                                          getattr(n.func, 'attr', None))
               for n in ast.walk(node))


def _stage_keys(folder=None):  # the knobs of every config block in folder (default: this file's)
    return _parse_stage_keys(os.path.abspath(folder or _HERE))


@functools.cache  # once per folder and process: a config file may skip many other stages' keys
def _parse_stage_keys(folder):
    keys = set()
    for path in glob.glob(os.path.join(folder, '*.py')):
        try:
            with open(path) as f:
                body = ast.parse(f.read()).body
        except SyntaxError:  # a sibling being edited must not break every other stage
            continue
        calls = [i for i, node in enumerate(body) if _calls_configure(node)]
        for node in body[:calls[0]] if calls else []:  # no configure call: declares nothing
            if isinstance(node, ast.Assign):
                keys |= {t.id for t in node.targets if isinstance(t, ast.Name) and t.id.islower()}
    return frozenset(keys)  # (shared by every later call: not to be changed)


def _set(g, key, value, where):
    if key.startswith('_') or key not in g or not isinstance(g[key], _TYPES):
        if where != 'command line' and key in _stage_keys():
            return print(f"config: {key} is for another stage, skipped here  ({where})")
        close = difflib.get_close_matches(key, [k for k in g if not k.startswith('_')], n=3)
        sys.exit(f"config error ({where}): unknown key '{key}'; closest known: {close}")
    old = g[key]
    value = tuple(value) if isinstance(value, list) and isinstance(old, tuple) else value
    if not (old is None or type(value) is type(old) or (type(old) is float and type(value) is int)):
        sys.exit(f"config error ({where}): '{key}' is {type(old).__name__} ({old!r}), "
                 f"got {type(value).__name__} ({value!r})")
    g[key] = float(value) if type(old) is float else value
    print(f"config: {key} = {g[key]!r}  ({where})")


def configure(g, argv=None):
    """Apply config files and --key=value overrides from argv to the dict g; return the config."""
    args = list(sys.argv[1:] if argv is None else argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith('--'):
            path = arg if os.path.exists(arg) else os.path.join(_HERE, arg)
            if not os.path.isfile(path):
                sys.exit(f"config error: config file '{arg}' not found")
            scratch = {}
            exec(compile(open(path).read(), path, 'exec'), scratch)  # trusted Python, see README
            for key, value in scratch.items():
                if not key.startswith('_') and isinstance(value, _TYPES + (list,)):
                    _set(g, key, value, path)
            continue
        key, eq, text = arg[2:].partition('=')  # split on the first '=' only
        if not eq:
            if not args or args[0].startswith('--'):
                sys.exit(f"config error: '{arg}' needs a value (--{key}=VALUE)")
            text = args.pop(0)
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        _set(g, key.replace('-', '_'), value, 'command line')
    return {k: v for k, v in g.items() if not k.startswith('_') and isinstance(v, _TYPES)}


def check_settings(script, problems):
    """Exit non-zero, printing one line '<script>: error: <problem>' per problem, if there are any;
    return if there are none. Every stage calls it after collecting the problems of its settings
    and before it writes anything, so a bad start leaves an earlier run's files as they were."""
    if problems:
        sys.exit('\n'.join(f'{script}: error: {problem}' for problem in problems))
