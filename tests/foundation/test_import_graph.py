"""The layout's rule, from the code's own imports (every ``import`` statement, inside functions too): a module
imports only its own layer and those below it, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL = ("worker.py", "headless_model_management.py", "headless_wgp.py", "wgp.py")

# Top to bottom: the path of a row. A module belongs to the last (most specific) entry naming it or a package
# above it; modules named nowhere (db, errors, hub, task_types, task_files, model_memory, ...) are the
# foundation, below every layer.
LAYERS: list[tuple[str, ...]] = [
    ("worker",),
    ("source.cli",),
    ("source.web",),
    ("source.submission",),  # the producer-side checks of tasks add and POST /api/tasks
    ("source.worker",),
    ("source.routing",),
    ("source.orchestrators",),
    # generation/handler.py and image_tasks.py are the generation task types' handlers
    ("source.handlers", "source.generation.handler", "source.generation.image_tasks"),
    ("headless_model_management",),
    ("headless_wgp",),
    ("wgp",),
    ("source.generation",),
    ("source.engine",),
    ("source.media",),
    # the settings every layer is handed (worker.py builds them); they import only the foundation
    ("source.worker.settings",),
]

# Known climbs, each with the change that removes it; the test fails when one is gone (drop it here then).
KNOWN_CLIMBS = {
    # the tiny random-weight models, test support code, still live in the engine (issue 32, item 2)
    ("source.media.depth", "source.engine.tiny"), ("source.media.depth", "source.engine"),
    ("source.media.upscale", "source.engine.tiny"), ("source.media.upscale", "source.engine"),
}


def _modules() -> dict[str, Path]:
    paths = [*REPO.glob("source/**/*.py"), *(REPO / name for name in TOP_LEVEL)]
    modules = {}
    for path in paths:
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        edges[name] = found
    return edges


def _layer(module: str) -> int:
    found = len(LAYERS)
    best = -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                found, best = index, len(prefix)
    return found


def _is_package_of(package: str, module: str) -> bool:
    return module.startswith(package + ".")


EDGES = _imports(_modules())


def test_no_module_imports_a_layer_above_it():
    climbs = {(module, target) for module, targets in EDGES.items() for target in targets
              if _layer(target) < _layer(module) and not _is_package_of(module, target)}
    assert climbs - KNOWN_CLIMBS == set(), "imports of a layer above (see LAYERS)"
    assert climbs >= KNOWN_CLIMBS, "a known climb is gone: remove it from KNOWN_CLIMBS"


def test_no_two_modules_import_each_other():
    pairs = {tuple(sorted((a, b))) for a, targets in EDGES.items() for b in targets
             if a in EDGES.get(b, ()) and not _is_package_of(a, b) and not _is_package_of(b, a)}
    assert pairs == set()


def test_the_graph_sees_lazy_and_relative_imports():
    # guards the test itself: function-level imports count (handlers load torch lazily)
    assert "source.media.depth" in EDGES["source.handlers.depth"]
    assert "source.engine.core" in EDGES["headless_wgp"]  # imported inside a property
    assert _layer("source.generation.handler") < _layer("source.generation.conversion")
    assert _layer("source.worker.settings") > _layer("source.handlers.context")
