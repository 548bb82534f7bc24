"""bench's wings import one way only: no module imports a wing above its own, and no circle.

Read statically from the source (every `import` and `from ... import`, at module level or inside
functions), so a lazy import cannot hide an arrow pointing the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

# lowest first; the top level holds the plugin contracts (lowest) and the entry points (cli,
# __main__, and the package's own __init__, which re-exports the API: highest); plugins
# (bench.methods, .datasets, .evaluators, .remedies, .backbones, .encoders) build on every wing and
# nothing imports them but the entry points, which the registry reaches through entry points
ORDER = [
    "contracts",
    "config",
    "runtime",
    "store",
    "data",
    "priors",
    "classify",
    "metrics",
    "pipeline",
    "report",
    "paper",
    "scale",
    "testing",
    "plugins",
    "entry",
]
ENTRY = {"bench", "bench.cli", "bench.__main__"}
ABOVE_ALL = ("bench.perf", "bench.new")  # the performance suite, `bench new` (entry points)
PLUGINS = ("methods", "datasets", "evaluators", "remedies", "backbones", "encoders", "gin")
# the repository's plugin folders, which a wheel puts inside the package (pyproject's package-dir)
PLUGIN_FOLDERS = {
    "methods": "methods",
    "datasets": "datasets",
    "evaluators": "evaluators",
    "remedies": "remedies",
    "backbones": "bench/backbones",
    "encoders": "bench/encoders",
}
MAX_TOP_LEVEL = 16


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def package_root() -> Path:
    return repo_root() / "bench"


def _module_name(parts: tuple) -> str:
    return ".".join(("bench", *parts)).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    """Every module of bench, read from the source tree: bench/ and the plugin folders beside it."""
    out = {}
    for path in package_root().rglob("*.py"):
        out[_module_name(path.relative_to(package_root()).with_suffix("").parts)] = path
    for kind, folder in PLUGIN_FOLDERS.items():
        for path in (repo_root() / folder).rglob("*.py"):
            out[_module_name((kind, *path.relative_to(repo_root() / folder).with_suffix("").parts))] = path
    return out


def wing(name: str) -> str:
    if name in ENTRY or name.startswith(ABOVE_ALL):
        return "entry"
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in PLUGINS:
        return "plugins"
    if len(parts) > 1 and parts[1] in ORDER:  # a wing's modules and its package (bench.config's __init__)
        return parts[1]
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
    wrong = [
        (a, b)
        for a, targets in graph().items()
        for b in targets
        if not b.endswith("__init__") and rank[wing(b)] > rank[wing(a)]
    ]
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
    assert wings == set(ORDER) - {"contracts", "plugins", "entry"}
    text = (repo_root() / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `bench/")}
    listed = [w for w in (key.strip("`").split("/")[1] for key in rows) if w in wings]
    assert listed == [w for w in ORDER if w in wings], "docs/architecture.md lists the wings in import order"
    for w in wings:  # each wing's row names every module in it, so the doc cannot drift from the tree
        row = rows[f"`bench/{w}/`"]
        missing = [
            p.stem
            for p in (package_root() / w).glob("*.py")
            if p.stem != "__init__" and f"`{p.stem}`" not in row
        ]
        assert missing == [], (w, missing)


def test_the_plugin_folders_are_walked():
    names = set(modules())
    for kind, example in (
        ("methods", "fm"),
        ("datasets", "phantom_lt"),
        ("evaluators", "fid"),
        ("remedies", "crt"),
        ("backbones", "flux"),
        ("encoders", "pixel"),
    ):
        assert f"bench.{kind}.{example}" in names, kind


def test_the_top_level_holds_at_most_16_modules():
    top = sorted(p.name for p in package_root().glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_no_two_modules_share_a_name():
    """No near-twin rooms: a module's file name (less plugin and __init__ files) is unique in bench."""
    seen: dict[str, str] = {}
    twins = []
    for name, path in modules().items():
        if wing(name) == "plugins" or path.name == "__init__.py":
            continue
        leaf = name.rsplit(".", 1)[-1].removesuffix("s")  # table / tables are twins too
        if leaf in seen:
            twins.append((seen[leaf], name))
        seen[leaf] = name
    assert twins == [], twins
