"""tlbench's subcommands. Each parses its arguments and calls one function; errors become exit codes.

Exit codes: 0 success, 1 some runs failed (compare: a regression), 2 bad input (suite, results, data,
weights; compare: also nothing compared), 3 compare inconclusive, 130 interrupted by Ctrl-C, 143 by SIGTERM.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from .errors import ConfigError, SuiteErrors, UserError
from .registry import UnknownName

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def _load_suite(args):
    from . import suite

    return suite.load(args.suite, suite.parse_set(args.set or []))


def cmd_validate(args) -> int:
    s = _load_suite(args)
    print(f"{args.suite}: OK, suite '{s.name}', {len(s.runs)} runs")
    return EXIT_OK


def cmd_list(args) -> int:
    from . import recipes

    s = _load_suite(args)
    for i, r in enumerate(s.runs, 1):
        size = f"{r.train_size or 'all'}/{r.val_size or 'all'}"
        depth = "".join(f"  {k} {getattr(r, k)}" for k in ("cut", "unfreeze", "batchnorm") if getattr(r, k))
        depth += f"  recipe {recipes.name(r.recipe)}" if r.recipe or "recipe" in s.axes else ""
        print(f"{i:3d}  {r.run_id:56s} {r.input_size:4d}px  {size:>11s} img  {r.epochs} ep  batch {r.batch_size}"
              f"  {r.optimizer} {r.learning_rate:g}  weights {r.weights}{depth}")
    return EXIT_OK


def _epochs(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(t) for t in text.split(",")})
    except ValueError:
        raise UserError(f"--epochs: expected a comma-separated list of epoch numbers, got '{text}'") from None


def _finish(folder: Path) -> list[dict]:
    """Rebuild the CSVs, the table, the figures and the report from the records; print the table."""
    from . import report, store, tables

    records = store.rebuild(folder)
    print(tables.write(folder, records))
    print(f"wrote {folder / 'table.md'}, {folder / 'table.csv'}, {folder / 'epochs.csv'}, {folder / 'runs.csv'}")
    for path in report.write(folder):
        print(f"wrote {path}")
    return records


def _stop_on_signal(signum, frame):
    from .runner import request_stop

    request_stop(128 + signum)


def cmd_run(args) -> int:
    from dataclasses import replace

    from .environment import process_backend
    from .runner import Interrupted, run_in_child, run_suite
    from .store import atomic_write, read_record, rebuild, run_path

    s = _load_suite(args)
    folder = Path(args.results) / s.name
    for line in _foreign_records(folder, s, Path(args.suite).read_text()):
        print(f"warning: {line}", file=sys.stderr)
    atomic_write(folder / "suite.yaml", Path(args.suite).read_text())
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    here = process_backend()
    backends = [args.backend] if args.backend else list(dict.fromkeys(r.backend for r in s.runs))
    try:
        for backend in backends:
            runs = [r for r in s.runs if r.backend == backend]
            if backend == here:
                run_suite(replace(s, runs=runs), folder, force=args.force, rerun_failed=args.rerun_failed,
                          verbose=0 if args.quiet else None)
            elif args.backend:
                raise UserError(f"--backend {backend}: this process's Keras backend is {here}; "
                                f"set KERAS_BACKEND={backend}")
            else:
                print(f"backend {backend}: {len(runs)} runs in a child process (KERAS_BACKEND={backend})", flush=True)
                run_in_child(_child_argv(args, backend), backend)
    except Interrupted as e:
        rebuild(folder)  # the CSVs then agree with the records that did finish
        print(f"resume with: tlbench run {args.suite} --results {args.results}  (recorded runs are skipped)")
        return e.code
    if args.records_only:
        records = [r for r in (read_record(run_path(folder, c.run_id)) for c in s.runs) if r]
    else:
        records = _finish(folder)
    ids = {r.run_id for r in s.runs if not args.backend or r.backend == args.backend}
    bad = [r for r in records if r["run_id"] in ids and r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']}: {r['run_id']}: {r['error']}", file=sys.stderr)
    return EXIT_FAILED_RUNS if bad else EXIT_OK


def _foreign_records(folder: Path, s, suite_text: str) -> list[str]:
    """What in a results folder this suite run did not make: records of other settings or suites, which
    the table shows as rows of their own, and another suite file about to be replaced."""
    from .config import match_key
    from .store import read_runs

    notes = []
    copy = folder / "suite.yaml"
    if copy.is_file() and copy.read_text(errors="replace") != suite_text:
        notes.append(f"{copy} held another suite file; it is replaced by {s.file}")
    if not (folder / "runs").is_dir():
        return notes
    try:
        records = read_runs(folder)
    except UserError:
        return notes  # a damaged record is reported where it is read for the table
    ours = {match_key({"config": r.to_dict()}) for r in s.runs}
    foreign = [r for r in records if match_key(r) not in ours]
    if foreign:
        suites = sorted({str(r.get("suite")) for r in foreign})
        notes.append(f"{folder} already holds {len(foreign)} record(s) of other settings (suite "
                     f"{', '.join(suites)}; e.g. {foreign[0]['run_id']}): the table shows them as separate rows. "
                     "Use --results DIR to keep this run's results apart")
    return notes


def _child_argv(args, backend: str) -> list[str]:
    argv = ["run", args.suite, "--results", args.results, "--backend", backend, "--records-only"]
    argv += [f"--set={item}" for item in args.set or []]
    argv += [flag for flag, on in (("--force", args.force), ("--rerun-failed", args.rerun_failed),
                                   ("--quiet", args.quiet)) if on]
    return argv


def cmd_table(args) -> int:
    from . import store, tables

    print(tables.write(Path(args.results), store.read_runs(Path(args.results)), _epochs(args.epochs)), end="")
    return EXIT_OK


def cmd_plot(args) -> int:
    from . import plots, store

    folders = [Path(f) for f in args.results]
    labels = args.label or ([None] if len(folders) == 1 else [f.name for f in folders])
    if len(labels) != len(folders):
        raise UserError(f"--label: give one per results folder ({len(folders)}), got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise UserError(f"result sets need distinct labels, got {', '.join(map(str, labels))}: use --label")
    if args.out:
        out = Path(args.out)
    elif len(folders) == 1:
        out = folders[0] / "figures"
    else:
        raise UserError("several results folders: say where the comparison figures go with --out DIR")
    for path in plots.write_sets(out, [(label, store.read_runs(f)) for label, f in zip(labels, folders)]):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_report(args) -> int:
    from . import report

    for path in report.write(Path(args.results), Path(args.out) if args.out else None):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_weights_verify(args) -> int:
    from .torchvision_weights import verify_on_imagenet_photos

    try:
        result = verify_on_imagenet_photos()
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    print(f"torchvision MobileNetV2 imported into Keras: top-1 {result['top1']}/{result['n']}, "
          f"top-5 {result['top5']}/{result['n']} on foolbox's ImageNet photos")
    return EXIT_OK if result["top1"] >= args.min_top1 else EXIT_FAILED_RUNS


def cmd_compare(args) -> int:
    from . import baseline, compare

    if args.against_baseline and (args.baseline or args.current):
        raise UserError("give either BASELINE CURRENT or --against-baseline RESULTS, not both")
    if args.against_baseline:
        current = Path(args.against_baseline)
        base = baseline.find(current, Path(args.root), args.name)
        print(f"baseline: {base}")
    elif args.baseline and args.current:
        base, current = Path(args.baseline), Path(args.current)
    else:
        raise UserError("expected BASELINE CURRENT (two results folders), or --against-baseline RESULTS")
    flags = compare.parse_flags(time=args.time_threshold, throughput=args.throughput_threshold,
                                accuracy=args.accuracy_threshold)
    report = compare.compare(base, current, flags, _epochs(args.epochs), args.force_different_hardware)
    print(report.text, end="")
    for path in compare.write(report, Path(args.out) if args.out else current):
        print(f"wrote {path}")
    for line in (report.warnings + [f"regressed: {r}" for r in report.regressions]
                 + [f"inconclusive: {r}" for r in report.inconclusive]):
        print(line, file=sys.stderr)
    if report.regressions:
        return EXIT_FAILED_RUNS
    return EXIT_INCONCLUSIVE if report.inconclusive else EXIT_OK


def cmd_baseline_save(args) -> int:
    from .baseline import save

    print(f"saved baseline {save(Path(args.results), Path(args.root), args.name)}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tlbench", description="Benchmark frozen / fine-tuned / from-scratch "
                                "transfer learning from YAML suites.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_suite(name, help, fn):
        sp = sub.add_parser(name, help=help)
        sp.add_argument("suite", help="suite YAML file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a setting for every run (epochs=2), or replace a matrix axis "
                             "(dataset=synthetic, mode=[frozen,scratch]); repeatable")
        sp.set_defaults(fn=fn)
        return sp

    with_suite("validate", "check a suite without training", cmd_validate)
    with_suite("list", "print the expanded runs of a suite", cmd_list)
    run = with_suite("run", "run a suite, then write the table and figures", cmd_run)
    run.add_argument("--results", default="results", help="results root; records go to RESULTS/<suite name>/")
    run.add_argument("--force", action="store_true", help="re-run runs already recorded")
    run.add_argument("--rerun-failed", action="store_true", help="re-run recorded runs that failed or diverged")
    run.add_argument("--quiet", action="store_true", help="no Keras progress bars")
    run.add_argument("--backend", choices=["tensorflow", "jax", "torch"],
                     help="run only this backend's runs, in this process (KERAS_BACKEND must match)")
    run.add_argument("--records-only", action="store_true", help="write the records, not the table, figures "
                     "and report (what a per-backend child process does)")

    t = sub.add_parser("table", help="print and write the comparison table of a results folder")
    t.add_argument("results", help="results folder of one suite, e.g. results/offline-default")
    t.add_argument("--epochs", help="epochs to show, e.g. 1,5 (default: 1 and the last)")
    t.set_defaults(fn=cmd_table)

    pl = sub.add_parser("plot", help="draw the figures of one results folder, or of several in the same figures")
    pl.add_argument("results", nargs="+", help="results folder(s); runs are matched across them by configuration")
    pl.add_argument("--label", action="append", help="legend name of each results folder, in order "
                    "(default: the folder names); repeatable")
    pl.add_argument("--out", help="folder for the figures (default: RESULTS/figures with one folder)")
    pl.set_defaults(fn=cmd_plot)

    r = sub.add_parser("report", help="write RESULTS/report.md and report.html: table, figures, environment, "
                       "and the documents' numbers beside ours where the suite names a reference")
    r.add_argument("results", help="results folder of one suite, e.g. results/offline-default")
    r.add_argument("--out", help="folder for the report and its figures (default: RESULTS)")
    r.set_defaults(fn=cmd_report)

    w = sub.add_parser("weights", help="weights utilities")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    v = wsub.add_parser("verify", help="check the imported torchvision MobileNetV2 on 20 real ImageNet photos")
    v.add_argument("--min-top1", type=int, default=17)
    v.set_defaults(fn=cmd_weights_verify)

    c = sub.add_parser("compare", help="regression check of a results folder against a baseline (exit 0 ok, "
                       "1 regressed, 2 bad input, nothing compared or different hardware, 3 inconclusive)")
    c.add_argument("baseline", nargs="?", help="baseline results folder")
    c.add_argument("current", nargs="?", help="results folder to check; compare.md/.csv are written here")
    c.add_argument("--against-baseline", metavar="RESULTS",
                   help="check RESULTS against the baseline saved for its machine and suite (see baseline save)")
    c.add_argument("--root", default="baselines", help="baselines root for --against-baseline")
    c.add_argument("--name", help="baseline name for --against-baseline (default: the suite name)")
    c.add_argument("--time-threshold", help="steady s/epoch slower than this regresses (default 10%%)")
    c.add_argument("--throughput-threshold", help="steady images/s lower than this regresses (default 10%%)")
    c.add_argument("--accuracy-threshold", help="val accuracy lower by more points regresses (default 2)")
    c.add_argument("--epochs", help="epochs whose val accuracy to compare, e.g. 1,5 (default: 1 and the last)")
    c.add_argument("--force-different-hardware", action="store_true",
                   help="compare even if the accelerator models differ (timings then measure the hardware)")
    c.add_argument("--out", help="folder for compare.md and compare.csv (default: CURRENT)")
    c.set_defaults(fn=cmd_compare)

    b = sub.add_parser("baseline", help="per-machine baselines for tlbench compare --against-baseline")
    bsub = b.add_subparsers(dest="baseline_command", required=True)
    bs = bsub.add_parser("save", help="copy a results folder's records to ROOT/<machine-id>/<suite>/")
    bs.add_argument("results", help="results folder of one suite, e.g. results/offline-default")
    bs.add_argument("--root", default="baselines", help="baselines root (default: baselines)")
    bs.add_argument("--name", help="baseline name (default: the suite name)")
    bs.set_defaults(fn=cmd_baseline_save)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except SuiteErrors as e:
        for err in e.errors:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, UserError, UnknownName) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # outside a run (e.g. while importing TensorFlow)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
