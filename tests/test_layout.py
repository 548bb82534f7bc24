"""bench's wings import one way only: no module imports a wing above its own, and no circle.

Read statically from the source (every `import` and `from ... import`, at module level or inside
functions), so a lazy import cannot hide an arrow pointing the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import bench

# lowest first; the top level holds the plugin contracts (lowest) and the entry points (cli,
# __main__: highest); plugins (bench.methods, .datasets, .evaluators, .backbones, .encoders: in a
# wheel they sit inside the package) build on every wing and nothing imports them but the entry
# points, which the registry reaches through entry points
ORDER = ["contracts", "runtime", "store", "data", "priors", "metrics", "pipeline", "report", "scale", "plugins",
         "entry"]
ENTRY = {"bench.cli", "bench.__main__"}
ABOVE_ALL = ("bench.perf",)
PLUGINS = ("methods", "datasets", "evaluators", "backbones", "encoders", "gin")


def package_root() -> Path:
    return Path(bench.__file__).resolve().parent


def modules() -> dict[str, Path]:
    root = package_root()
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("bench", *parts))
        out[name.removesuffix(".__init__")] = path
    return out


def wing(name: str) -> str:
    if name in ENTRY or name.startswith(ABOVE_ALL):
        return "entry"
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in ORDER:
        return parts[1]
    if len(parts) > 1 and parts[1] in PLUGINS:
        return "plugins"
    return "contracts"


def imports(path: Path, known: set) -> set:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known}
    return found - {"bench"}


def graph() -> dict[str, set]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def test_no_module_imports_a_wing_above_its_own():
    rank = {w: i for i, w in enumerate(ORDER)}
    wrong = [(a, b) for a, targets in graph().items() for b in targets
             if not b.endswith("__init__") and rank[wing(b)] > rank[wing(a)]]
    assert wrong == [], wrong


def test_there_is_no_import_circle():
    g = graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list) -> list:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack + [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, stack + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return []

    for start in sorted(g):
        if start not in state:
            cycle = visit(start, [])
            assert not cycle, " -> ".join(cycle)


def test_the_wings_hold_what_docs_architecture_says():
    wings = {w for w in ORDER if (package_root() / w).is_dir()} - {"plugins", "entry"}
    assert wings == {"runtime", "store", "data", "priors", "metrics", "pipeline", "report", "scale"}
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    for w in wings:
        assert f"`bench/{w}/`" in text, w
