"""Job arrays: `run --shard I/N` runs a fixed, cost-balanced partition of a suite; `merge` combines the shards."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench import shard, suite, tables
from bench.config import RunConfig
from bench.errors import UserError
from bench.progress import Eta
from conftest import DATA, ROOT, tlbench, unmarked

SUITES = sorted((ROOT / "suites").glob("*.yaml"))


@pytest.fixture(scope="module")
def suite_runs():
    return {path.name: suite.load(path).runs for path in SUITES}


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_every_run_is_in_exactly_one_shard_and_shards_are_balanced(suite_runs, count):
    for name, runs in suite_runs.items():
        shards = shard.partition(runs, count)
        ids = [r.run_id for part in shards for r in part]
        assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == len(runs), name
        for part in shards:  # each shard keeps the suite's order (round-robin repeats)
            assert part == [r for r in runs if r in part], name
        costs = [sum(map(Eta.cost, part)) for part in shards]
        assert max(costs) <= min(costs) + max(map(Eta.cost, runs)), (name, costs)


def test_balanced_by_cost_not_by_count(suite_runs):
    runs = suite_runs["smoke.yaml"]  # frozen 1 unit, unfrozen and scratch 4 each
    assert [[r.mode for r in part] for part in shard.partition(runs, 2)] == [["frozen", "scratch"], ["unfrozen"]]
    assert shard.select(runs, shard.Shard(1, 2))[1] == "shard 1/2: 1 of 3 runs (est. 44% of the work)"


def test_partition_is_the_same_in_another_process_and_for_any_input_order(suite_runs):
    runs = suite_runs["four-cases.yaml"]
    mine = [[r.run_id for r in part] for part in shard.partition(runs, 4)]
    assert [[r.run_id for r in part] for part in shard.partition(runs[::-1], 4)] == [p[::-1] for p in mine]
    script = ("import json, sys; from bench import shard; from bench.config import RunConfig\n"
              "runs = [RunConfig.from_dict(d) for d in json.load(sys.stdin)]\n"
              "print(json.dumps([[r.run_id for r in p] for p in shard.partition(runs, 4)]))")
    for seed in ("1", "4242"):
        p = subprocess.run([sys.executable, "-c", script], input=json.dumps([r.to_dict() for r in runs]),
                           env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True)
        assert json.loads(p.stdout) == mine


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, "3/4"),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}, "0/8"),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8",
      "SLURM_ARRAY_TASK_COUNT": "8"}, "4/8"),
    ({"JOB_COMPLETION_INDEX": "2", "TLBENCH_SHARDS": "3"}, "2/3"),
])
def test_auto_reads_slurm_and_kubernetes_variables(env, expected):
    assert str(shard.parse("auto", env)) == expected


@pytest.mark.parametrize("text, env, said", [
    ("auto", {}, "neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"},
     "SLURM_ARRAY_TASK_ID is 'x', expected a whole number >= 0"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "5",
              "SLURM_ARRAY_TASK_COUNT": "3"}, "indices are not consecutive"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "TLBENCH_SHARDS is not: set it in the pod's env"),
    ("auto", {"JOB_COMPLETION_INDEX": "3", "TLBENCH_SHARDS": "3"}, "shard 3 of 3 does not exist"),
    ("auto", {"JOB_COMPLETION_INDEX": "0", "TLBENCH_SHARDS": "0"}, "TLBENCH_SHARDS is '0', expected a whole"),
    ("2/2", {}, "--shard 2/2: shard 2 of 2 does not exist; expected I/N with 0 <= I < N"),
    ("1of2", {}, "--shard: expected I/N with 0 <= I < N (e.g. 0/4), or auto, got '1of2'"),
    ("0/0", {}, "got '0/0'"),
])
def test_bad_shards_are_refused_naming_the_variable_and_the_form(text, env, said):
    with pytest.raises(UserError) as e:
        shard.parse(text, env)
    assert said in str(e.value)


# Three runs of unequal cost (train_size) that train only a head on cached features: seconds each
TINY = """\
name: tiny
defaults: {epochs: 1, batch_size: 16, input_size: 32, val_size: 16, weights: none, head: {dense: [16]}}
datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 48, test: 16}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: frozen-cached, train_size: [16, 32, 48]}
"""


TLBENCH = str(Path(sys.executable).with_name("tlbench"))


def _k8s_manifest():
    return list(yaml.safe_load_all((ROOT / "scripts" / "k8s-indexed-job.yaml").read_text()))


def _args(job: dict) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["args"][0]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """TINY as a job array of two shards, in parallel, each writing its own results root: shard 0 by
    scripts/slurm-array.sbatch (with an `sbatch` that notes the merge job it submits), shard 1 by the
    command of scripts/k8s-indexed-job.yaml; then that merge job's command."""
    tmp = tmp_path_factory.mktemp("shards")
    (tmp / "tiny.yaml").write_text(TINY)
    (tmp / "bin").mkdir()
    (tmp / "bin" / "sbatch").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp / "submitted"}\n')
    (tmp / "bin" / "sbatch").chmod(0o755)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}"}
    slurm = {"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0",
             "SLURM_ARRAY_TASK_MAX": "1", "SLURM_ARRAY_TASK_COUNT": "2", "TLBENCH": TLBENCH}
    k8s = _args(_k8s_manifest()[1]).replace(".venv/bin/tlbench", TLBENCH).replace("suites/smoke.yaml", "tiny.yaml")
    tasks = [subprocess.Popen(["bash", ROOT / "scripts" / "slurm-array.sbatch", "tiny.yaml", "--quiet"],
                              env={**env, **slurm}, **_piped(tmp)),
             subprocess.Popen(["sh", "-c", k8s.replace("/results", str(tmp / "results"))],
                              env={**env, "JOB_COMPLETION_INDEX": "1", "TLBENCH_SHARDS": "2"}, **_piped(tmp))]
    outputs = [(t.communicate(timeout=600)[0], t.returncode) for t in tasks]
    submitted = (tmp / "submitted").read_text().splitlines()
    merged = subprocess.run(["bash", "-c", submitted[-1].removeprefix("--wrap=")], env=env, **_piped(tmp))
    return tmp, outputs, submitted, merged


def _piped(cwd) -> dict:
    return {"cwd": cwd, "text": True, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}


def test_shards_run_each_run_once_and_merge_into_the_whole_suite(sharded):
    tmp, outputs, submitted, merged = sharded
    assert [code for _, code in outputs] == [0, 0], outputs
    assert "shard 0/2: 1 of 3 runs (est. 48% of the work)" in outputs[0][0]
    assert "shard 1/2: 2 of 3 runs (est. 52% of the work)" in outputs[1][0]
    ran = [sorted(p.stem for p in (tmp / "results" / "shards" / str(i) / "tiny" / "runs").glob("*.json"))
           for i in range(2)]
    whole = suite.load(tmp / "tiny.yaml").runs
    assert sorted(ran[0] + ran[1]) == sorted(r.run_id for r in whole) and not set(ran[0]) & set(ran[1])

    assert submitted[:3] == ["--dependency=afterany:77", "--job-name=tlbench-merge", "--output=tlbench-%j-merge.out"]
    assert merged.returncode == 0, merged.stdout
    folder = tmp / "results" / "tiny"
    records = {p.stem: json.loads(p.read_text()) for p in (folder / "runs").glob("*.json")}
    assert {i: RunConfig.from_dict(r["config"]) for i, r in records.items()} == {r.run_id: r for r in whole}
    assert sorted(r["schedule"]["shard"] for r in records.values()) == ["0/2", "1/2", "1/2"]  # said, not keyed
    assert all(r["schedule"]["of"] == len(ran[int(r["schedule"]["shard"][0])]) for r in records.values())
    table = unmarked((folder / "table.md").read_text())
    for r in records.values():  # one block per train_size, its row the record's numbers
        first = r["epochs"][0]
        block = table.split(f"train_size={r['config']['train_size']}**")[1].split("**")[0]
        assert (f"| Frozen, cached features · random init | {tables.pct(first['val_accuracy'])} n=1 | — "
                f"| {tables.secs(first['epoch_seconds'])} n=1 |") in block and r["status"] == "ok"
    assert (folder / "suite.yaml").read_text() == TINY and (folder / "report.md").is_file()
    # the whole suite, run now on the merged folder, finds every run recorded under its current key
    again = tlbench("run", tmp / "tiny.yaml", "--results", tmp / "results", "--records-only")
    assert again.returncode == 0 and "all 3 runs are recorded for this machine and software" in again.stdout


def _folders(tmp_path, *splits):
    """Results roots holding golden's records, split as asked: each a list of indices into the sorted records."""
    golden = sorted((DATA / "golden" / "runs").glob("*.json"))
    for i, split in enumerate(splits):
        (tmp_path / f"s{i}" / "g" / "runs").mkdir(parents=True)
        for k in split:
            shutil.copy(golden[k], tmp_path / f"s{i}" / "g" / "runs")
    return [tmp_path / f"s{i}" for i in range(len(splits))], golden


def _edit(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=1, sort_keys=True))


def test_merge_refuses_two_different_records_of_one_measurement(tmp_path):
    roots, golden = _folders(tmp_path, [0, 1], [1, 2])
    _edit(roots[1] / "g" / "runs" / golden[1].name, build_seconds=99.0)
    p = tlbench("merge", tmp_path / "out" / "g", *roots)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (f"'{roots[0] / 'g' / 'runs' / golden[1].name}' and '{roots[1] / 'g' / 'runs' / golden[1].name}' are "
            "records of the same measurement (key None) that differ") in p.stderr
    assert "merge refused, nothing written" in p.stderr and not (tmp_path / "out" / "g" / "runs").exists()


def test_merge_supersedes_the_older_measurement_keeps_what_out_held_and_is_idempotent(tmp_path):
    from bench.merge import merge

    roots, golden = _folders(tmp_path, [0, 1], [1, 2], [3])
    _edit(roots[0] / "g" / "runs" / golden[1].name, key="old", finished="2026-11-25T09:00:00+00:00")
    _edit(roots[1] / "g" / "runs" / golden[1].name, key="new", finished="2026-11-25T12:00:00+00:00")
    (roots[1] / "g" / "superseded").mkdir()
    shutil.copy(golden[4], roots[1] / "g" / "superseded" / f"{golden[4].stem}.2026.json")
    out = tmp_path / "out" / "g"
    merge(out, [str(roots[2])])  # OUT already holds a record: merged with, never lost
    assert merge(out, [str(r) for r in roots[:2]]) == (f"merged 2 folder(s) into {out}: 3 record(s) written to "
                                                          "runs/, 2 older one(s) to superseded/; the rest were there "
                                                          "already")
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == [g.name for g in golden[:4]]
    assert json.loads((out / "runs" / golden[1].name).read_text())["key"] == "new"
    older = out / "superseded" / f"{golden[1].stem}.2026-11-25T090000+0000.json"
    assert json.loads(older.read_text())["key"] == "old"
    assert sorted(p.name for p in (out / "superseded").iterdir()) == sorted([older.name, f"{golden[4].stem}.2026.json"])
    files = {p: p.read_bytes() for p in out.rglob("*.json")}
    assert merge(out, [str(r) for r in roots]).startswith(f"merged 3 folder(s) into {out}: 0 record(s) written")
    assert {p: p.read_bytes() for p in out.rglob("*.json")} == files


def test_merge_refuses_corrupt_records_and_missing_folders(tmp_path):
    roots, _ = _folders(tmp_path, [0], [1])
    (roots[1] / "g" / "runs" / "broken.json").write_text("{")
    p = tlbench("merge", tmp_path / "out" / "g", *roots, tmp_path / "nowhere")
    assert p.returncode == 2 and f"'{tmp_path / 'nowhere'}' holds neither runs/ nor g/runs/" in p.stderr
    p = tlbench("merge", tmp_path / "out" / "g", *roots)
    broken = roots[1] / "g" / "runs" / "broken.json"
    assert p.returncode == 2 and f"corrupt record '{broken}': not valid JSON" in p.stderr
    assert not (tmp_path / "out" / "g" / "runs").exists()


def test_kubernetes_manifest_gives_n_to_the_job_and_to_tlbench_alike():
    claim, shards, merge = _k8s_manifest()
    spec = shards["spec"]
    env = {e["name"]: e["value"] for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert spec["completionMode"] == "Indexed" and spec["completions"] == int(env["TLBENCH_SHARDS"]) == 4
    assert _args(merge) == ".venv/bin/tlbench merge /results/smoke /results/shards/*"
    assert {job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            for job in (shards, merge)} == {claim["metadata"]["name"]}


def test_run_refuses_a_shard_it_cannot_work_out_with_exit_2(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION_INDEX"))}
    p = subprocess.run([sys.executable, "-m", "bench", "run", "tiny.yaml", "--shard", "auto"], cwd=tmp_path,
                       env={**env, "JOB_COMPLETION_INDEX": "1"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr and not (tmp_path / "results").exists()
    assert p.stderr.splitlines()[-1] == ("error: --shard auto: JOB_COMPLETION_INDEX is set (a Kubernetes indexed "
                                         "Job) but TLBENCH_SHARDS is not: set it in the pod's env to the Job's "
                                         "completions (N shards)")


def test_a_shard_beyond_the_runs_has_nothing_to_do(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    p = tlbench("run", tmp_path / "tiny.yaml", "--shard", "4/5", "--results", tmp_path / "results")
    assert p.returncode == 0 and p.stdout == "shard 4/5: 0 of 3 runs (est. 0% of the work)\n"
    assert not (tmp_path / "results").exists()
