"""`tlbench export mlflow`: the published records (9 runs, 5 epochs each) logged to a real sqlite tracking store
by the real command, and read back with MlflowClient."""
import json
import shutil
import socket
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT, tlbench

mlflow_tracking = pytest.importorskip("mlflow.tracking")
PUBLISHED = ROOT / "results" / "published" / "offline-default"
FIGURES = {"figures/accuracy.png", "figures/epoch_time.png", "figures/tradeoff.png"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A copy of the published suite folder exported twice into one sqlite store: (root, folder, uri, outputs)."""
    root = tmp_path_factory.mktemp("mlflow")
    folder = Path(shutil.copytree(PUBLISHED, root / "results" / "offline-default",
                                  ignore=shutil.ignore_patterns("superseded", "report.*")))
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    outputs = [tlbench("export", "mlflow", folder, "--tracking-uri", uri) for _ in range(2)]
    return root, folder, uri, outputs


def _records(folder: Path) -> dict[str, dict]:
    return {r["run_id"]: r for r in (json.loads(p.read_text()) for p in (folder / "runs").glob("*.json"))}


def _active_runs(uri: str) -> tuple[object, dict[str, list]]:
    """The client and the experiment's active MLflow runs by their tlbench run id."""
    client = mlflow_tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("offline-default")
    by_id = {}
    for run in client.search_runs([exp.experiment_id]):
        by_id.setdefault(run.data.tags["tlbench.run_id"], []).append(run)
    return client, by_id


def test_exporting_twice_gives_one_run_per_record_with_its_epochs_config_tags_and_artifacts(exported):
    root, folder, uri, (first, second) = exported
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    records = _records(folder)
    assert len(records) == 9
    assert sorted(line.split()[1] for line in first.stdout.splitlines() if line.startswith("created ")) == \
        sorted(records)
    assert f"9 records -> experiment 'offline-default' (id 1) in {uri}: 0 created, 0 updated, 9 unchanged; " \
           f"artifacts in {(root / 'store' / 'mlartifacts').as_uri()}" in second.stdout
    assert "Traceback" not in first.stderr + second.stderr

    client, runs = _active_runs(uri)
    assert sorted(runs) == sorted(records) and all(len(found) == 1 for found in runs.values())
    for run_id, record in records.items():
        run = runs[run_id][0]
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in history] == [(e["epoch"], e["val_accuracy"]) for e in record["epochs"]]
        assert [m.value for m in client.get_metric_history(run.info.run_id, "images_per_second")] == \
            [e["images_per_second"] for e in record["epochs"]]
        assert run.info.run_name == run_id and run.info.status == "FINISHED"
        assert run.info.start_time == datetime.fromisoformat(record["started"]).timestamp() * 1000
        tags = run.data.tags
        assert (tags["tlbench.key"], tags["mlflow.source.git.commit"], tags["tlbench.device"]) == \
            (record["key"], record["environment"]["git"]["commit"], "CPU: AMD EPYC")
        assert (tags["tlbench.cores"], tags["tlbench.backend"], tags["tlbench.version.tensorflow"]) == \
            ("2", "tensorflow", "2.21.0")
        flat = {f"{k}.{sub}" if sub else k: value for k, v in record["config"].items()
                for sub, value in (v.items() if isinstance(v, dict) else [(None, v)])}
        assert run.data.params == {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}
        assert (run.data.params["head.dense"], run.data.params["learning_rate"]) == ("[512]", "0.001")

    run = runs[next(iter(records))][0]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {f"{run.info.run_name}.json", "figures"}
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == FIGURES
    copy = client.download_artifacts(run.info.run_id, f"{run.info.run_name}.json", str(root))
    assert Path(copy).read_bytes() == (folder / "runs" / f"{run.info.run_name}.json").read_bytes()


def test_a_remeasured_record_replaces_its_run_and_new_figures_are_logged_again(exported):
    root, folder, uri, _ = exported
    path = sorted((folder / "runs").glob("*.json"))[0]
    record = json.loads(path.read_text())
    old_key, record["key"] = record["key"], "0123456789abcdef"
    path.write_text(json.dumps(record))
    (folder / "figures" / "accuracy.png").write_bytes(b"\x89PNG another figure")
    _, before = _active_runs(uri)

    p = tlbench("export", "mlflow", root / "results", "--tracking-uri", uri)
    assert p.returncode == 0, p.stderr
    assert f"{root / 'results'} is a results root: exporting its 1 suite folder(s) (offline-default)" in p.stdout
    replaced = before[path.stem][0].info.run_id
    assert f"(re-measured: key {old_key} -> 0123456789abcdef; replaces {replaced}, deleted)" in p.stdout
    assert "0 created, 9 updated, 0 unchanged" in p.stdout
    assert sum(": the figures changed" in line for line in p.stdout.splitlines()) == 8

    client, runs = _active_runs(uri)
    assert sorted(runs) == sorted(before) and all(len(found) == 1 for found in runs.values())
    new = runs[path.stem][0]
    assert new.data.tags["tlbench.key"] == "0123456789abcdef"
    assert len(client.get_metric_history(new.info.run_id, "val_accuracy")) == 5
    assert client.get_run(replaced).info.lifecycle_stage == "deleted"
    kept = next(found[0] for run_id, found in runs.items() if run_id != path.stem)
    assert kept.info.run_id == before[kept.data.tags["tlbench.run_id"]][0].info.run_id
    assert len(client.get_metric_history(kept.info.run_id, "val_accuracy")) == 5
    figure = client.download_artifacts(kept.info.run_id, "figures/accuracy.png", str(root))
    assert Path(figure).read_bytes() == b"\x89PNG another figure"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_arguments_and_a_missing_mlflow_exit_2_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = tlbench("export", "mlflow", PUBLISHED)
    assert (p.returncode, p.stderr) == (2, "error: tlbench export mlflow: say where to log: --tracking-uri URI or "
                                           "the MLFLOW_TRACKING_URI variable (e.g. sqlite:///mlflow.db, or "
                                           "http://127.0.0.1:5000 for a tracking server)\n")

    p = tlbench("export", "mlflow", tmp_path, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert p.returncode == 2 and p.stderr.startswith(f"error: '{tmp_path}' holds no results: neither a suite folder")

    (tmp_path / "not.db").write_text("not a database")
    p = tlbench("export", "mlflow", PUBLISHED, "--tracking-uri", f"sqlite:///{tmp_path / 'not.db'}")
    assert p.returncode == 2 and f"cannot open '{tmp_path / 'not.db'}' as a sqlite database: file is not a " \
                                 "database" in p.stderr and "Traceback" not in p.stderr

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://127.0.0.1:{_free_port()}"
    p = tlbench("export", "mlflow", PUBLISHED, "--tracking-uri", uri)
    assert p.returncode == 2 and p.stderr.startswith(f"error: --tracking-uri {uri}: the MLflow tracking store "
                                                     "cannot be used: ") and "Traceback" not in p.stderr

    # a machine without MLflow: a package of that name on PYTHONPATH that fails to import, as a missing one does
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mlflow'\", name='mlflow')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    p = tlbench("export", "mlflow", PUBLISHED, "--tracking-uri", uri)
    assert (p.returncode, p.stderr) == (2, "error: tlbench export mlflow needs MLflow: pip install "
                                           "'tlbench[mlflow]' (No module named 'mlflow')\n")
