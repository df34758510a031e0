"""One shard of a suite: `--shard I/N` (or `auto`, from a Slurm job array or a Kubernetes indexed Job).

The partition is of ALL the suite's runs, not of the pending ones: what is pending differs from machine to
machine and changes while the shards run, so N machines deciding it apart would run some runs twice and
others never. A pure function of the expanded suite (costs from progress.Eta.cost, run ids) gives every
machine the same partition; within its shard a run keeps run's resume, --force and --rerun-failed meaning.

Balanced by estimated cost, longest first: each run goes to the shard with the least work so far (ties to
the lower index), runs taken in order of cost then run id. No shard then ends more than one run's cost
above another.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from .config import RunConfig
from .errors import UserError
from .progress import Eta

FORM = "I/N with 0 <= I < N (e.g. 0/4), or auto"
# Kubernetes exports the index but not the Job's completions: the manifest sets this to them.
K8S_COUNT = "TLBENCH_SHARDS"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _whole(name: str, text: str | None, least: int) -> int:
    """An environment variable's whole number, or a UserError naming it and what it must be."""
    if text is None or not re.fullmatch(r"\s*\d+\s*", text) or int(text) < least:
        shown = "unset" if text is None else repr(text)
        raise UserError(f"--shard auto: {name} is {shown}, expected a whole number >= {least}")
    return int(text)


def _slurm(env) -> Shard:
    """A job array's task: its index counted from the array's first, N from its task count. The indices must
    be consecutive (--array=0-7, or 1-8): with steps or a list, index - first would miss or repeat shards."""
    first = _whole("SLURM_ARRAY_TASK_MIN", env.get("SLURM_ARRAY_TASK_MIN", "0"), 0)
    index = _whole("SLURM_ARRAY_TASK_ID", env.get("SLURM_ARRAY_TASK_ID"), first) - first
    last = env.get("SLURM_ARRAY_TASK_MAX")
    span = None if last is None else _whole("SLURM_ARRAY_TASK_MAX", last, first) - first + 1
    if "SLURM_ARRAY_TASK_COUNT" not in env and span is None:
        raise UserError("--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor "
                        "SLURM_ARRAY_TASK_MAX is: run it as a job array (sbatch --array=0-N-1)")
    count = _whole("SLURM_ARRAY_TASK_COUNT", env.get("SLURM_ARRAY_TASK_COUNT", str(span)), 1)
    if span is not None and span != count:
        raise UserError(f"--shard auto: the Slurm array's indices are not consecutive (SLURM_ARRAY_TASK_MIN "
                        f"{first}, SLURM_ARRAY_TASK_MAX {last}, SLURM_ARRAY_TASK_COUNT {count}): give "
                        "--array=0-N-1 (a step or a list of indices would miss runs)")
    return _checked(index, count, "--shard auto (SLURM_ARRAY_TASK_ID)")


def _kubernetes(env) -> Shard:
    index = _whole("JOB_COMPLETION_INDEX", env["JOB_COMPLETION_INDEX"], 0)
    if K8S_COUNT not in env:
        raise UserError(f"--shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes indexed Job) but {K8S_COUNT} "
                        f"is not: set it in the pod's env to the Job's completions (N shards)")
    return _checked(index, _whole(K8S_COUNT, env[K8S_COUNT], 1), f"--shard auto (JOB_COMPLETION_INDEX, {K8S_COUNT})")


def _checked(index: int, count: int, said: str) -> Shard:
    if not 0 <= index < count:
        raise UserError(f"{said}: shard {index} of {count} does not exist; expected {FORM}")
    return Shard(index, count)


def parse(text: str, env=os.environ) -> Shard:
    """--shard's value: 'I/N', or 'auto' read from a Slurm job array's or a Kubernetes indexed Job's variables."""
    if text == "auto":
        if "SLURM_ARRAY_TASK_ID" in env:
            return _slurm(env)
        if "JOB_COMPLETION_INDEX" in env:
            return _kubernetes(env)
        raise UserError("--shard auto: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX "
                        f"(a Kubernetes indexed Job, with {K8S_COUNT}) is set; give --shard I/N")
    found = re.fullmatch(r"(\d+)/(\d+)", text)
    if not found or int(found[2]) < 1:
        raise UserError(f"--shard: expected {FORM}, got {text!r}")
    return _checked(int(found[1]), int(found[2]), f"--shard {text}")


def partition(runs: list[RunConfig], count: int) -> list[list[RunConfig]]:
    """The runs in `count` shards, each in the suite's order: the same on every machine and Python process."""
    loads, owner = [0.0] * count, {}
    for run in sorted(runs, key=lambda r: (-Eta.cost(r), r.run_id)):
        least = min(range(count), key=lambda i: (loads[i], i))
        loads[least] += Eta.cost(run)
        owner[run.run_id] = least
    return [[r for r in runs if owner[r.run_id] == i] for i in range(count)]


def select(runs: list[RunConfig], shard: Shard) -> tuple[list[RunConfig], str]:
    """The shard's runs, and the line saying what share of the suite they are."""
    mine = partition(runs, shard.count)[shard.index]
    total = sum(map(Eta.cost, runs)) or 1.0
    share = 100 * sum(map(Eta.cost, mine)) / total
    return mine, f"shard {shard}: {len(mine)} of {len(runs)} runs (est. {share:.0f}% of the work)"


def apply(args, suite):
    """The suite cut to `--shard`'s runs, its line printed; the suite itself without --shard. args.shard
    becomes the resolved I/N, so that a per-backend child process runs the same shard."""
    if not args.shard:
        return suite
    shard = parse(args.shard)
    runs, line = select(suite.runs, shard)
    print(line, flush=True)
    args.shard = str(shard)
    return replace(suite, runs=runs, shard=str(shard))
