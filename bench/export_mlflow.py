"""`tlbench export mlflow`: each record of a results folder as one MLflow run, through MlflowClient.

  run name   the tlbench run id, also the tag tlbench.run_id by which a later export finds the run again
  params     the resolved config, nested keys joined by '.' (head.dense), values as JSON text
  metrics    per epoch, step = epoch number (METRICS), timed from the record's start
  tags       tlbench.run_id, .key, .suite, .status (.error), the commit, the environment
  artifacts  the record JSON; the folder's figures (figures/*.png) under figures/

Idempotent: a run carries the digests of its record and of the figures it holds. An export leaves a run whose
digests match alone (logging it again could add a second value per step). A record that changed (re-measured: a new
key) replaces its run: MLflow params cannot change, so the old run is deleted (MLflow's soft delete, restorable
until `mlflow gc`) and a new one logged. Changed figures alone are logged again over the old ones.
Only current records are exported, not superseded/ ones: each MLflow run is a run id's current measurement.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
from datetime import datetime
from pathlib import Path

from .errors import UserError
from .store import Results, results_folders, run_path, scan

METRICS = ("val_accuracy", "val_loss", "accuracy", "loss", "epoch_seconds", "train_seconds", "val_seconds",
           "images_per_second")
NEEDS = "tlbench export mlflow needs MLflow: pip install 'tlbench[mlflow]'"
RUN_ID, KEY, DIGEST, FIGURES = "tlbench.run_id", "tlbench.key", "tlbench.record_digest", "tlbench.figures_digest"
# MLflow's documented limits: a param value's length, and entities per log_batch call
MAX_PARAM, MAX_PARAMS_PER_BATCH, MAX_METRICS_PER_BATCH = 6000, 100, 1000


def tracking_uri(given: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI; never MLflow's own default, ./mlruns wherever the command runs."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UserError("tlbench export mlflow: say where to log: --tracking-uri URI or the MLFLOW_TRACKING_URI "
                        "variable (e.g. sqlite:///mlflow.db, or http://127.0.0.1:5000 for a tracking server)")
    return uri


def suite_folders(results: Path) -> list[Path]:
    """The suite folders at RESULTS: itself (a suite folder, with runs/) and those in it (a results root)."""
    folders = results_folders(results)
    if not folders:
        raise UserError(f"'{results}' holds no results: neither a suite folder (with runs/) nor a results root "
                        "(suite folders with runs/ in it); run a suite first: tlbench run SUITE")
    return folders


def _mlflow():
    """(MlflowClient, MlflowException); MLflow's own telemetry off unless the user set it (tlbench runs offline
    and talks to no one but the store it is given)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise UserError(f"{NEEDS} ({e})") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial MLflow database tables..."
    return MlflowClient, MlflowException


def _check_sqlite(uri: str) -> None:
    """A sqlite database that cannot be opened, said at once: MLflow retries it for about two minutes."""
    path = _sqlite_path(uri)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA schema_version")
    except (OSError, sqlite3.Error) as e:
        raise UserError(f"--tracking-uri {uri}: cannot open '{path}' as a sqlite database: {e}") from None


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI (sqlite:///relative.db, sqlite:////absolute.db); None for other stores."""
    return Path(uri.removeprefix("sqlite:///").split("?")[0]) if uri.startswith("sqlite:///") else None


def _missing(error: ImportError, uri: str) -> UserError:
    """MLflow or what it needs for a sqlite store, or a driver of another database (psycopg for postgresql)."""
    if (error.name or "mlflow").split(".")[0] in ("mlflow", "sqlalchemy", "alembic"):
        return UserError(f"{NEEDS} ({error})")
    return UserError(f"--tracking-uri {uri} needs the Python module '{error.name}', which is not installed")


def experiment(mlflow, uri: str, name: str) -> tuple[str, str]:
    """(id, artifact location) of the experiment NAME, created if missing. Under a sqlite store its artifacts
    go beside the database file, not to ./mlruns of wherever the command runs."""
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        found = mlflow.get_experiment(mlflow.create_experiment(name, artifact_location=_artifacts_beside(uri)))
    if found.lifecycle_stage != "active":
        raise UserError(f"--experiment {name}: the experiment is deleted in {uri}; restore it "
                        "(mlflow experiments restore) or give another name with --experiment")
    return found.experiment_id, found.artifact_location


def _artifacts_beside(uri: str) -> str | None:
    path = _sqlite_path(uri)  # a server or another database: None, its own default location
    return (path.resolve().parent / "mlartifacts").as_uri() if path else None


def params(config: dict, prefix: str = "") -> dict[str, str]:
    """The config flattened: {'head.dense': '[512]', 'learning_rate': '0.001', 'cut': 'null', ...}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(params(value, f"{prefix}{key}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out[f"{prefix}{key}"] = text if len(text) <= MAX_PARAM else text[:MAX_PARAM - 1] + "…"
    return out


def tags(record: dict) -> dict[str, str]:
    env = record["environment"]
    git = env.get("git") or {}
    cores = (env.get("cpu_info") or {}).get("cores") or env.get("cpu_count")
    found = {RUN_ID: record["run_id"], KEY: record.get("key"), "tlbench.suite": record.get("suite"),
             "tlbench.status": record["status"], "tlbench.error": record.get("error"),
             "mlflow.source.git.commit": git.get("commit"), "tlbench.dirty": git.get("dirty"),
             "tlbench.device": env["device"], "tlbench.cores": cores, "tlbench.backend": env.get("keras_backend"),
             "tlbench.machine_id": env.get("machine_id"), "tlbench.platform": env.get("platform"),
             **{f"tlbench.version.{k}": v for k, v in (env.get("versions") or {}).items()}}
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in found.items() if v is not None}


def _ms(stamp: str | None) -> int | None:
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None
    except ValueError:
        return None


def metrics(record: dict, now_ms: int) -> list:
    """Each epoch's values at step = epoch, stamped with the epoch's end: the record's start, its data and build
    seconds, and the epochs' seconds so far (records keep no clock time per epoch)."""
    from mlflow.entities import Metric

    t = (_ms(record.get("started")) or now_ms) / 1000 + (record.get("data_seconds") or 0) \
        + (record.get("build_seconds") or 0)
    out = []
    for row in record["epochs"]:
        t += row["epoch_seconds"]
        out += [Metric(name, float(row[name]), int(t * 1000), row["epoch"]) for name in METRICS
                if isinstance(row.get(name), (int, float))]
    return out


def digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def figures(folder: Path) -> tuple[list[Path], str]:
    """The folder's PNG figures and one digest of their names and bytes."""
    paths = sorted((folder / "figures").glob("*.png"))
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return paths, h.hexdigest()


def _log(mlflow, exp_id: str, folder: Path, record: dict, figs: tuple[list[Path], str]) -> str:
    """A new MLflow run holding the record; its digests are tagged last, so that an export cut short leaves a
    run the next export replaces."""
    from mlflow.entities import Param

    run = mlflow.create_run(exp_id, start_time=_ms(record.get("started")), tags=tags(record),
                            run_name=record["run_id"])
    run_id = run.info.run_id
    values = [Param(k, v) for k, v in params(record["config"]).items()]
    steps = metrics(record, run.info.start_time)
    # few calls, each one database transaction: a sqlite store syncs its file at every one
    for i in range(max(len(values) // MAX_PARAMS_PER_BATCH, len(steps) // MAX_METRICS_PER_BATCH) + 1):
        mlflow.log_batch(run_id, params=values[i * MAX_PARAMS_PER_BATCH:(i + 1) * MAX_PARAMS_PER_BATCH],
                         metrics=steps[i * MAX_METRICS_PER_BATCH:(i + 1) * MAX_METRICS_PER_BATCH])
    mlflow.log_artifact(run_id, str(run_path(folder, record["run_id"])))
    _log_figures(mlflow, run_id, figs, {DIGEST: digest(record)})
    mlflow.set_terminated(run_id, "FINISHED" if record["status"] == "ok" else "FAILED",
                          end_time=_ms(record.get("finished")))
    return run_id


def _log_figures(mlflow, run_id: str, figs: tuple[list[Path], str], more: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    for path in figs[0]:
        mlflow.log_artifact(run_id, str(path), "figures")
    mlflow.log_batch(run_id, tags=[RunTag(k, v) for k, v in {FIGURES: figs[1], **more}.items()])


def _existing(mlflow, exp_id: str) -> dict[str, list]:
    """The experiment's active runs by their tlbench run id (runs not logged by tlbench are left alone)."""
    by_id, token = {}, None
    while True:
        page = mlflow.search_runs([exp_id], max_results=1000, page_token=token)
        for run in page:
            if RUN_ID in run.data.tags:
                by_id.setdefault(run.data.tags[RUN_ID], []).append(run)
        token = page.token
        if not token:
            return by_id


def _why_replaced(old: list, record: dict) -> str:
    if len(old) > 1:
        return f"{len(old)} MLflow runs had this run id"
    tags_ = old[0].data.tags
    if DIGEST not in tags_:
        return "an earlier export of it did not finish"
    if tags_.get(KEY) != record.get("key"):
        return f"re-measured: key {tags_.get(KEY)} -> {record.get('key')}"
    return "the record changed"


def export_record(mlflow, exp_id: str, folder: Path, record: dict, old: list,
                  figs: tuple[list[Path], str]) -> tuple[str, str]:
    """(what happened: created / updated / unchanged, the line that says so)."""
    if len(old) == 1 and old[0].data.tags.get(DIGEST) == digest(record):
        run_id = old[0].info.run_id
        if old[0].data.tags.get(FIGURES) == figs[1]:
            return "unchanged", f"unchanged {record['run_id']}  mlflow run {run_id}"
        _log_figures(mlflow, run_id, figs, {})
        return "updated", f"updated   {record['run_id']}  mlflow run {run_id}: the figures changed"
    run_id = _log(mlflow, exp_id, folder, record, figs)
    if not old:
        return "created", f"created   {record['run_id']}  mlflow run {run_id}"
    for run in old:
        mlflow.delete_run(run.info.run_id)
    gone = ", ".join(r.info.run_id for r in old)
    return "updated", f"updated   {record['run_id']}  mlflow run {run_id} ({_why_replaced(old, record)}; " \
                      f"replaces {gone}, deleted)"


def export_folder(mlflow, uri: str, found: Results, name: str | None) -> None:
    """Every record of one suite folder into the experiment NAME (default: the folder's suite)."""
    name = name or (found.suite.get("name") if isinstance(found.suite.get("name"), str) else found.folder.name)
    if not found.records:
        print(f"{found.folder}: no records to export")
        return
    exp_id, location = experiment(mlflow, uri, name)
    figs = figures(found.folder)
    counts = dict.fromkeys(("created", "updated", "unchanged"), 0)
    old = _existing(mlflow, exp_id)
    for record in found.records:
        what, line = export_record(mlflow, exp_id, found.folder, record, old.get(record["run_id"], []), figs)
        counts[what] += 1
        print(line, flush=True)
    print(f"{found.folder}: {len(found.records)} records -> experiment '{name}' (id {exp_id}) in {uri}: "
          + ", ".join(f"{n} {what}" for what, n in counts.items()) + f"; artifacts in {location}")


def export(results: Path, uri: str | None, name: str | None) -> int:
    """Export every suite folder of RESULTS; returns how many corrupt records were left out (said by name)."""
    uri = tracking_uri(uri)
    folders = suite_folders(results)
    if folders != [results]:
        print(f"{results} is a results root: exporting its {len(folders)} suite folder(s) "
              f"({', '.join(f.name for f in folders)})" + ("" if name else ", each to the experiment of its name"))
    _check_sqlite(uri)
    MlflowClient, MlflowException = _mlflow()
    left_out = 0
    try:
        mlflow = MlflowClient(tracking_uri=uri)
        for folder in folders:
            found = scan(folder)
            found.warn()
            left_out += len(found.corrupt)
            export_folder(mlflow, uri, found, name)
    except MlflowException as e:  # an unreachable server, a bad URI, a database that cannot be written
        raise UserError(f"--tracking-uri {uri}: the MLflow tracking store cannot be used: {str(e)[:500]}") from None
    except ImportError as e:  # imported when the store is first used
        raise _missing(e, uri) from None
    if not uri.startswith(("http://", "https://", "databricks")):
        print(f"to view: mlflow ui --backend-store-uri {uri}  (needs the full mlflow package)")
    return left_out
