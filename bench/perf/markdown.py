"""The Markdown summary of a `bench bench` JSON: targets first, then each case's numbers."""

from __future__ import annotations

from bench.perf.suite import TARGETS


def markdown(result: dict) -> str:
    """A self-contained Markdown page of the suite's result."""
    m = result["machine"]
    lines = [
        f"# bench performance ({result['scale']} scale)",
        "",
        f"Measured {result['started']} on {m['host']}: {m['cores']} cores, {m['cpu']}, torch "
        f"{m['torch']} ({m['torch_threads']} threads), GPU: {m['cuda'] or 'none'}.",
        "",
        "| key | value | target | verdict |",
        "|---|---|---|---|",
    ]
    for key, target in TARGETS.items():
        verdict = result["targets"].get(key)
        value = result.get(key)
        shown = "not measured" if value is None else _num(value)
        word = "–" if verdict is None else ("met" if verdict["met"] else f"**missed**: {verdict['miss']}")
        lines.append(f"| `{key}` | {shown} | {target.op} {target.value:g} | {word} |")
    lines += (
        _stages(result)
        + _nfe(result)
        + _threads(result)
        + _busy(result)
        + _gpu(result)
        + _gpu_compile(result)
    )
    if result["errors"]:
        lines += ["", "## Errors", ""] + [f"- {name}: {msg}" for name, msg in result["errors"].items()]
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    """A number at a readable precision."""
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-3 else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"
    return str(x)


def _stages(result: dict) -> list[str]:
    stages = result.get("quick_run_stages_s")
    if not stages:
        return []
    rows = sorted(stages.items(), key=lambda kv: -kv[1])
    return ["", "## Quick run, seconds per stage (summed over cells)", "", "| stage | s |", "|---|---|"] + [
        f"| {k} | {v:.1f} |" for k, v in rows
    ]


def _nfe(result: dict) -> list[str]:
    table = result.get("nfe_to_match")
    if not table:
        return []
    methods = sorted({m for per in table.values() for m in per})
    nfe = result.get("details", {}).get("nfe", {})
    ref, tol = nfe.get("reference_nfe", 64), nfe.get("tol", 0.05)
    lines = [
        "",
        f"## Euler steps to match FM at {ref} steps (tail quality within {tol:.0%})",
        "",
        "| dataset | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for dataset, per in table.items():
        cells = [("> max" if per.get(m) is None else str(per[m])) if m in per else "–" for m in methods]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    lines += _curves(result.get("details", {}).get("nfe", {}))
    figures = [f for f in result.get("files", []) if f.endswith(".png")]
    return lines + [f"\n![quality vs steps]({f})" for f in figures]


def _curves(details: dict) -> list[str]:
    """Each dataset's tail quality per method and NFE (the figure's numbers)."""
    lines = []
    for dataset, per in details.get("curves", {}).items():
        nfes = sorted({int(n) for curve in per.values() for n in curve})
        metric = details.get("metric", {}).get(dataset, "quality")
        lines += [
            "",
            f"{dataset}, `{metric}` (lower is better) by Euler steps:",
            "",
            "| method | " + " | ".join(str(n) for n in nfes) + " |",
            "|---|" + "---|" * len(nfes),
        ]
        for method, curve in per.items():
            values = {int(n): v for n, v in curve.items()}
            lines.append(
                f"| {method} | " + " | ".join(_num(values.get(n, float("nan"))) for n in nfes) + " |"
            )
    return lines


def _threads(result: dict) -> list[str]:
    t = result.get("threads")
    if not t:
        return []
    per = ", ".join(f"{k} thread(s) {_num(v)} s/step" for k, v in t.items() if k.isdigit())
    return ["", "## CPU threads (tiny preset training step)", "", f"{per}; best: {t.get('best')}."]


def _busy(result: dict) -> list[str]:
    """Seconds per synthetic2d step by load, OpenMP wait policy and torch threads."""
    table = result.get("busy")
    if not table:
        return []
    threads = list(next(iter(next(iter(table.values())).values())))
    lines = [
        "",
        "## Idle and loaded machine (s per synthetic2d training step)",
        "",
        "| machine | OMP_WAIT_POLICY | "
        + " | ".join(f"{t} thread(s)" if t != "0" else "default threads" for t in threads)
        + " |",
        "|---|---|" + "---|" * len(threads),
    ]
    for load, per in table.items():
        for policy, row in per.items():
            lines.append(f"| {load} | {policy} | " + " | ".join(_num(row[t]) for t in threads) + " |")
    defaults = result.get("details", {}).get("busy", {}).get("bench_defaults")
    return lines + ([f"\nbench's defaults: {defaults}."] if defaults else [])


def _shown(x) -> str:
    """A number, or a dash where none was measured or estimated."""
    return "–" if x is None else _num(x)


def _gpu(result: dict) -> list[str]:
    """The GPU check: the preset's step and MFU, then each estimate measured against (bench.perf.gpu_check)."""
    details = result.get("details", {}).get("gpu")
    if details is None:
        return []
    title = "## GPU check (the one-GPU preset, bf16; `bench bench --only gpu`)"
    if "skipped" in details or "parts" not in details:
        return ["", title, "", f"Not measured: {details.get('skipped', 'the gpu case did not run')}."]
    train = details["parts"].get("train", {}).get("details", {})
    lines = [
        "",
        title,
        "",
        f"Device: {details['device']} ({details['size']} size). Training step "
        f"({train.get('micro_batches')} micro-batches of {train.get('micro_batch')}): "
        f"{_shown(result.get('gpu_step_s'))} s, MFU {_shown(result.get('gpu_mfu'))}.",
        "",
        "| part | estimate | measured | estimated | measured / estimated |",
        "|---|---|---|---|---|",
    ]
    for r in details.get("comparisons", []):
        lines.append(
            f"| {r['part']} | {r['what']} ({r['unit']}) | {_shown(r['measured'])} | {_shown(r['estimated'])} "
            f"| {_shown(r['ratio'])}: {r['verdict']} |"
        )
    failed = [f"- {name}: {part['error']}" for name, part in details["parts"].items() if "error" in part]
    return lines + (["", "Parts that failed:", ""] + failed if failed else [])


def _gpu_compile(result: dict) -> list[str]:
    """The preset's micro-batch step eager vs compiled (bench.perf.gpu)."""
    details = result.get("details", {}).get("gpu_compile")
    if details is None:
        return []
    if "skipped" in details:
        return [
            "",
            "## GPU, eager vs torch.compile (the one-GPU preset, bf16, SDPA)",
            "",
            f"Not measured: {details['skipped']}.",
        ]
    step, mfu = result.get("gpu_compile_step_s") or {}, result.get("gpu_compile_mfu") or {}
    rows = [f"| {k} | {_shown(step.get(k))} | {_shown(mfu.get(k))} |" for k in ("eager", "compiled")]
    return [
        "",
        f"## GPU: {details.get('device')}, eager vs torch.compile (the one-GPU preset, bf16, SDPA)",
        "",
        "| mode | s/step | MFU |",
        "|---|---|---|",
    ] + rows
