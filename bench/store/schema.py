"""The results contract: record.json and grid.json checked against their packaged JSON Schemas.

The schemas (`bench/store/schemas/*.schema.json`, draft 2020-12) say what every field holds;
docs/records.md is generated from their descriptions. A document that does not match is answered
with one line naming the field (`field `metrics.fid/tail` is a string, expected a number`), so a
writer refuses it before anything is written and a reader refuses it instead of tabulating it.
jsonschema is imported on first use: bench's start (`bench ls`, `bench --help`) never pays for it.
"""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path

from bench.errors import BenchError

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KINDS = ("record", "grid")
_JSON_TYPES = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "object": "an object",
    "array": "a list",
    "boolean": "a boolean",
    "null": "null",
}


class SchemaViolation(BenchError):
    """A record or grid.json that does not match its schema (one line: where, the field, what)."""


def schema_path(kind: str) -> Path:
    """The packaged schema file of `kind` ("record" or "grid")."""
    if kind not in KINDS:
        raise ValueError(f"no schema {kind!r}; known: {', '.join(KINDS)}")
    return SCHEMAS / f"{kind}.schema.json"


@cache
def schema(kind: str) -> dict:
    """The schema of `kind` as a dict."""
    return json.loads(schema_path(kind).read_text(encoding="utf-8"))


@cache
def _validator(kind: str):
    from jsonschema import Draft202012Validator  # imported here: ~70 ms bench's start does not pay

    Draft202012Validator.check_schema(schema(kind))
    return Draft202012Validator(schema(kind))


def problems(document, kind: str) -> list[str]:
    """Every way `document` (parsed JSON) breaks the schema of `kind`, one phrase each, in field
    order; [] when it matches."""
    errors = sorted(
        _validator(kind).iter_errors(document), key=lambda e: (_path(e.absolute_path), e.validator)
    )
    return list(dict.fromkeys(_phrase(e) for e in errors))


def first_problem(document, kind: str) -> str | None:
    """The first problem and how many more (one line), or None when `document` matches."""
    found = problems(document, kind)
    if not found:
        return None
    more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
    return found[0] + more


def check(document, kind: str, where: str) -> None:
    """Raise SchemaViolation (`<where>: <first problem>`) unless `document` matches the schema."""
    problem = first_problem(document, kind)
    if problem:
        raise SchemaViolation(f"{where}: {problem}")


def _path(parts) -> str:
    """`metrics.fid/tail`, `augmentation[3].group`; "" for the document itself."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _field(parts, key: str | None = None) -> str:
    path = _path([*parts, key] if key is not None else parts)
    return f"field `{path}`" if path else "the document"


def _what(value) -> str:
    """How a found value is named in a message: its JSON type, and short values themselves."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    kind = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    name = next((n for t, n in kind.items() if isinstance(value, t)), type(value).__name__)
    if isinstance(value, (str, int, float)):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"{name} ({shown})"
    return name


def _phrase(error) -> str:
    """One error of jsonschema as `field `a.b` <what is wrong>`."""
    where, value, rule, sub = error.absolute_path, error.instance, error.validator, error.schema
    if rule == "type":
        types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        return f"{_field(where)} is {_what(value)}, expected {' or '.join(_JSON_TYPES[t] for t in types)}"
    if rule == "required":  # one error per missing key; its message is "'<key>' is a required property"
        name = error.message.removesuffix(" is a required property")
        missing = ast.literal_eval(name) if name != error.message else error.validator_value[0]
        return f"{_field(where, missing)} is missing"
    if rule == "additionalProperties":
        known = set(sub.get("properties", {}))
        extra = [k for k in value if k not in known]
        return f"{_field(where, extra[0] if extra else None)} is not in the schema"
    if rule in ("const", "enum"):
        allowed = [sub["const"]] if rule == "const" else sub["enum"]
        return f"{_field(where)} is {value!r}, expected {' or '.join(repr(a) for a in allowed)}"
    if "propertyNames" in error.absolute_schema_path:
        expected = sub.get("title") or f"a name matching {sub.get('pattern')}"
        return f"{_field(where)} has a key {value!r}, not {expected}"
    if sub.get("title"):  # a named kind of value (a folder name): say that, not the rule's details
        return f"{_field(where)} is {value!r}, not {sub['title']}"
    if rule in ("minimum", "minLength", "minItems", "pattern", "items", "prefixItems"):
        return f"{_field(where)} is {_what(value)}: {error.message}"
    return f"{_field(where)}: {error.message}"


# -- docs/records.md: the field tables, generated from the schemas' descriptions ---------------

_BEGIN, _END = (
    "<!-- {kind} fields: generated by bench.store.schema.markdown('{kind}'); edit the schema -->",
    ("<!-- end of {kind} fields -->"),
)


def markdown(kind: str) -> str:
    """The Markdown table of every field of `kind`: path, JSON type, when required, description."""
    root = schema(kind)
    rows = ["| field | type | required | description |", "|---|---|---|---|"]
    for path, sub, required in _fields(root, root, "", set(root.get("required", [])), _conditional(root)):
        text = " ".join(sub.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(root, sub)} | {required} | {text} |")
    return "\n".join(rows)


def _conditional(root: dict) -> dict:
    """Top-level field -> when it is required beyond the plain `required` list (the record's
    version 2 rule, and its split between full runs and cells stopped after the prior)."""
    out = {}
    for rule in root.get("allOf", []):
        version = rule["if"]["properties"]["schema_version"]["const"]
        then = rule["then"]
        out |= {k: f"from v{version}" for k in then.get("required", [])}
        out |= {k: f"from v{version}, with `stop_after`" for k in then.get("then", {}).get("required", [])}
        out |= {k: f"from v{version}, unless `stop_after`" for k in then.get("else", {}).get("required", [])}
    return out


def _fields(root: dict, node: dict, prefix: str, required: set, conditional: dict):
    """(path, subschema, required) of every described field under `node`, depth first."""
    node = _resolve(root, node)
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}" if prefix else name
        when = "yes" if name in required else conditional.get(name, "no")
        yield path, sub, when
        yield from _fields(root, sub, path, set(_resolve(root, sub).get("required", [])), {})
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and (extra.get("properties") or extra.get("additionalProperties")):
        yield from _fields(root, extra, f"{prefix}.<name>", set(extra.get("required", [])), {})
    items = node.get("items")
    if isinstance(items, dict) and items.get("properties"):
        yield from _fields(root, items, f"{prefix}[]", set(items.get("required", [])), {})


def _resolve(root: dict, sub: dict) -> dict:
    """`sub` with a local `$ref` (`#/$defs/name`) replaced by its target, keeping `sub`'s own keys."""
    ref = sub.get("$ref")
    return {**root["$defs"][ref.rsplit("/", 1)[1]], **sub} if ref else sub


def _type(root: dict, sub: dict) -> str:
    """How the doc names a field's JSON type."""
    sub = _resolve(root, sub)
    if "const" in sub:
        return f"`{json.dumps(sub['const'])}`"
    if "enum" in sub:
        return " or ".join(f"`{json.dumps(v)}`" for v in sub["enum"])
    types = sub["type"] if isinstance(sub.get("type"), list) else [sub.get("type", "any")]
    words = []
    for t in types:
        if t == "array" and isinstance(sub.get("items"), dict):
            words.append(f"list of {_type(root, sub['items'])}")
        elif t == "array" and sub.get("prefixItems"):
            words.append("[" + ", ".join(_type(root, p) for p in sub["prefixItems"]) + "]")
        elif (
            t == "object" and isinstance(sub.get("additionalProperties"), dict) and not sub.get("properties")
        ):
            words.append(f"object of {_type(root, sub['additionalProperties'])}")
        else:
            words.append(t)
    return " or ".join(words)


def update_doc(path: Path) -> None:
    """Rewrite the generated field tables of the Markdown file at `path` (between their markers)."""
    text = Path(path).read_text(encoding="utf-8")
    for kind in KINDS:
        begin, end = _BEGIN.format(kind=kind), _END.format(kind=kind)
        head, rest = text.split(begin, 1)
        text = head + begin + "\n" + markdown(kind) + "\n" + end + rest.split(end, 1)[1]
    Path(path).write_text(text, encoding="utf-8")


def doc_tables(path: Path) -> dict:
    """kind -> the generated table the Markdown file at `path` holds (what `update_doc` wrote)."""
    text = Path(path).read_text(encoding="utf-8")
    out = {}
    for kind in KINDS:
        begin, end = _BEGIN.format(kind=kind), _END.format(kind=kind)
        if begin in text and end in text:
            out[kind] = text.split(begin, 1)[1].split(end, 1)[0].strip("\n")
    return out
