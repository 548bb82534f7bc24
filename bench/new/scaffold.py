"""`bench new <kind> NAME`: write a plugin package that installs, registers and passes as written.

The package is rendered from the templates beside this module: `templates/common/` (pyproject.toml
with the entry point in the kind's group, README, the contract test that calls bench.testing) and
`templates/<kind>/` (the plugin module, its own test, its gin file for the kinds whose gin file bench
reads: methods and datasets, bench.config.gin_config.plugin_file). A placeholder is `{{key}}`.
Bad input is refused before anything is written, and the package appears whole or not at all: it
is written into a hidden folder beside its destination and renamed into place.
"""

from __future__ import annotations

import difflib
import keyword
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import registry
from bench.errors import BenchError
from bench.store.outpaths import output_folder

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUFFIX = ".tmpl"  # template files end so: neither pytest, ruff nor the layout test reads them as code


@dataclass(frozen=True)
class Kind:
    """What differs between plugin kinds in the package `bench new` writes."""

    plural: str  # registry key and entry-point group `bench.<plural>`
    ships_gin: bool  # bench reads the plugin's own gin file (its `gin_file` attribute)
    run: str  # a short run that uses the plugin; {name} is the plugin
    summary: str  # what the generated plugin does, one line


_SMOKE = "--gin_file presets/cpu_smoke.gin"
KINDS = {
    "method": Kind(
        "methods",
        True,
        f"bench run methods=[{{name}},fm] datasets=[synthetic2d] {_SMOKE}",
        "flow matching from a source pulled toward each class's mean latent",
    ),
    "dataset": Kind(
        "datasets",
        True,
        f"bench run methods=[fm] datasets=[{{name}}] {_SMOKE}",
        "a long-tailed mixture of 2-D Gaussian classes drawn from a seed",
    ),
    "evaluator": Kind(
        "evaluators",
        False,
        f"bench run methods=[fm] datasets=[synthetic2d] pipeline.evaluators=[swd,{{name}}] {_SMOKE}",
        "the class-mean gap between synthetic and held-out samples, in units of the class's spread",
    ),
    "remedy": Kind(
        "remedies",
        False,
        "bench run methods=[fm] datasets=[digits_lt] pipeline.evaluators=[downstream] "
        f"downstream.remedies=[{{name}}] downstream.with_augmentation=[{{name}}] {_SMOKE}",
        "the logit-adjusted loss, cross-entropy on logits shifted by tau * log(class prior)",
    ),
    "backbone": Kind(
        "backbones",
        False,
        f"bench run methods=[fm] datasets=[synthetic2d] pipeline.backbone={{name}} {_SMOKE}",
        "a small MLP velocity field on flattened latents",
    ),
    "encoder": Kind(
        "encoders",
        False,
        f"bench run methods=[fm] datasets=[synthetic2d] pipeline.encoder={{name}} {_SMOKE}",
        "a seeded orthogonal rotation of the flattened sample, scaled",
    ),
}
_PLURAL = {k.plural: singular for singular, k in KINDS.items()}


def kind_of(given: str) -> str:
    """The singular plugin kind `given` names (`methods` is accepted for `method`), or a one-line error."""
    if given in KINDS:
        return given
    if given in _PLURAL:
        return _PLURAL[given]
    close = difflib.get_close_matches(given, list(KINDS), n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise BenchError(f"unknown plugin kind {given!r}{hint} (kinds: {', '.join(KINDS)})")


def bench_scopes() -> list[str]:
    """bench's own gin scopes (`train`, `sample`, ...): a plugin named so would make `train.steps` ambiguous."""
    import bench.config  # noqa: F401 - registers every settings class (no torch)
    from bench.config.checks import Settings

    found, todo = set(), list(Settings.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(getattr(cls, "scope", ""))
        todo.extend(cls.__subclasses__())
    return sorted(found - {""})


def check_name(kind: str, name: str) -> None:
    """Refuse a name that is no Python identifier, or that a registered plugin or a bench scope holds.

    Plugins of every kind share gin's one namespace (`mlp.hidden`): a method named like a backbone
    would make the backbone's bindings ambiguous, so a name taken by any kind is refused."""
    if not (name.isascii() and name.isidentifier()) or keyword.iskeyword(name):
        raise BenchError(
            f"plugin name {name!r} is not a Python identifier; use letters, digits and _, "
            "starting with a letter (e.g. my_method)"
        )
    for other in KINDS:
        reg = registry.REGISTRIES[KINDS[other].plural]
        if name in reg.names():
            which = f"a {other}" if other != kind else f"a registered {kind}"
            raise BenchError(
                f"{name!r} is already {which} ({reg.origin(name)}); pick another name "
                f"(see `bench ls {KINDS[other].plural}`)"
            )
    if name in bench_scopes():
        raise BenchError(f"{name!r} is one of bench's own gin scopes (`{name}.<setting>`); pick another name")


def class_name(kind: str, name: str) -> str:
    """The plugin class's name, ending in its kind so it never shadows a name the module imports:
    (`method`, `shifted`) -> `ShiftedMethod`, (`method`, `my_method`) -> `MyMethod`."""
    camel = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    suffix = kind.capitalize()
    return camel if camel.endswith(suffix) and camel != suffix else camel + suffix


def values(kind: str, name: str) -> dict[str, str]:
    """Every placeholder's text for a plugin `name` of `kind`."""
    from bench import __version__

    spec = KINDS[kind]
    package = f"bench_{name}"
    package_data = f'\n[tool.setuptools.package-data]\n{package} = ["*.gin"]\n' if spec.ships_gin else ""
    return {
        "name": name,
        "Class": class_name(kind, name),
        "kind": kind,
        "a_kind": ("an " if kind[0] in "aeiou" else "a ") + kind,
        "A_kind": ("An " if kind[0] in "aeiou" else "A ") + kind,
        "plural": spec.plural,
        "group": f"bench.{spec.plural}",
        "package": package,
        "dist": "bench-" + name.replace("_", "-").strip("-"),
        "bench_version": ".".join(__version__.split(".")[:2]),
        "package_data": package_data,
        "run": spec.run.format(name=name),
        "summary": spec.summary,
    }


def render(text: str, fill: dict[str, str]) -> str:
    """`text` with every `{{key}}` replaced; a placeholder left unfilled is a bug in the template."""
    for key, value in fill.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise RuntimeError(f"unfilled placeholder in a bench.new template: {text[text.index('{{') :][:40]!r}")
    return text


def files(kind: str, name: str) -> dict[str, str]:
    """{path inside the package folder: text} of the package `bench new` writes."""
    fill = values(kind, name)
    package = fill["package"]
    where = {
        "common/pyproject.toml": "pyproject.toml",
        "common/README.md": "README.md",
        "common/__init__.py": f"{package}/__init__.py",
        "common/test_contract.py": "tests/test_contract.py",
        f"{kind}/plugin.py": f"{package}/{kind}.py",
        # the plugin's own tests; a plugin named `contract` must not replace the contract test
        f"{kind}/test_plugin.py": f"tests/test_{name}.py"
        if name != "contract"
        else "tests/test_contract_own.py",
    }
    if KINDS[kind].ships_gin:
        where[f"{kind}/plugin.gin"] = f"{package}/{name}.gin"
    fill["about"] = render((TEMPLATES / kind / ("about.md" + SUFFIX)).read_text(encoding="utf-8"), fill)
    return {
        dest: render((TEMPLATES / (src + SUFFIX)).read_text(encoding="utf-8"), fill)
        for src, dest in where.items()
    }


def write_plugin(kind: str, name: str, parent: Path | str = ".") -> Path:
    """Write the package of plugin `name` of `kind` as `parent/name`; its path. Nothing is written
    when the kind, the name or the destination is refused."""
    kind = kind_of(kind)
    check_name(kind, name)
    parent = output_folder(parent, "--dir")
    dest = parent / name
    if dest.exists() or dest.is_symlink():
        raise BenchError(f"{dest} already exists; choose another NAME or --dir, or remove it first")
    texts = files(kind, name)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; the package is an ordinary one
        for rel, text in texts.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text, encoding="utf-8")
        os.rename(staging, dest)  # refuses a non-empty folder that appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
