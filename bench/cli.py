"""The `bench` command: run, validate, ls, new, data stats, prepare, tables, report, claims, field and bench.

`bench ls` imports nothing heavy (no torch): plugin names come from package metadata. Errors in
the user's input print one line and exit 2; failed cells exit 1 after the others finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench import registry
from bench.errors import BenchError
from bench.store.outpaths import output_file, output_folder

KINDS = tuple(registry.REGISTRIES)  # every plugin kind, from the registry's one list


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), as for every other bad input."""

    def error(self, message):
        self.exit(2, f"bench: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    """The installed distribution's version (package metadata; no import of bench's modules)."""
    from importlib import metadata

    try:
        return metadata.version("medaug-bench")
    except metadata.PackageNotFoundError:  # a source checkout that was never installed
        from bench import __version__

        return __version__


def _test_options(parser) -> None:
    """The paired-test options shared by `bench claims` and `bench field`."""
    parser.add_argument(
        "--test",
        choices=["permutation", "ttest"],
        default="permutation",
        help="paired test over generative seeds (default permutation: exact sign-flip)",
    )
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="bench", description="Benchmark generative augmentation for long-tailed medical imaging."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"bench (medaug-bench) {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_ in (
        ("run", "run a grid of (dataset x method x seed) cells"),
        ("validate", "parse the config and build every object of the grid; train nothing"),
    ):
        s = sub.add_parser(name, help=help_)
        s.usage = f"bench {name} [key=value ...] [--gin_file F ...] [--gin_param B ...]"
        s.epilog = (
            "key=value: grid axes (methods=[fm,cbfm] datasets=[..] seeds=[0,1]), "
            "experiment=NAME, results_dir=DIR, executor=inline|local|slurm (settings: "
            "executor.param=value), or gin bindings scope.param=value"
        )
        s.add_argument("--gin_file", action="append", default=[], metavar="F", help="extra gin file")
        s.add_argument(
            "--gin_param",
            action="append",
            default=[],
            metavar="B",
            help="extra gin binding, verbatim gin syntax",
        )
    data = sub.add_parser("data", help="dataset tools: `bench data stats datasets=[...]`")
    data.add_argument("action", choices=["stats"], help="stats: the dataset table (Markdown)")
    data.add_argument("--gin_file", action="append", default=[], metavar="F", help="extra gin file")
    data.add_argument(
        "--gin_param", action="append", default=[], metavar="B", help="extra gin binding, verbatim gin syntax"
    )
    data.usage = "bench data stats datasets=[phantom_lt,nih_lt] [nih_lt.root=PATH ...]"
    prep = sub.add_parser("prepare", help="one-time conversion of a raw dataset (ct_rate)")
    prep.add_argument("dataset", choices=["ct_rate"])
    prep.add_argument("--root", required=True, help="the raw dataset (CT-RATE: folder holding dataset/)")
    prep.add_argument("--out", required=True, help="output folder; then set ct_rate.root=OUT")
    prep.add_argument("--size", type=int, default=256, help="slice size in pixels (default 256)")
    prep.add_argument("--slices-per-volume", type=int, default=3, help="axial slices per volume")
    prep.add_argument("--workers", type=int, default=1, help="volumes converted in parallel")
    for name, help_ in (
        ("tables", "write the paper's tables from an experiment's stored records"),
        ("report", "tables in every format, figures and an index page for an experiment"),
    ):
        rep = sub.add_parser(name, help=help_)
        rep.add_argument("results", metavar="RESULTS_DIR", help="an experiment folder, e.g. results/quick")
        if name == "tables":
            rep.add_argument(
                "--format", choices=["latex", "md", "csv"], default="md", help="output format (default md)"
            )
            rep.add_argument("--out", help="write <table>.<ext> files and tables.<ext> here (default: print)")
        else:
            rep.add_argument("--out", help="output folder (default RESULTS_DIR/report)")
        rep.add_argument(
            "--test",
            choices=["permutation", "ttest", "wilcoxon"],
            default="permutation",
            help="paired test over generative seeds for the marks (default permutation: "
            "exact sign-flip; ttest: paired t-test; wilcoxon: signed-rank)",
        )
        rep.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
        rep.add_argument("--baseline", default=None, help="method marked against with † (default fm)")
    claims = sub.add_parser(
        "claims", help="the paper's four claims judged from an experiment's stored records"
    )
    claims.add_argument(
        "results", metavar="RESULTS_DIR", help="the claims experiment folder, e.g. results/claims"
    )
    claims.add_argument(
        "--out",
        default="docs/claims.md",
        help="Markdown file (default docs/claims.md); its hand-written analysis block is kept",
    )
    _test_options(claims)
    field = sub.add_parser(
        "field",
        help="optprior against OT-CFM, a diffusion path and MixUp / CutMix, from the field experiment",
    )
    field.add_argument(
        "results", metavar="RESULTS_DIR", help="the field experiment's results_dir, e.g. results/field"
    )
    field.add_argument("--out", default="docs/field.md", help="Markdown file (default docs/field.md)")
    _test_options(field)
    perf = sub.add_parser("bench", help="performance suite: one JSON file and its Markdown summary")
    perf.add_argument(
        "--out",
        default="perf/perf.json",
        help="JSON file (default perf/perf.json); the Markdown summary and figures are written beside it",
    )
    perf.add_argument(
        "--scale",
        choices=["full", "smoke"],
        default="full",
        help="full: the sizes the targets are stated for; smoke: tiny, seconds",
    )
    perf.add_argument(
        "--only",
        default="",
        metavar="CASES",
        help="comma-separated cases (default all: overhead, offline, fid, quick_run, nfe, threads, busy, gpu, "
        "gpu_compile)",
    )
    perf.add_argument("--workdir", help="scratch folder kept for inspection (default: a temporary one)")
    ls = sub.add_parser("ls", help="list plugins and where each comes from")
    ls.add_argument("kind", nargs="?", choices=KINDS, help="one plugin kind (default: all)")
    new = sub.add_parser("new", help="write a plugin package: pyproject.toml, module, gin file, README, test")
    new.add_argument("kind", help="method, dataset, evaluator, remedy, backbone or encoder")
    new.add_argument("name", help="the plugin's name, a Python identifier (e.g. my_method)")
    new.add_argument("--dir", default=".", help="where the package folder NAME/ is written (default: .)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script (a launched rank exits here: `distributed.leave`)."""
    code = _main(argv)
    distributed = sys.modules.get("bench.runtime.distributed")  # loaded by the commands that run cells
    return distributed.leave(code) if distributed else code


def _main(argv: list[str] | None) -> int:
    """Parse the command line and run one command; its exit code."""
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    takes_no_bindings = ("ls", "new", "prepare", "tables", "report", "claims", "field", "bench")
    unknown = [a for a in extras if a.startswith("-") or args.command in takes_no_bindings]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = extras
    _setup_logging(args.verbose)
    try:
        if args.command == "ls":
            return cmd_ls(args.kind)
        if args.command == "new":
            return cmd_new(args)
        if args.command == "data":
            return cmd_data_stats(args)
        if args.command == "prepare":
            return cmd_prepare(args)
        if args.command == "tables":
            return cmd_tables(args)
        if args.command == "report":
            return cmd_report(args)
        if args.command == "claims":
            return cmd_claims(args)
        if args.command == "field":
            return cmd_field(args)
        if args.command == "bench":
            return cmd_bench(args)
        return cmd_run(args, dry=args.command == "validate")
    except BenchError as exc:
        # gin appends "In call to configurable ..." lines to errors raised inside constructors
        print(f"bench: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def _setup_logging(verbose: bool) -> None:
    """bench's own progress at INFO; other libraries (gin, accelerate) only at WARNING."""
    fmt = "%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format=fmt)
    logging.getLogger("bench").setLevel(logging.DEBUG if verbose else logging.INFO)


def cmd_ls(kind: str | None) -> int:
    """Print plugin names with their origin, from metadata only."""
    for k in [kind] if kind else KINDS:
        print(f"{k}:")
        infos = registry.REGISTRIES[k].infos()
        width = max((len(i.name) for i in infos), default=0)
        for info in infos:
            print(f"  {info.name:<{width}}  {info.distribution}  ({info.target})")
    return 0


def cmd_new(args) -> int:
    """`bench new <kind> NAME`: write a plugin package (bench.new.scaffold) and say what to do next."""
    from bench.new.scaffold import write_plugin

    dest = write_plugin(args.kind, args.name, args.dir)
    print(
        f"wrote {dest}; next: pip install -e {dest} && bench ls && pytest {dest / 'tests'}"
        f" (see {dest / 'README.md'})"
    )
    return 0


def _request(args):
    from bench.config.default_experiment import default_experiment
    from bench.config.overrides import parse_overrides, split_executor_bindings
    from bench.pipeline.assemble import RunRequest

    ov = parse_overrides(args.overrides)
    bindings, executor_bindings = split_executor_bindings(ov.bindings + list(args.gin_param))
    # no experiment=: chosen from the datasets (quick for the embedded ones, paper_1gpu for the real
    # benchmarks); a mix is refused by run / validate, whose results folder it decides
    experiment = ov.options.get("experiment") or default_experiment(
        ov.axes.get("datasets"), args.gin_file, strict=args.command in ("run", "validate")
    )
    return RunRequest(
        experiment=experiment,
        results_dir=Path(ov.options.get("results_dir", "results")),
        gin_files=list(args.gin_file),
        bindings=bindings,
        axes=ov.axes,
        executor=ov.options.get("executor", "inline"),
        executor_bindings=executor_bindings,
    )


def cmd_data_stats(args) -> int:
    """`bench data stats datasets=[...]`: print each dataset's table in Markdown."""
    from bench.data.datastats import dataset_stats, markdown
    from bench.pipeline.assemble import build_dataset

    request = _request(args)
    names = request.axes.get("datasets")
    if not names or set(request.axes) - {"datasets"}:
        raise BenchError(
            "bench data stats takes datasets=[name,...] (and gin bindings), "
            "e.g. bench data stats datasets=[phantom_lt,digits_lt]"
        )
    for name in names:
        dataset, targets = build_dataset(str(name), request)
        print(markdown(dataset_stats(dataset, targets)))
    return 0


def cmd_prepare(args) -> int:
    """`bench prepare ct_rate --root R --out O`: slices + manifest, resumable; exit 1 if a volume failed."""
    from bench.datasets.ct_rate.ctrate import prepare_ct_rate

    summary = prepare_ct_rate(
        Path(args.root),
        output_folder(args.out),
        size=args.size,
        slices_per_volume=args.slices_per_volume,
        workers=args.workers,
    )
    print(f"next: bench data stats datasets=[ct_rate] ct_rate.root={args.out}")
    if summary["failed"]:
        print(
            f"{summary['failed']} volume(s) failed (see {summary['failed_csv']}); "
            "fix them and rerun: finished volumes are skipped",
            file=sys.stderr,
        )
        return 1
    return 0


def _tables(args):
    """The experiment and its tables (the paper's: bench.paper.paper_tables), from stored records only."""
    from bench.paper.paper_tables import paper_options, paper_tables
    from bench.report.collect import load_experiment

    if not 0.0 < args.alpha < 1.0:
        raise BenchError(f"--alpha must be between 0 and 1, got {args.alpha}")
    exp = load_experiment(Path(args.results))
    if args.baseline is not None and args.baseline not in exp.methods:
        raise BenchError(
            f"--baseline {args.baseline!r} is not a method of {args.results} "
            f"(methods: {', '.join(exp.methods)})"
        )
    tables = paper_tables(exp, paper_options(args.test, args.alpha, args.baseline))
    if not tables:
        raise BenchError(f"{args.results}: the records support no table (no finished cell with metrics)")
    return exp, tables


def cmd_tables(args) -> int:
    """`bench tables RESULTS_DIR`: print the tables, or write them as files with --out."""
    from bench.report.render import combined, write_tables

    exp, tables = _tables(args)
    title = f"bench experiment {exp.name}"
    if args.out is None:
        print(combined(tables, args.format, title))
        return 0
    paths = write_tables(tables, args.format, output_folder(args.out), title)
    print(f"{len(tables)} table(s) written to {args.out}: {', '.join(p.name for p in paths.values())}")
    return 0


def cmd_report(args) -> int:
    """`bench report RESULTS_DIR`: tables (every format), figures and index.html / index.md."""
    out = output_folder(args.out if args.out else Path(args.results) / "report")
    exp, tables = _tables(args)
    index, n_figures = write_report(exp, tables, out)
    print(f"report of {exp.name}: {len(tables)} table(s), {n_figures} figure(s); open {index}")
    return 0


def write_report(exp, tables: list, out: Path) -> tuple[Path, int]:
    """Write the tables in every format, the figures and the index under `out`; (index, figures)."""
    from bench.report.figures import all_figures
    from bench.report.index import TableEntry, folded_table, write_index
    from bench.report.render import FORMATS, render, write_tables

    files = {
        fmt: write_tables(tables, fmt, out / "tables", f"bench experiment {exp.name}")
        for fmt in FORMATS
        if fmt != "html"
    }
    entries = [
        TableEntry(
            t.title,
            render(t, "html"),
            {fmt: str(files[fmt][t.name].relative_to(out)) for fmt in files},
            markdown=render(t, "md").split("\n", 2)[2],
            folded=folded_table(t.name),
        )
        for t in tables
    ]  # without its "### title"
    figures = all_figures(exp, out / "figures")
    return write_index(exp, out, entries, figures), len(figures)


def run_report(experiment_dir: Path) -> Path | None:
    """The report `bench run` ends with (default significance settings), or None when the records
    support no table; a report that fails is a warning, never a failed run (the records stand)."""
    from bench.paper.paper_tables import paper_tables
    from bench.report.collect import load_experiment

    try:
        exp = load_experiment(experiment_dir, warn=False, strict=False)
        tables = paper_tables(exp)
        return write_report(exp, tables, experiment_dir / "report")[0] if tables else None
    except Exception as exc:  # noqa: BLE001 - the run's records are written; the report can be redone
        logging.getLogger(__name__).warning(
            "the report could not be written (%s: %s); run `bench report %s`",
            type(exc).__name__,
            exc,
            experiment_dir,
        )
        return None


def cmd_claims(args) -> int:
    """`bench claims RESULTS_DIR`: the claims report (verdicts, tables, rules) from stored records."""
    from bench.paper.claims import ClaimsOptions, write_claims

    out, sections = write_claims(
        Path(args.results), output_file(args.out), ClaimsOptions(args.test, args.alpha)
    )
    verdicts = "; ".join(f"({s.key}) {s.overall.label}" for s in sections)
    print(f"claims report written to {out}: {verdicts}")
    return 0


def cmd_field(args) -> int:
    """`bench field RESULTS_DIR`: optprior next to the field's other answers (docs/field.md) from stored records."""
    from bench.paper.claims import ClaimsOptions
    from bench.paper.field import write_field

    out, sections = write_field(
        Path(args.results), output_file(args.out), ClaimsOptions(args.test, args.alpha)
    )
    answers = "; ".join(
        f"({s.key}) " + ", ".join(f"{d}: {v.label}" for d, v in s.verdicts.items() if v is not None)
        for s in sections
    )
    print(f"field report written to {out}: {answers}")
    return 0


def cmd_bench(args) -> int:
    """`bench bench`: the performance suite (bench.perf.suite) and its summary (perf.md)."""
    import tempfile

    from bench.perf.markdown import markdown
    from bench.perf.suite import CASES, check_cases, run_suite
    from bench.store.artifacts import write_text_atomic

    asked = [n.strip() for n in args.only.split(",") if n.strip()]
    if args.only.strip() and not asked:
        raise BenchError(
            f"--only {args.only!r} names no case; pass names such as --only quick_run,busy "
            f"(known: {', '.join(CASES)})"
        )
    names = check_cases(asked or list(CASES))
    out = output_file(args.out)
    output_file(out.with_suffix(".md"))
    with tempfile.TemporaryDirectory(prefix="bench-perf-") as tmp:
        result = run_suite(names, args.scale, Path(args.workdir or tmp), out)
    summary = out.with_suffix(".md")
    write_text_atomic(summary, markdown(result))
    print(markdown(result))
    print(f"written: {out}, {summary}")
    return 1 if result["errors"] else 0


def cmd_run(args, dry: bool) -> int:
    """`bench run` / `bench validate`."""
    request = _request(args)
    if dry:
        from bench.pipeline.assemble import place, require_fits, validate
        from bench.pipeline.preview import describe, validate_lines
        from bench.scale.executors import get_executor

        executor = get_executor(request)  # the executor's name and settings, as `bench run` checks them
        cells = place(validate(request), executor.config)
        views, assumptions = describe(cells, request)
        for cell, view in zip(cells, views):
            print(f"ok  {cell.spec.label}  config {cell.config_hash}")
            print(f"    {cell.footprint.describe()}")
            print("\n".join(validate_lines(view)))
        require_fits(cells, executor.config)
        print(
            f"{len(cells)} cell(s) valid (experiment {request.experiment}); GPU-hours {assumptions.describe()}"
        )
        return 0
    from bench.report.summary import summary_table
    from bench.runtime import distributed
    from bench.scale.grid import run_grid

    main_rank = distributed.is_main()
    try:
        result = run_grid(request)
    except BaseException:
        distributed.finish(wait=False)
        raise
    distributed.finish()
    if not main_rank:  # rank 0 reports for all processes
        return 1 if result.failures else 0
    if result.records:
        experiment_dir = Path(request.results_dir) / request.experiment
        print(summary_table(result.comparison or result.records))
        index = run_report(experiment_dir)
        print(
            f"\nrecords under {experiment_dir}; every metric: {result.summary_path}"
            + (f"\nreport (tables, sample grids, figures): {index}" if index else "")
        )
    if result.failures:  # one line per failed cell, its reason and where the details are
        for label, reason in result.failures.items():
            folder = Path(request.results_dir) / request.experiment / label
            print(
                f"bench: error: cell {label} failed: {reason} (details: {folder / 'failure.json'}; "
                "fix it and rerun: finished cells are kept)",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
