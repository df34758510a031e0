"""tlbench's subcommands. Each parses its arguments and calls one function; errors become exit codes.

Exit codes: 0 success, 1 some runs failed (compare: a regression), 2 bad input (suite, results, data,
weights; compare: also nothing compared), 3 compare inconclusive, 130 interrupted by Ctrl-C, 143 by SIGTERM,
141 the reader of the output left (`tlbench list SUITE | head -1`), as for shell tools killed by SIGPIPE.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from . import console, interrupt
from .errors import ConfigError, SuiteErrors, UserError
from .interrupt import Interrupted
from .registry import UnknownName

EXIT_OK, EXIT_FAILED_RUNS, EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 3, 130, 141


def _load_suite(args):
    from . import suite

    s = suite.load(args.suite, suite.parse_set(args.set or []))
    for note in s.notes:  # what the runs will download: said before any starts, whatever the command
        print(f"note: {note}", file=sys.stderr)
    return s


def cmd_validate(args) -> int:
    s = _load_suite(args)
    print(f"{args.suite}: OK, suite '{s.name}', {len(s.runs)} runs")
    return EXIT_OK


def cmd_list(args) -> int:
    from . import recipes, shard

    s = shard.apply(args, _load_suite(args))
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
    """Rebuild the CSVs, the table, the figures and the report from the records; print the table.

    Under the folder's lock, so that concurrent runners take turns and the last leaves them current."""
    from . import report, store, tables

    with store.folder_lock(folder):
        found = store.rebuild(folder)
        interrupt.check()
        print(tables.write(folder, found.records, notes=found.lines()))
        print(f"wrote {folder / 'table.md'}, {folder / 'table.csv'}, {folder / 'epochs.csv'}, {folder / 'runs.csv'}")
        for path in report.write(folder):
            print(f"wrote {path}")
    return found.records


def cmd_run(args) -> int:
    interrupt.install()  # first: a signal while the modules below import is then noted, not a traceback
    from dataclasses import replace

    from .environment import process_backend
    from .runner import run_in_child, run_suite
    from .shard import apply
    from .store import StorageError, atomic_write, folder_lock, read_record, rebuild, run_path

    whole = _load_suite(args)
    s = apply(args, whole)
    if not s.runs:  # a shard of more shards than runs: its share is nothing
        return EXIT_OK
    folder = _results_folder(args.results, s.name)
    resume = f"resume with: {shlex.join(['tlbench', *args.argv])}  (recorded runs are skipped)"
    try:
        for line in _foreign_records(folder, whole, Path(args.suite).read_text()):
            print(f"warning: {line}", file=sys.stderr)
        atomic_write(folder / "suite.yaml", Path(args.suite).read_text())
        here = process_backend()
        backends = [args.backend] if args.backend else list(dict.fromkeys(r.backend for r in s.runs))
        if args.executor == "ray":  # every backend's runs at once: each Ray task sets its own KERAS_BACKEND
            from .ray_executor import run_suite as run_on_ray

            run_on_ray(replace(s, runs=[r for r in s.runs if r.backend in backends]), folder, args.address,
                       force=args.force, rerun_failed=args.rerun_failed)
            backends = []
        elif args.address:
            raise UserError("--address is the Ray cluster's: give it with --executor ray")
        for backend in backends:
            runs = [r for r in s.runs if r.backend == backend]
            if backend == here:
                if not _all_recorded(replace(s, runs=runs), folder, args):
                    run_suite(replace(s, runs=runs), folder, force=args.force, rerun_failed=args.rerun_failed,
                              verbose=0 if args.quiet else None)
            elif args.backend:
                raise UserError(f"--backend {backend}: this process's Keras backend is {here}; "
                                f"set KERAS_BACKEND={backend}")
            else:
                print(f"backend {backend}: {len(runs)} runs in a child process (KERAS_BACKEND={backend})", flush=True)
                run_in_child(_child_argv(args, backend), backend)
        if args.records_only:
            records = [r for r in (read_record(run_path(folder, c.run_id)) for c in s.runs) if r]
        else:
            records = _finish(folder)
    except Interrupted as e:
        if (folder / "runs").is_dir():
            with folder_lock(folder):
                rebuild(folder)  # the CSVs then agree with the records that did finish
        print(resume)
        return e.code
    except StorageError as e:
        print(f"error: {e}\nfinished runs are recorded in {folder}; make room, then {resume}", file=sys.stderr)
        return EXIT_BAD_INPUT
    ids = {r.run_id for r in s.runs if not args.backend or r.backend == args.backend}
    bad = [r for r in records if r["run_id"] in ids and r["status"] != "ok"]
    for r in bad:
        print(f"{r['status']}: {r['run_id']}: {r['error']}", file=sys.stderr)
    return EXIT_FAILED_RUNS if bad else EXIT_OK


def _results_folder(root: str, name: str) -> Path:
    """RESULTS/<suite>, refused before anything runs when a file stands where a folder must be."""
    folder = Path(root) / name
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"--results {root}: '{blocker}' is a file, not a folder; give the folder the results go "
                        "to (it is made if missing)")
    return folder


def _all_recorded(s, folder: Path, args) -> bool:
    """Whether every run of s (one backend's) is recorded under the key it would have now, decided without
    importing the backend: its answer (devices, build) is taken from the records (environment.as_recorded),
    so that a run with nothing to train does not spend tens of seconds starting TensorFlow. Says so per run."""
    from .environment import as_recorded, host
    from .runner import decide
    from .store import CorruptRecord, read_record, run_path

    if args.force or not s.runs:
        return False
    here, skips = host(s.runs[0].backend), []
    for config in s.runs:
        try:
            record = read_record(run_path(folder, config.run_id))
        except CorruptRecord:  # run_suite sets it aside and measures the run again
            return False
        env = as_recorded(here, record["environment"]) if record else None
        if env is None:
            return False
        skip = decide(config, env, record, False, args.rerun_failed).skip
        if not skip:
            return False
        skips.append(skip)
    for i, (config, skip) in enumerate(zip(s.runs, skips), 1):
        print(f"run {i}/{len(s.runs)} {s.describe(config)}: {skip} in {run_path(folder, config.run_id)}, skipped")
    print(f"tlbench: suite '{s.name}': all {len(s.runs)} runs are recorded for this machine and software, nothing "
          "to train (--force to re-run)")
    return True


def _foreign_records(folder: Path, s, suite_text: str) -> list[str]:
    """What in a results folder this suite run did not make: records of other settings or suites, which
    the table shows as rows of their own, corrupt files it will not replace, and another suite file about
    to be replaced."""
    from .config import match_key
    from .store import scan

    notes = []
    copy = folder / "suite.yaml"
    if copy.is_file() and copy.read_bytes().decode(errors="replace") != suite_text:
        notes.append(f"{copy} held another suite file; it is replaced by {s.file}")
    if not (folder / "runs").is_dir():
        return notes
    found = scan(folder)
    ids = {r.run_id for r in s.runs}
    # the corrupt records of this suite's runs are moved aside and run again; the others stay, left out
    notes += [f"left out {c}" for c in found.corrupt if c.path.stem not in ids]
    ours = {match_key({"config": r.to_dict()}) for r in s.runs}
    foreign = [r for r in found.records if match_key(r) not in ours]
    if foreign:
        suites = sorted({str(r.get("suite")) for r in foreign})
        notes.append(f"{folder} already holds {len(foreign)} record(s) of other settings (suite "
                     f"{', '.join(suites)}; e.g. {foreign[0]['run_id']}): the table shows them as separate rows. "
                     "Use --results DIR to keep this run's results apart")
    return notes


def _child_argv(args, backend: str) -> list[str]:
    argv = ["run", args.suite, "--results", args.results, "--backend", backend, "--records-only"]
    argv += [f"--set={item}" for item in args.set or []] + ([f"--shard={args.shard}"] if args.shard else [])
    argv += [flag for flag, on in (("--force", args.force), ("--rerun-failed", args.rerun_failed),
                                   ("--quiet", args.quiet)) if on]
    return argv


def cmd_merge(args) -> int:
    from .merge import merge

    print(merge(Path(args.out), args.folders))
    _finish(Path(args.out))
    return EXIT_OK


def cmd_table(args) -> int:
    from . import store, tables

    found = store.scan(Path(args.results))
    found.warn()
    text, table = tables.render(found.records, _epochs(args.epochs), found.lines())
    print(text, end="")
    try:
        paths = tables.save(found.folder, text, table)
    except store.StorageError as e:  # the table is printed above: only its copy on disk is missing
        raise UserError(f"{e}; the table above is complete, only table.md and table.csv were not written") from None
    for path in paths:
        print(f"wrote {path}")
    return EXIT_BAD_INPUT if found.damaged else EXIT_OK


def cmd_diagnose(args) -> int:
    """Each configuration's diagnostics, in the table's order, under its label and run ids: findings, not
    errors, so exit 0 (2 only when a record was left out)."""
    from . import diagnostics, store, tables

    found = store.scan(Path(args.results))
    found.warn()
    by_id = {r["run_id"]: r for r in found.records}
    table, _ = tables.summarise(found.records)
    for _, row in table.iterrows():
        print(f"{row['label']} · {tables.block_title(row)}: runs {', '.join(row['run_ids'].split())}")
        lines = diagnostics.text([by_id[i] for i in row["run_ids"].split()])[:-1]  # less its count line
        print("\n".join(f"  {line}" for line in lines or ["no diagnostics"]))
    print(diagnostics.text(found.records)[-1])
    return EXIT_BAD_INPUT if found.damaged else EXIT_OK


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
    found = [store.scan(f) for f in folders]
    for f in found:
        f.warn()
    try:
        paths = plots.write_sets(out, [(label, f.records) for label, f in zip(labels, found)],
                                 [line for f in found for line in f.footnote()])
    except store.StorageError as e:
        raise UserError(f"{e}; write the figures elsewhere with --out DIR") from None
    for path in paths:
        print(f"wrote {path}")
    return EXIT_BAD_INPUT if any(f.damaged for f in found) else EXIT_OK


def cmd_report(args) -> int:
    from . import report, store

    found = store.scan(Path(args.results))
    found.warn()
    try:
        paths = report.write_results(found, Path(args.out) if args.out else None)
    except store.StorageError as e:
        raise UserError(f"{e}; write the report elsewhere with --out DIR") from None
    for path in paths:
        print(f"wrote {path}")
    # without its suite file the report lacks what that file asks for (a reference table): not the whole report
    return EXIT_BAD_INPUT if found.damaged or found.suite_problem else EXIT_OK


def cmd_weights_verify(args) -> int:
    try:
        with console.filtered_stderr(console.gpu_expected()):  # TensorFlow's start-up noise, as in `run`
            from .torchvision_weights import verify_on_imagenet_photos

            result = verify_on_imagenet_photos()
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    print(f"torchvision MobileNetV2 imported into Keras: top-1 {result['top1']}/{result['n']}, "
          f"top-5 {result['top5']}/{result['n']} on foolbox's ImageNet photos")
    return EXIT_OK if result["top1"] >= args.min_top1 else EXIT_FAILED_RUNS


def cmd_compare(args) -> int:
    from . import baseline, compare, store

    if args.against_baseline and (args.baseline or args.current):
        raise UserError("give either BASELINE CURRENT or --against-baseline RESULTS, not both")
    if args.against_baseline:
        current = Path(args.against_baseline)
        base = baseline.find(store.scan(current), Path(args.root), args.name)
        said = baseline.describe(base)
        print(f"baseline: {base} (the latest of {len(baseline.saves(base.parent))} saves: saved {said['saved']}, "
              f"commit {said['commit']}, {said['runs']} runs)")
    elif args.baseline and args.current:
        base, current = Path(args.baseline), Path(args.current)
    else:
        raise UserError("expected BASELINE CURRENT (two results folders), or --against-baseline RESULTS")
    flags = compare.parse_flags(time=args.time_threshold, throughput=args.throughput_threshold,
                                accuracy=args.accuracy_threshold)
    report = compare.compare(base, current, flags, _epochs(args.epochs), args.force_different_hardware)
    print(report.text, end="")  # each verdict once, in the table: stderr gets only what is amiss with the inputs
    for line in report.warnings:
        print(line, file=sys.stderr)
    try:
        paths = compare.write(report, Path(args.out) if args.out else current)
    except store.StorageError as e:  # after the verdict lines, so that the comparison itself is not lost
        raise UserError(f"{e}; write compare.md and compare.csv elsewhere with --out DIR") from None
    for path in paths:
        print(f"wrote {path}")
    if report.regressions:  # a regression outranks the damage: it is what a gate exists to catch
        return EXIT_FAILED_RUNS
    if report.damaged:
        return EXIT_BAD_INPUT
    return EXIT_INCONCLUSIVE if report.inconclusive else EXIT_OK


def cmd_beside(args) -> int:
    from . import beside, store

    text, rows = beside.beside(Path(args.published), Path(args.yours))
    print(text, end="")
    out = Path(args.out) if args.out else Path(args.yours)
    try:
        store.atomic_write(out / "beside.md", text)
        store.atomic_write(out / "beside.csv", rows.to_csv(index=False))
    except store.StorageError as e:
        raise UserError(f"{e}; write beside.md and beside.csv elsewhere with --out DIR") from None
    print(f"wrote {out / 'beside.md'}, {out / 'beside.csv'}")
    return EXIT_OK


def cmd_gpu_summary(args) -> int:
    from .gpucheck import write

    text, found = write(Path(args.results))
    print(f"{text}wrote {Path(args.results) / 'summary.txt'}")
    if found.damaged:
        return EXIT_BAD_INPUT
    return EXIT_FAILED_RUNS if any(r["status"] != "ok" for r in found.records) else EXIT_OK


def cmd_publish(args) -> int:
    from . import publish

    site = publish.gather([Path(r) for r in args.results])
    for line in site.notes:
        print(f"warning: {line}", file=sys.stderr)
    out = publish.write(site, Path(args.out))
    print(f"wrote {out / 'index.html'}: {len(site.suites)} suite page(s), {len(site.configs)} configuration page(s), "
          f"{len(site.entries)} record(s)")
    return EXIT_BAD_INPUT if site.damaged else EXIT_OK


def cmd_baseline_save(args) -> int:
    from .baseline import save, saves
    from .store import scan

    found = scan(Path(args.results))
    found.warn()
    dest, replaced = save(found, Path(args.root), args.name, args.force)
    kept = len(saves(dest.parent)) - 1
    said = (f"--force: replaces {replaced.name}" if replaced else
            f"{kept} earlier save(s) kept: tlbench baseline list --root {args.root}" if kept else "the first save")
    print(f"saved baseline {dest} ({said})"
          + (f" without the {len(found.corrupt)} corrupt record(s) named above" if found.corrupt else ""))
    return EXIT_BAD_INPUT if found.damaged else EXIT_OK


def cmd_baseline_list(args) -> int:
    import pandas as pd

    from .baseline import available, describe

    found = available(Path(args.root))
    if not found:
        print(f"no baselines under '{args.root}'; save one with: tlbench baseline save RESULTS --root {args.root}")
        return EXIT_OK
    print(pd.DataFrame(map(describe, found)).to_string(index=False))
    print("compare --against-baseline takes the latest save of the machine and suite")
    return EXIT_OK


def cmd_export_mlflow(args) -> int:
    from .export_mlflow import export

    left_out = export(Path(args.results), args.tracking_uri, args.experiment)
    return EXIT_BAD_INPUT if left_out else EXIT_OK  # the corrupt records are named above; the rest exported


def cmd_ls(args) -> int:
    from .catalog import lines

    print("\n".join(lines(args.category)))
    return EXIT_OK


class _Version(argparse.Action):
    """--version, worked out only when asked: it runs git."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print tlbench's version and the git commit of its code, then exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from .environment import git_state, package_version

        git = git_state()
        commit = (f"commit {git['commit'][:12]}" + (", uncommitted changes" if git["dirty"] else "")
                  if git["commit"] else "not a git checkout")
        print(f"tlbench {package_version('tlbench') or '(not installed)'} ({commit})")
        parser.exit()


# Options whose value may begin with '-' ('-10%'): argparse takes such a value for an option and stops with
# "expected one argument"; joined to its flag, it reaches tlbench's check, which says what the value must be.
_SIGNED_VALUES = ("--time-threshold", "--throughput-threshold", "--accuracy-threshold")


def _join_signed_values(argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        if out and out[-1] in _SIGNED_VALUES and arg.startswith("-"):
            out[-1] += "=" + arg
        else:
            out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tlbench", description="Benchmark frozen / fine-tuned / from-scratch "
                                "transfer learning from YAML suites.")
    p.add_argument("--version", action=_Version)
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
    with_suite("list", "print the expanded runs of a suite", cmd_list).add_argument(
        "--shard", metavar="I/N", help="only the runs `run --shard I/N` runs (I/N or auto)")
    run = with_suite("run", "run a suite, then write the table and figures", cmd_run)
    run.add_argument("--results", default="results", help="results root; records go to RESULTS/<suite name>/")
    run.add_argument("--force", action="store_true", help="re-run runs already recorded")
    run.add_argument("--rerun-failed", action="store_true", help="re-run recorded runs that failed or diverged")
    run.add_argument("--quiet", action="store_true", help="no Keras epoch lines in plain (non-terminal) output; "
                     "the line per run, the ETA and the summary stay")
    run.add_argument("--backend", choices=["tensorflow", "jax", "torch"],
                     help="run only this backend's runs, in this process (KERAS_BACKEND must match)")
    run.add_argument("--records-only", action="store_true", help="write the records, not the table, figures "
                     "and report (what a per-backend child process does)")
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="where the runs run: one after "
                     "another in this process (local), or as tasks on a Ray cluster (ray: pip install 'tlbench[ray]')")
    run.add_argument("--address", help="with --executor ray: the cluster's head, HOST:PORT (as `ray start --head` "
                     "printed), ray://HOST:PORT or auto; default RAY_ADDRESS, else a Ray started for this command")
    run.add_argument("--shard", metavar="I/N", help="run only shard I (0 to N-1) of N, a fixed partition of the "
                     "suite's runs balanced by estimated cost; auto: I and N from a Slurm job array "
                     "(SLURM_ARRAY_TASK_ID) or a Kubernetes indexed Job (JOB_COMPLETION_INDEX, TLBENCH_SHARDS)")

    m = sub.add_parser("merge", help="combine the results folders of a suite's shards (run --shard) into one, "
                       "then write its table, figures and report; refuses conflicting records")
    m.add_argument("out", metavar="OUT", help="the combined suite results folder, e.g. results/smoke (its "
                   "records are kept)")
    m.add_argument("folders", nargs="+", metavar="FOLDER", help="a shard's suite results folder (holding runs/), "
                   "or its results root holding one of OUT's name, e.g. results/shards/0")
    m.set_defaults(fn=cmd_merge)

    t = sub.add_parser("table", help="print and write the comparison table of a results folder")
    t.add_argument("results", help="results folder of one suite, e.g. results/published/offline-default")
    t.add_argument("--epochs", help="epochs to show, e.g. 1,5 (default: 1 and the last)")
    t.set_defaults(fn=cmd_table)

    dg = sub.add_parser("diagnose", help="print what each run's and configuration's numbers must not be read as "
                        "(noisy timing, validation at chance, BatchNorm statistics, ...), with the evidence")
    dg.add_argument("results", help="results folder of one suite, e.g. results/published/offline-default")
    dg.set_defaults(fn=cmd_diagnose)

    pl = sub.add_parser("plot", help="draw the figures of one results folder, or of several in the same figures")
    pl.add_argument("results", nargs="+", help="results folder(s); runs are matched across them by configuration")
    pl.add_argument("--label", action="append", help="legend name of each results folder, in order "
                    "(default: the folder names); repeatable")
    pl.add_argument("--out", help="folder for the figures (default: RESULTS/figures with one folder)")
    pl.set_defaults(fn=cmd_plot)

    r = sub.add_parser("report", help="write RESULTS/report.md and report.html: table, figures, environment, "
                       "and a published table's numbers beside ours where the suite names a reference")
    r.add_argument("results", help="results folder of one suite, e.g. results/published/offline-default")
    r.add_argument("--out", help="folder for the report and its figures (default: RESULTS)")
    r.set_defaults(fn=cmd_report)

    w = sub.add_parser("weights", help="weights utilities")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    v = wsub.add_parser("verify", help="check the imported torchvision MobileNetV2 on 20 real ImageNet photos")
    v.add_argument("--min-top1", type=int, default=17, metavar="N",
                   help="pass when at least N of the photos (foolbox ships 20) get the right top-1 class "
                        "(default 17)")
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

    bb = sub.add_parser("beside", help="your results beside published ones of the same suite from another machine: "
                        "accuracy differences (within noise or not) and time ratios per configuration")
    bb.add_argument("published", help="the published results folder, e.g. results/published/offline-default")
    bb.add_argument("yours", help="your results folder of the same suite; beside.md/.csv are written here")
    bb.add_argument("--out", help="folder for beside.md and beside.csv (default: YOURS)")
    bb.set_defaults(fn=cmd_beside)

    gs = sub.add_parser("gpu-summary", help="the GPU check's summary of a results folder (scripts/gpu-check.sh): "
                        "seconds per first and steady epoch, images/s, achieved TFLOP/s against the device's peak")
    gs.add_argument("results", help="results folder of one suite, e.g. results/gpu-nvidia-h200/gpu-check; "
                    "summary.txt is written there")
    gs.set_defaults(fn=cmd_gpu_summary)

    pu = sub.add_parser("publish", help="a static site of every results folder beneath RESULTS (superseded records "
                        "and baseline saves as history), readable from disk and offline")
    pu.add_argument("results", nargs="+", help="folders to search for results folders, e.g. results baselines")
    pu.add_argument("--out", default="site", help="the site's folder (default: site); an earlier site there is "
                    "replaced, any other folder refused")
    pu.set_defaults(fn=cmd_publish)

    b = sub.add_parser("baseline", help="per-machine baselines for tlbench compare --against-baseline")
    bsub = b.add_subparsers(dest="baseline_command", required=True)
    bs = bsub.add_parser("save", help="copy a results folder's records to ROOT/<machine-id>/<suite>/<number>_<date>/"
                         ", the next number: earlier saves are kept")
    bs.add_argument("results", help="results folder of one suite, e.g. results/published/offline-default")
    bs.add_argument("--root", default="baselines", help="baselines root (default: baselines)")
    bs.add_argument("--name", help="baseline name (default: the suite name)")
    bs.add_argument("--force", action="store_true", help="replace the latest save instead of adding one")
    bs.set_defaults(fn=cmd_baseline_save)
    bl = bsub.add_parser("list", help="the saved baselines: machine, suite, save, date, commit, runs")
    bl.add_argument("--root", default="baselines", help="baselines root (default: baselines)")
    bl.set_defaults(fn=cmd_baseline_list)

    ex = sub.add_parser("export", help="log records to another tool")
    exsub = ex.add_subparsers(dest="export_target", required=True)
    em = exsub.add_parser("mlflow", help="each record as an MLflow run (config as params, per-epoch metrics, "
                          "environment as tags, record and figures as artifacts); again updates, never duplicates")
    em.add_argument("results", help="a suite folder (e.g. results/offline-default) or a results root")
    em.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. sqlite:///mlflow.db or http://127.0.0.1:5000 "
                    "(default: $MLFLOW_TRACKING_URI)")
    em.add_argument("--experiment", help="MLflow experiment (default: the suite name)")
    em.set_defaults(fn=cmd_export_mlflow)

    ls = sub.add_parser("ls", help="what a suite can name, one line each: backbones, datasets, modes, weights, "
                        "references")
    ls.add_argument("category", help="backbones, datasets, modes, weights or references")
    ls.set_defaults(fn=cmd_ls)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    console.quiet_frameworks()  # before any command imports a framework
    args = parser().parse_args(_join_signed_values(argv))
    args.argv = argv  # the resume hint repeats the command exactly, --set and all
    try:
        code = args.fn(args)
        sys.stdout.flush()  # a reader that left shows here when the whole output fitted in the buffer
        return code
    except BrokenPipeError:
        # Python would fail again at its last flush and print a warning: stdout goes nowhere from here.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except SuiteErrors as e:
        for err in e.errors:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, UserError, UnknownName) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # the machine's to fix (a full disk, a missing permission), not a bug of ours
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Interrupted) as e:  # outside a run, e.g. while reading results
        print("interrupted", file=sys.stderr)
        return e.code if isinstance(e, Interrupted) else EXIT_INTERRUPTED
