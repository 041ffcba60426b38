"""The app check: does the user's app exist, and does it import as the service will run it.

Two depths, one module, shared by the generators, ``--install``, the reload script's
planning and doctor:

- ``locate_app`` (commands that only write files): find the app's module with the app's
  interpreter and working directory WITHOUT running any of its code (the import system's
  path finder, no bytecode written), and read its source for the attribute. It says
  nothing when the spec's interpreter is not on this machine: the files are often
  written for another host.
- ``import_app`` (commands that touch a running system): import the app object as the
  service will, with its interpreter, working directory, environment and environment
  file, in a subprocess with a timeout.

Both return problems instead of raising, so each caller decides what is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opskit.spec import AppSpec

#: How long importing the app may take before the check gives up on it.
IMPORT_TIMEOUT = 60.0
#: How long finding the module may take (it runs no app code).
LOCATE_TIMEOUT = 20.0
#: systemd's PATH for system services (systemd.exec(5), "Environment variables").
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
_MARK = "OPSKIT-APPCHECK "
#: The names apps are usually exported under, offered when the spec names another.
_USUAL_NAMES = ("app", "application", "create_app", "make_app", "asgi", "api")

# Run by the app's interpreter with -I -B: no app code runs, no bytecode is written. The
# path finder is asked one dotted level at a time with the parent's search locations, so
# no parent package's __init__ runs either (importlib.util.find_spec would import it).
_LOCATE = """\
import ast, json, sys
from importlib.machinery import PathFinder
module, attr, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = extra
path, spec, name = None, None, ""
for part in module.split("."):
    name = f"{name}.{part}" if name else part
    spec = PathFinder.find_spec(name, path)
    if spec is None:
        print("%s%s" % (MARK, json.dumps({"missing": name})))
        raise SystemExit(0)
    path = spec.submodule_search_locations
names = None
origin = spec.origin if spec is not None and spec.has_location else None
if origin and origin.endswith(".py"):
    try:
        with open(origin, "rb") as handle:
            tree = ast.parse(handle.read())
    except (OSError, SyntaxError, ValueError) as exc:
        print("%s%s" % (MARK, json.dumps({"unreadable": origin, "error": str(exc)})))
        raise SystemExit(0)
    names = set()
    dynamic = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    dynamic = True
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            dynamic = True
    if dynamic or "__getattr__" in names:
        names = None
print("%s%s" % (MARK, json.dumps({
    "origin": origin,
    "names": sorted(names) if names is not None else None,
})))
""".replace("MARK", repr(_MARK))

# Run by the app's interpreter as the service would run it (no -I: PYTHONPATH counts).
_IMPORT = """\
import ast, json, sys, traceback
module, attr = sys.argv[1], sys.argv[2]
if "" not in sys.path:
    sys.path.insert(0, "")
def answer(**data):
    sys.stdout.write("\\n%s%s\\n" % (MARK, json.dumps(data)))
    sys.stdout.flush()
try:
    import importlib
    obj = importlib.import_module(module)
    call = None
    name = attr
    if "(" in attr:
        name, _, rest = attr.partition("(")
        call = ast.parse("f(" + rest, mode="eval").body
    for part in name.split("."):
        obj = getattr(obj, part)
    if call is not None:
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        obj = obj(*args, **kwargs)
except BaseException as exc:
    # The innermost frame in a real file: the app's own line, not the import machinery's.
    frames = traceback.extract_tb(exc.__traceback__)
    where = [f for f in frames if not f.filename.startswith("<")][-1:]
    answer(
        ok=False,
        type=type(exc).__name__,
        error=str(exc).splitlines()[0] if str(exc) else "",
        at=("%s:%s" % (where[0].filename, where[0].lineno)) if where else None,
    )
    raise SystemExit(0)
answer(ok=True, callable=callable(obj), kind=type(obj).__name__)
""".replace("MARK", repr(_MARK))


@dataclass(frozen=True)
class AppProblem:
    """Something wrong with the app as the service would run it, said in one line."""

    #: "error" or "warning".
    severity: str
    message: str

    @property
    def is_error(self) -> bool:
        """Whether it stops a command that touches a running system."""
        return self.severity == "error"


def _split(app: str) -> tuple[str, str]:
    module, _, attr = app.partition(":")
    return module, attr


def _answer(stdout: str) -> dict[str, object] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARK):
            data: dict[str, object] = json.loads(line[len(_MARK) :])
            return data
    return None


def executable_problems(spec: AppSpec) -> list[AppProblem]:
    """A warning when ExecStart='s program is missing on a machine that has the app's paths."""
    if spec.server == "command":
        program = Path(spec.command[0])
        if program.parent.is_dir() and not program.exists():
            return [AppProblem("warning", f"command: {program} does not exist on this machine")]
        return []
    venv = Path(spec.venv_path)
    program = venv / "bin" / spec.server
    if venv.is_dir() and not program.exists():
        return [
            AppProblem(
                "warning",
                f"{program} does not exist: the venv has no {spec.server} "
                f"(install it there: {venv}/bin/pip install {spec.server})",
            )
        ]
    return []


def locate_app(spec: AppSpec) -> list[AppProblem]:
    """Find the app's module and attribute without running it; warnings only.

    Nothing is said when the spec's interpreter does not exist here (files written for
    another host) or the server is ``command``.
    """
    problems = executable_problems(spec)
    if spec.server == "command" or spec.app is None or not Path(spec.python).is_file():
        return problems
    from opskit.proc import SubprocessRunner

    module, attr = _split(spec.app)
    extra = [spec.working_directory, *_pythonpath(spec)]
    done = SubprocessRunner(shield=False)(
        [spec.python, "-I", "-B", "-c", _LOCATE, module, attr, json.dumps(extra)],
        cwd=spec.working_directory if Path(spec.working_directory).is_dir() else None,
        timeout=LOCATE_TIMEOUT,
    )
    answer = _answer(done.stdout)
    if answer is None:
        problems.append(
            AppProblem("warning", f"app {spec.app}: could not look for it ({done.tail()})")
        )
        return problems
    where = f"with {spec.python} in {spec.working_directory}"
    if "missing" in answer:
        problems.append(
            AppProblem(
                "warning", f"app {spec.app}: No module named {answer['missing']!r} ({where})"
            )
        )
        return problems
    if "unreadable" in answer:
        problems.append(
            AppProblem(
                "warning", f"app {spec.app}: cannot read {answer['unreadable']}: {answer['error']}"
            )
        )
        return problems
    names = answer.get("names")
    top = attr.partition("(")[0].split(".")[0]
    if isinstance(names, list) and top not in names:
        found = [
            n for n in names if n in ("app", "application", "create_app", "make_app", "asgi", "api")
        ]
        hint = f"; it defines {', '.join(found)}" if found else ""
        problems.append(
            AppProblem("warning", f"app {spec.app}: {answer['origin']} defines no {top!r}{hint}")
        )
    return problems


def _pythonpath(spec: AppSpec) -> list[str]:
    from opskit.systemd.units import environment

    value = dict(environment(spec)).get("PYTHONPATH", "")
    return [p for p in value.split(":") if p]


def service_environment(spec: AppSpec) -> tuple[dict[str, str], list[AppProblem]]:
    """The environment the service's processes start with: PATH, the unit's, the env file's."""
    from opskit.systemd.units import environment

    env = {"PATH": SERVICE_PATH, "LANG": os.environ.get("LANG", "C.UTF-8")}
    env.update(environment(spec))
    problems: list[AppProblem] = []
    if spec.environment_file:
        try:
            env.update(parse_environment_file(Path(spec.environment_file).read_text("utf-8")))
        except OSError as exc:
            problems.append(
                AppProblem(
                    "error",
                    f"environment-file: cannot read {spec.environment_file}: {exc.strerror} "
                    "(systemd would refuse to start the service)",
                )
            )
        except UnicodeDecodeError:
            problems.append(
                AppProblem("error", f"environment-file: {spec.environment_file} is not UTF-8")
            )
    return env, problems


def parse_environment_file(text: str) -> dict[str, str]:
    r"""Read an EnvironmentFile= as systemd does: KEY=VALUE lines, # and ; comments, quotes.

    systemd.exec(5): leading/trailing blanks around the line are dropped; a value in
    double quotes keeps backslash escapes of ``"``, ``\\``, ``$`` and newlines; single
    quotes keep everything; a trailing backslash continues the line.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            continue
        out[key] = _unquote(value.strip())
    return out


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, i = value[1:-1], [], 0
        while i < len(inner):
            if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in '"\\$`\n':
                out.append(inner[i + 1])
                i += 2
                continue
            out.append(inner[i])
            i += 1
        return "".join(out)
    return value


def import_app(spec: AppSpec, *, timeout: float = IMPORT_TIMEOUT) -> list[AppProblem]:
    """Import the app object as the service will; an import failure is an error.

    Its interpreter, working directory, environment and environment file, in a
    subprocess of its own; a hung import is killed after ``timeout`` seconds. It runs as
    the user running opskit, not the service's user.
    """
    problems = executable_problems(spec)
    if spec.server == "command" or spec.app is None:
        return problems
    python = Path(spec.python)
    if not python.is_file():
        return [
            *problems,
            AppProblem(
                "error",
                f"app {spec.app}: no interpreter at {spec.python} "
                f"(venv: {spec.venv_path}; create it, or set venv)",
            ),
        ]
    workdir = Path(spec.working_directory)
    if not workdir.is_dir():
        return [
            *problems,
            AppProblem(
                "error",
                f"working-directory: {workdir} does not exist "
                "(systemd would fail the start with 200/CHDIR)",
            ),
        ]
    env, env_problems = service_environment(spec)
    problems += env_problems
    if any(p.is_error for p in env_problems):
        return problems
    from opskit.proc import SubprocessRunner

    module, attr = _split(spec.app)
    done = SubprocessRunner(shield=False)(
        [spec.python, "-c", _IMPORT, module, attr], env=env, cwd=str(workdir), timeout=timeout
    )
    how = f"imported with {spec.python} in {workdir}"
    if done.timed_out:
        problems.append(
            AppProblem("error", f"app {spec.app}: importing it took over {timeout:g} s ({how})")
        )
        return problems
    answer = _answer(done.stdout)
    if answer is None:
        problems.append(
            AppProblem("error", f"app {spec.app}: the import check died: {done.tail()} ({how})")
        )
    elif not answer.get("ok"):
        detail = f"{answer['type']}: {answer['error']}" if answer.get("error") else answer["type"]
        at = f" at {answer['at']}" if answer.get("at") else ""
        problems.append(AppProblem("error", f"app {spec.app}: {detail}{at} ({how})"))
    elif not answer.get("callable"):
        problems.append(
            AppProblem(
                "error",
                f"app {spec.app}: is a {answer.get('kind')}, not a WSGI or ASGI callable ({how})",
            )
        )
    return problems


def warn_about_app(spec: AppSpec, say: Callable[[str], None]) -> None:
    """For commands that only write files: say each problem locate_app finds, as a warning."""
    for problem in locate_app(spec):
        say(f"warning: {problem.message}")
