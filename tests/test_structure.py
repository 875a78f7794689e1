"""The code's shape holds: no import circle, no module over 450 lines, pipelines/ without gradio, ui/ without
torch, a docstring for each pipelines subpackage, and imports that start nothing (no thread, no CUDA).

The import graph is read from the project's own files with ``ast``: every ``import`` statement counts,
at module level and inside functions, except those under ``if TYPE_CHECKING:``; relative imports are
resolved, and ``from pkg import mod`` counts as importing the submodule ``pkg.mod``. Scripts import their
siblings by bare name (``import torch_build``), and so do tests that put scripts/ on ``sys.path``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450
TOP = ("app.py", "pipelines", "ui", "scripts", "tests")


def project_files() -> dict[str, Path]:
    """Module name -> file, for app.py, pipelines/, ui/, scripts/ and tests/."""
    files: dict[str, Path] = {}
    for top in TOP:
        path = ROOT / top
        found = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in found:
            if "__pycache__" in file.parts:
                continue
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = file
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a file, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_names(module: str, file: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The dotted names an import statement brings in (absolute; submodules named where they are)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    return [prefix] + [f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*"]


def resolve(name: str, importer: str, files: dict[str, Path]) -> str | None:
    """The project module ``name`` loads (the longest prefix that is one), or None for other packages."""
    parts = name.split(".")
    if parts[0] not in {"app", "pipelines", "ui", "scripts", "tests"}:
        folder = importer.split(".")[0]  # a script (or a test) importing a script by its bare name
        for candidate in (f"{folder}.{name}", f"scripts.{name}"):
            if candidate.split(".")[0] in ("scripts", "tests") and candidate in files:
                return candidate
        return None
    while parts:
        dotted = ".".join(parts)
        if dotted in files:
            return dotted
        parts.pop()
    return None


def import_graph(files: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Module -> the project modules it imports, and module -> the top-level names of everything it imports."""
    graph: dict[str, set[str]] = {}
    tops: dict[str, set[str]] = {}
    for module, file in files.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        edges, names = set(), set()
        for node in import_nodes(tree):
            dotted = imported_names(module, file, node)
            names.update(name.split(".")[0] for name in dotted[:1 if isinstance(node, ast.ImportFrom) else None])
            targets = {resolve(name, module, files) for name in dotted}
            targets.discard(None)
            # ``from pkg import mod`` loads pkg.mod; pkg itself (an ancestor package) is no edge of its own
            targets -= {target for target in targets if any(other.startswith(target + ".") for other in targets)}
            edges.update(target for target in targets if target != module)
        graph[module], tops[module] = edges, names
    return graph, tops


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def strongconnect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                strongconnect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    cycles = []
    for group in groups:
        members, start = set(group), group[0]
        paths = {start: [start]}
        queue = [start]
        while queue:  # shortest way round from start back to start, inside the group
            node = queue.pop(0)
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    queue = []
                    cycles.append([*paths[node], start])
                    break
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    queue.append(nxt)
    return cycles


FILES = project_files()
GRAPH, TOPS = import_graph(FILES)


def test_the_graph_is_read_as_python_resolves_it():
    """The reader itself: relative imports, submodules named in ``from``, imports in functions, TYPE_CHECKING."""
    assert "pipelines.studio.jobs" in GRAPH["pipelines.studio.jobqueue"]  # from .jobs import ...
    assert "pipelines.scale.cluster_dispatch" in GRAPH["pipelines.scale.cluster"]
    assert "pipelines.scale.cluster" in GRAPH["app"]  # imported inside main()
    assert "pipelines.tasks.batch" not in GRAPH["pipelines.tasks.batch_jobs"]  # under TYPE_CHECKING only
    assert "gradio" in TOPS["ui.app"] and "torch" in TOPS["pipelines.device.worker"]  # imports inside functions
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    files = {"pkg.sub.x": Path("pkg/sub/x.py"), "pkg.sub": Path("pkg/sub/__init__.py")}
    node = ast.parse("from .. import mod").body[0]
    assert imported_names("pkg.sub.x", files["pkg.sub.x"], node) == ["pkg", "pkg.mod"]
    assert imported_names("pkg.sub", files["pkg.sub"], node) == ["pkg", "pkg.mod"]  # from a package's __init__


def test_no_import_circle():
    cycles = find_cycles(GRAPH)
    assert not cycles, "Import circles (module -> module it imports):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_no_module_over_450_lines():
    long = {str(file.relative_to(ROOT)): count for file in FILES.values()
            if (count := len(file.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"Modules over {MAX_LINES} lines: " + ", ".join(
        f"{name} ({count})" for name, count in sorted(long.items()))


def test_pipelines_never_import_gradio_and_ui_never_imports_torch():
    wrong = sorted([f"{module} imports gradio" for module, names in TOPS.items()
                    if module.startswith("pipelines") and names & {"gradio", "gradio_client"}]
                   + [f"{module} imports torch" for module, names in TOPS.items()
                      if module.split(".")[0] == "ui" and "torch" in names])
    assert not wrong, "; ".join(wrong)


def test_each_pipelines_subpackage_says_what_lives_there():
    folders = sorted({file.parent for file in (ROOT / "pipelines").rglob("*.py") if "__pycache__" not in file.parts})
    missing = [str(folder.relative_to(ROOT)) for folder in folders
               if not (folder / "__init__.py").exists()
               or not ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))]
    assert not missing, "Packages without an __init__.py docstring: " + ", ".join(missing)


IMPORT_ALL = r"""
import importlib, json, sys, threading
names = json.loads(sys.argv[1])
before = threading.active_count()
problems, failed = [], []
for name in names:
    try:
        importlib.import_module(name)
    except Exception as error:
        failed.append(f"{name}: {type(error).__name__}: {error}")
        continue
    if threading.active_count() != before:
        problems.append(f"{name} started threads: {[t.name for t in threading.enumerate()]}")
        before = threading.active_count()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda") and torch.cuda.is_initialized():
        problems.append(f"{name} initialised CUDA")
        break
imported = sum(name in sys.modules for name in names)
print(json.dumps({"problems": problems, "failed": failed, "imported": imported}))
"""


def test_importing_any_module_starts_nothing():
    """Every module of pipelines/ and ui/, imported in one fresh process with CUDA hidden: each imports, no
    thread starts, and CUDA is never initialised (torch itself is imported lazily, where it is used)."""
    names = sorted(name for name in FILES if name.split(".")[0] in ("pipelines", "ui"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, json.dumps(names)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    wrong = [f"does not import: {line}" for line in report["failed"]] + report["problems"]
    assert not wrong, "; ".join(wrong)
    assert report["imported"] == len(names) > 50


def executor_mismatches(cls: type) -> list[str]:
    """How ``cls`` differs from the ``Executor`` Protocol: missing methods, or calls the Protocol allows that
    ``cls`` would refuse (its parameters must start with the Protocol's, same names, kinds, defaults and
    annotations; any it adds need a default)."""
    import inspect

    from pipelines.scale.executor import Executor

    wrong = []
    for name, member in vars(Executor).items():
        if name.startswith("_") or not callable(member):
            continue
        own = getattr(cls, name, None)
        if not callable(own):
            wrong.append(f"{cls.__name__}.{name} is missing")
            continue
        want = list(inspect.signature(member).parameters.values())
        have = list(inspect.signature(own).parameters.values())
        extra = have[len(want):]
        if have[:len(want)] != want or any(p.default is inspect.Parameter.empty for p in extra) \
                or inspect.signature(own).return_annotation != inspect.signature(member).return_annotation:
            wrong.append(f"{cls.__name__}.{name}{inspect.signature(own)} is not {name}{inspect.signature(member)}")
    return wrong


def test_the_local_worker_and_the_ray_executor_are_both_executors(tmp_path):
    """Both classes against the one Protocol: every method with a compatible signature, and every attribute
    on an instance (built, never started: no thread, no GPU, no Ray)."""
    from pipelines.device.worker import GPUWorker
    from pipelines.scale.cluster import RayExecutor
    from pipelines.scale.executor import Executor
    from pipelines.studio.settings import Settings

    assert executor_mismatches(GPUWorker) == []
    assert executor_mismatches(RayExecutor) == []
    settings = Settings(outputs_dir=tmp_path / "outputs", data_dir=tmp_path / "data", demo=True)
    assert isinstance(GPUWorker(settings, handlers={}), Executor)
    assert isinstance(RayExecutor(settings), Executor)
    assert "torch" not in TOPS["pipelines.scale.executor"] and "ray" not in TOPS["pipelines.scale.executor"]

    class Drifted(GPUWorker):  # a signature that drifted from the Protocol is named
        def cancel(self, job) -> bool:
            return False

    assert executor_mismatches(Drifted) == ["Drifted.cancel(self, job) -> 'bool' is not cancel(self, job_id: 'str') -> 'bool'"]
