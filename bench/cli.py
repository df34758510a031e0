"""tlbench's subcommands. Each parses its arguments and calls one function; errors become exit codes.

Exit codes: 0 success, 1 some runs failed, 2 bad input (suite, results, data, weights), 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, SuiteErrors, UserError
from .registry import UnknownName

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _load_suite(args):
    from . import suite

    return suite.load(args.suite, suite.parse_set(args.set or []))


def cmd_validate(args) -> int:
    s = _load_suite(args)
    print(f"{args.suite}: OK, suite '{s.name}', {len(s.runs)} runs")
    return EXIT_OK


def cmd_list(args) -> int:
    s = _load_suite(args)
    for i, r in enumerate(s.runs, 1):
        size = f"{r.train_size or 'all'}/{r.val_size or 'all'}"
        print(f"{i:3d}  {r.run_id:56s} {r.input_size:4d}px  {size:>11s} img  {r.epochs} ep  batch {r.batch_size}"
              f"  {r.optimizer} {r.learning_rate:g}  weights {r.weights}")
    return EXIT_OK


def _epochs(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(t) for t in text.split(",")})
    except ValueError:
        raise UserError(f"--epochs: expected a comma-separated list of epoch numbers, got '{text}'") from None


def _finish(folder: Path, epochs=None) -> list[dict]:
    """Rebuild the CSVs, the comparison table and the figures from the records; print the table."""
    from . import plots, store, tables

    records = store.rebuild(folder)
    print(tables.write(folder, records, epochs))
    for path in plots.write(folder, records):
        print(f"wrote {path}")
    print(f"wrote {folder / 'table.md'}, {folder / 'table.csv'}, {folder / 'epochs.csv'}, {folder / 'runs.csv'}")
    return records


def cmd_run(args) -> int:
    from .runner import run_suite
    from .store import atomic_write

    s = _load_suite(args)
    folder = Path(args.results) / s.name
    atomic_write(folder / "suite.yaml", Path(args.suite).read_text())
    run_suite(s, folder, force=args.force, verbose=0 if args.quiet else None)
    records = _finish(folder)
    ids = {r.run_id for r in s.runs}
    bad = [r for r in records if r["run_id"] in ids and r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']}: {r['run_id']}: {r['error']}", file=sys.stderr)
    return EXIT_FAILED_RUNS if bad else EXIT_OK


def cmd_table(args) -> int:
    from . import store, tables

    print(tables.write(Path(args.results), store.read_runs(Path(args.results)), _epochs(args.epochs)), end="")
    return EXIT_OK


def cmd_plot(args) -> int:
    from . import plots, store

    for path in plots.write(Path(args.results), store.read_runs(Path(args.results))):
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
    run.add_argument("--quiet", action="store_true", help="no Keras progress bars")

    t = sub.add_parser("table", help="print and write the comparison table of a results folder")
    t.add_argument("results", help="results folder of one suite, e.g. results/offline-default")
    t.add_argument("--epochs", help="epochs to show, e.g. 1,5 (default: 1 and the last)")
    t.set_defaults(fn=cmd_table)

    pl = sub.add_parser("plot", help="draw the figures of a results folder")
    pl.add_argument("results")
    pl.set_defaults(fn=cmd_plot)

    w = sub.add_parser("weights", help="weights utilities")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    v = wsub.add_parser("verify", help="check the imported torchvision MobileNetV2 on 20 real ImageNet photos")
    v.add_argument("--min-top1", type=int, default=17)
    v.set_defaults(fn=cmd_weights_verify)
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
