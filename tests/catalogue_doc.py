"""Write docs/bad-inputs.md from the messages the bad-input catalogue's cases actually printed.

    BENCH_CATALOGUE_OUT=/tmp/catalogue.jsonl pytest tests/cli/test_bad_inputs.py -k one_line
    python tests/catalogue_doc.py /tmp/catalogue.jsonl docs/bad-inputs.md

tests/cli/test_bad_inputs.py checks that the document lists every case and that each message
it shows still matches the case, so the page cannot drift from what bench prints.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEAD = """# Bad input: what bench answers

Every case of the bad-input catalogue (tests/cli/test_bad_inputs.py): the command (`{tmp}` is a
scratch folder the case sets up, long arguments cut), its exit status and the one line bench
prints. Every case writes nothing (or only the files the test names). Regenerate with the two
commands in tests/catalogue_doc.py.

| case | command | exit | message |
|---|---|---|---|
"""


def _short(arg: str) -> str:
    return arg if len(arg) <= 48 else arg[:45] + "..."


def _code(text: str) -> str:
    """A Markdown code span that may hold backticks and pipes: ``` `` text `` ```."""
    return "`` " + text.replace("|", "\\|") + " ``"


def main(jsonl: str, out: str) -> None:
    rows = {}
    for line in Path(jsonl).read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        rows[entry["id"]] = entry
    lines = [
        f"| `{e['id']}` | {_code(' '.join(['bench', *map(_short, e['args'])]))} | {e['code']} | "
        f"{_code(e['line'])} |"
        for e in rows.values()
    ]
    Path(out).write_text(HEAD + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} case(s) written to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
