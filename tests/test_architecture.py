"""The layout's rules (CONTRIBUTING.md, "Module map"), checked on the source text.

Every ``import`` in ``cbl/`` counts, also those inside functions: a dependency that
is only taken at call time is still a dependency. An import of a package's face
(``from cbl.data import load_split``) is followed to the module that defines the
name, so re-exports through ``__init__.py`` neither hide nor invent an edge; a
plain ``import cbl.data`` counts as an import of every module the face hands on.

Run alone: ``python -m pytest -q tests/test_architecture.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "cbl"

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# Functions allowed past MAX_FUNCTION_LINES ("module.Class.function"): long but linear, with the reason.
LONG_FUNCTIONS: dict[str, str] = {}


@dataclass(frozen=True)
class Edge:
    """Modules under ``importer`` may not import anything under ``forbidden`` (but what ``allowed`` names)."""

    importer: str
    forbidden: tuple[str, ...]
    why: str
    allowed: tuple[str, ...] = ()  # targets inside ``forbidden`` that are fine all the same
    exempt: tuple[str, ...] = ()  # importers the rule does not bind


_SCORING = (
    "cbl.losses",
    "cbl.centers",
    "cbl.diagnostics",
    "cbl.metrics",
    "cbl.uncertainty",
    "cbl.tdcf",
    "cbl.breakdowns",
)
_LEAVES = ("cbl.data", "cbl.model", *_SCORING)
_RUNNERS = ("cbl.engine", "cbl.sweep", "cbl.bench", "cbl.report", "cbl.cli")

FORBIDDEN_EDGES: list[Edge] = [
    Edge("cbl", ("cbl.cli",), "the command line is the top: nothing imports it", exempt=("cbl.cli", "cbl.__main__")),
    Edge("cbl.data", ("cbl.model", *_SCORING), "data knows audio, labels and protocols, not what learns from them"),
    Edge("cbl.model", ("cbl.data", *_SCORING), "the model takes tensors; loading audio is the data package's job"),
    *(
        Edge(part, ("cbl.model",), "losses and scores read the model's output tensors, not the model")
        for part in _SCORING
    ),
    Edge("cbl.engine", ("cbl.sweep", "cbl.bench", "cbl.report"), "a single run knows nothing of sweeps"),
    Edge("cbl.sweep", ("cbl.bench", "cbl.report"), "a sweep runs trials; reports and benchmarks read sweeps"),
    Edge("cbl.report", ("cbl.bench",), "a report reads what a sweep left on disk"),
    Edge(
        "cbl.config",
        ("cbl",),
        "the config is the foundation: plain data, errors and YAML only",
        allowed=("cbl.config", "cbl.errors", "cbl.yamlio"),
    ),
    *(Edge(leaf, _RUNNERS, "the building blocks know nothing of who runs them") for leaf in _LEAVES),
]


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name
    target: str  # dotted module name the name lives in
    name: str | None  # the imported name (None for ``import x``)
    line: int


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@cache
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not is_package(importer):
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def face(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` hands on -> the module that defines them."""
    out: dict[str, str] = {}
    for node in ast.walk(tree(package)):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(package, node)
            for alias in node.names:
                out[alias.asname or alias.name] = source
    return out


def resolve(target: str, name: str | None) -> str:
    """The module an imported name really comes from (through package faces)."""
    if name is not None and f"{target}.{name}" in modules():
        return f"{target}.{name}"  # a submodule
    seen = set()
    while name is not None and target in modules() and is_package(target) and name in face(target):
        if target in seen:
            break
        seen.add(target)
        target = face(target)[name]
        if f"{target}.{name}" in modules():
            return f"{target}.{name}"
    return target


def _is_cbl(name: str) -> bool:
    return name == "cbl" or name.startswith("cbl.")


def imports_of(name: str) -> Iterator[Import]:
    for node in ast.walk(tree(name)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _is_cbl(alias.name):
                    continue
                yield Import(name, alias.name, None, node.lineno)
                if alias.name in modules() and is_package(alias.name):  # `import cbl.data`: all it hands on
                    for handed in sorted(set(face(alias.name).values())):
                        if _is_cbl(handed):
                            yield Import(name, handed, None, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(name, node)
            if _is_cbl(source):
                for alias in node.names:
                    yield Import(name, resolve(source, alias.name), alias.name, node.lineno)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for module in modules():
        if is_package(module):
            continue  # a face hands names on; the edges are drawn to where they live
        for imp in imports_of(module):
            if imp.target in modules() and imp.target != module and not is_package(imp.target):
                graph[module].add(imp.target)
    return graph


def find_cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def forbidden_edges() -> list[str]:
    problems = []
    for module in modules():
        for imp in imports_of(module):
            for edge in FORBIDDEN_EDGES:
                if not _within(module, edge.importer) or any(_within(module, e) for e in edge.exempt):
                    continue
                if any(_within(imp.target, t) for t in edge.forbidden) and not any(
                    _within(imp.target, a) for a in edge.allowed
                ):
                    problems.append(f"{modules()[module]}:{imp.line}: {module} imports {imp.target} ({edge.why})")
    return sorted(set(problems))


def dynamic_imports() -> list[str]:
    """``importlib.import_module("cbl...")`` or ``__import__("cbl...")``: an edge no other rule could see."""
    problems = []
    for module, path in modules().items():
        for node in ast.walk(tree(module)):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if called in ("import_module", "__import__") and _is_cbl(str(node.args[0].value)):
                problems.append(f"{path}:{node.lineno}: {module} imports {node.args[0].value} by name")
    return problems


def long_modules() -> list[str]:
    return [
        f"{path}: {lines} lines (at most {MAX_MODULE_LINES})"
        for path in modules().values()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]


def functions(module: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function of a module with its qualified name (``module.Class.method``, ``module.outer.inner``)."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{prefix}.{child.name}", child
                yield from walk(child, f"{prefix}.{child.name}")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}.{child.name}")
            else:
                yield from walk(child, prefix)

    yield from walk(tree(module), module)


def long_functions() -> list[str]:
    problems = []
    for module, path in modules().items():
        for key, node in functions(module):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                problems.append(f"{path}:{node.lineno}: {key} is {length} lines (at most {MAX_FUNCTION_LINES})")
    return problems


def declared_all(module: str) -> set[str] | None:
    """The names of ``__all__ = [...]`` (and ``__all__ += [...]``), or None when the module has none."""
    names: set[str] | None = None
    for node in tree(module).body:
        target, value = None, None
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Name) and t.id == "__all__"), None)
            value = node.value
        if target is None or not isinstance(value, (ast.List, ast.Tuple)):
            continue
        listed = {elt.value for elt in value.elts if isinstance(elt, ast.Constant) and isinstance(elt.value, str)}
        names = listed if names is None or not isinstance(node, ast.AugAssign) else names | listed
    return names


def defined_names(module: str) -> set[str]:
    """Names bound at a module's top level (definitions, assignments, imports)."""
    names: set[str] = set()
    for node in tree(module).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _private_imports(module: str, path: Path) -> tuple[list[str], dict[str, str]]:
    """Problems of ``module``'s imports (a ``_name``, or a ``_module`` of another package), and its local names
    for cbl modules (``from cbl.report import figures``, ``import cbl.engine.trainer``)."""
    problems, aliases = [], {}
    for imp in imports_of(module):
        package = imp.target.rsplit(".", 1)[0]
        if any(_is_private(part) for part in imp.target.split(".")) and not _within(module, package):
            problems.append(f"{path}:{imp.line}: {module} imports the private module {imp.target}")
        if imp.name is None:
            continue
        if _is_private(imp.name) and imp.target != module:
            problems.append(f"{path}:{imp.line}: {module} imports the private {imp.target}.{imp.name}")
        if imp.target in modules() and imp.target.endswith("." + imp.name):
            aliases[imp.name] = imp.target
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            aliases.update({alias.asname or alias.name: alias.name for alias in node.names if _is_cbl(alias.name)})
    return problems, aliases


def private_crossings() -> list[str]:
    """``_name`` imported from another module or read as ``module._name``; a ``_module`` imported from outside
    its own package."""
    problems = []
    for module, path in modules().items():
        found, aliases = _private_imports(module, path)
        problems += found
        for node in ast.walk(tree(module)):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            owner = _dotted(node.value)
            if owner in aliases:
                problems.append(f"{path}:{node.lineno}: {module} reads the private {aliases[owner]}.{node.attr}")
            elif owner is not None and owner in modules() and owner != module:
                problems.append(f"{path}:{node.lineno}: {module} reads the private {owner}.{node.attr}")
    return sorted(set(problems))


def missing_from_all() -> list[str]:
    """Names other modules import that their home module does not list in ``__all__``."""
    problems = []
    for module, path in modules().items():
        for imp in imports_of(module):
            if imp.name is None or imp.name.startswith("_") or imp.target == module or imp.target not in modules():
                continue
            if imp.target.endswith("." + imp.name):
                continue  # a submodule, not a name
            listed = declared_all(imp.target)
            if listed is None or imp.name not in listed:
                problems.append(f"{path}:{imp.line}: {module} imports {imp.target}.{imp.name}, not in its __all__")
    return sorted(set(problems))


def faces_that_hide() -> list[str]:
    """A package's ``__init__`` lists in ``__all__`` every name it imports from cbl to hand on."""
    problems = []
    for module, path in modules().items():
        if not is_package(module):
            continue
        listed = declared_all(module) or set()
        for node in tree(module).body:
            if isinstance(node, ast.ImportFrom) and _is_cbl(_absolute(module, node)):
                for alias in node.names:
                    name = alias.asname or alias.name
                    if name not in listed and f"{_absolute(module, node)}.{alias.name}" not in modules():
                        problems.append(f"{path}:{node.lineno}: {module} hands on {name} without listing it in __all__")
    return problems


def unknown_in_all() -> list[str]:
    """Every name in ``__all__`` exists in the module."""
    return [
        f"{path}: __all__ lists {name}, which {module} does not define"
        for module, path in modules().items()
        for name in sorted((declared_all(module) or set()) - defined_names(module))
    ]


RULES = {
    "no import cycle": lambda: [" <-> ".join(c) for c in find_cycles()],
    "no forbidden edge": forbidden_edges,
    "no import of cbl by name": dynamic_imports,
    f"modules <= {MAX_MODULE_LINES} lines": long_modules,
    f"functions <= {MAX_FUNCTION_LINES} lines": long_functions,
    "no private name crosses a module": private_crossings,
    "imported names are in __all__": missing_from_all,
    "a package face lists what it hands on": faces_that_hide,
    "__all__ names what the module defines": unknown_in_all,
}


@pytest.mark.parametrize("rule", list(RULES))
def test_the_layout_keeps_its_rule(rule: str) -> None:
    problems = RULES[rule]()
    assert not problems, f"{rule}: {len(problems)} problem(s)\n" + "\n".join(problems)


def test_every_allowed_long_function_exists_and_is_long() -> None:
    """An allowlist entry outlives its reason when the function is gone or short again."""
    lengths = {key: (node.end_lineno or node.lineno) - node.lineno + 1 for m in modules() for key, node in functions(m)}
    for key, why in LONG_FUNCTIONS.items():
        assert why and lengths.get(key, 0) > MAX_FUNCTION_LINES, key


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """Point the checker at a package written by the test; restore it afterwards."""

    def write(files: dict[str, str]) -> None:
        for name, text in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for function in (modules, tree, face):
            function.cache_clear()
        monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "cbl")

    yield write
    for function in (modules, tree, face):
        function.cache_clear()


def test_the_checker_sees_a_cycle_an_import_inside_a_function_and_a_private_name(toy_package) -> None:
    """The rules are only as good as the reader: it must see what it is meant to forbid."""
    toy_package(
        {
            "cbl/__init__.py": "",
            "cbl/data/__init__.py": "from cbl.data.reader import read\n",
            "cbl/data/reader.py": (
                "__all__ = ['read']\n\ndef read():\n    from cbl.model import _forward\n    return _forward\n"
            ),
            "cbl/model.py": "from cbl.data import read\n\n__all__ = []\n\ndef _forward():\n    return read\n",
        }
    )
    assert find_cycles() == [["cbl.data.reader", "cbl.model"]]
    assert any("imports the private cbl.model._forward" in p for p in private_crossings())
    assert any("cbl.data.reader imports cbl.model" in p for p in forbidden_edges())
    assert any("cbl.model imports cbl.data.reader" in p for p in forbidden_edges())
    assert any("cbl.data hands on read without listing it" in p for p in faces_that_hide())


def test_the_checker_sees_dotted_private_reads_private_modules_and_dynamic_imports(toy_package) -> None:
    toy_package(
        {
            "cbl/__init__.py": "",
            "cbl/errors.py": "__all__ = ['Oops', 'Gone']\n\nclass Oops(Exception):\n    pass\n",
            "cbl/config/__init__.py": "",
            "cbl/config/schema.py": "import cbl.engine.trainer\n\n__all__ = []\n",
            "cbl/engine/__init__.py": "from cbl.engine.trainer import fit\n\n__all__ = ['fit']\n",
            "cbl/engine/_hidden.py": "__all__ = ['x']\nx = 1\n",
            "cbl/engine/trainer.py": "__all__ = ['fit']\n\ndef fit():\n    return 1\n\ndef _embed():\n    return 2\n",
            "cbl/sweep.py": (
                "import importlib\n\nimport cbl.engine\nimport cbl.engine.trainer\nfrom cbl.engine._hidden import x\n\n"
                "__all__ = []\n\ndef run():\n    importlib.import_module('cbl.report')\n"
                "    return cbl.engine.trainer._embed(), x\n"
            ),
            "cbl/cli.py": "from cbl.sweep import run\n",
            "cbl/__main__.py": "from cbl.cli import run\n",
            "cbl/report.py": "import cbl.engine\n\n__all__ = []\n",
        }
    )
    crossings = private_crossings()
    assert any("cbl.sweep reads the private cbl.engine.trainer._embed" in p for p in crossings)
    assert any("cbl.sweep imports the private module cbl.engine._hidden" in p for p in crossings)
    assert any("imports cbl.report by name" in p for p in dynamic_imports())
    edges = forbidden_edges()
    assert any("cbl.config.schema imports cbl.engine.trainer" in p for p in edges)  # config imports nothing above it
    assert not any("cbl.__main__" in p for p in edges)  # the entry point may import the command line
    assert any("__all__ lists Gone" in p for p in unknown_in_all())
    assert "cbl.engine.trainer" in {imp.target for imp in imports_of("cbl.report")}  # `import cbl.engine`: its face
