"""Resume an interrupted grid sweep: rerun only its unfinished jobs, under the same parent run.

    python train.py -m activation=sigmoid,tanh seed=0,1,2 epochs=3000              # stopped
    python train.py -m activation=sigmoid,tanh seed=0,1,2 epochs=3000 resume=true  # the rest

``resume`` (harness/config.py) names the earlier sweep: ``true`` for the latest sweep of the
experiment, or its parent run's id, or its sweep folder. The earlier sweep must be the same
grid: the same jobs, each with the same overrides (the order on the command line does not
matter; ``resume`` itself and ``hydra.*`` do not count). A changed sweep is refused before
anything is created, naming what differs. A job counts as done when its run ended
``finished`` or ``diverged`` (a diverged run is a result: the same seed diverges again); it is
skipped, listed, and its earlier run stays its record. Every other job (never started, killed,
failed) runs again as a new child of the earlier parent run, which is reopened (RUNNING, with
this process's heartbeat) and ended at the sweep's end with the outcome of all its jobs.

The facts a resume compares are recorded when a sweep starts: each job's key (its sorted,
masked overrides) as the job run's tag :data:`JOB_KEY_TAG`, and the list of keys on the
parent (:data:`JOBS_TAG`, when it fits in a tag) and in ``<sweep folder>/sweep.json``.
Optuna searches resume through their study instead (docs/running.md, tuning hyper-parameters).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from backprop_lab.contract import OUTCOME_TAG, OUTPUT_DIR_TAG, PARENT_TAG, ROLE_TAG, SUMMARY_FILE
from backprop_lab.harness.job_context import split_override
from backprop_lab.tracking.secrets import mask

JOB_KEY_TAG = "backprop_lab.job_key"
JOBS_TAG = "backprop_lab.sweep_jobs"
SIGNATURE_TAG = "backprop_lab.sweep_signature"
SWEEP_FILE = "sweep.json"
#: The jobs done earlier, handed to the jobs of a resumed sweep: {job key: earlier run}.
ENV_DONE = "BACKPROP_LAB_RESUME_DONE"
DONE = ("finished", "diverged")
MAX_TAG = 6000  # records.MAX_PARAM_VALUE: a longer list lives in sweep.json only


class ResumeError(ValueError):
    """The sweep cannot be resumed (none found, a different sweep, still running)."""


def job_key(overrides: list[str]) -> str:
    """What identifies a job of a grid: its overrides (masked), sorted, without ``resume``."""
    kept = sorted(mask(o) for o in overrides
                  if split_override(o)[0] != "resume" and not o.startswith("hydra."))
    return " ".join(kept)


def signature(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def parent_tags(keys: list[str]) -> dict[str, str]:
    """The tags a new sweep's parent records for a later resume."""
    tags = {SIGNATURE_TAG: signature(keys)}
    listed = json.dumps(sorted(keys))
    if len(listed) <= MAX_TAG:
        tags[JOBS_TAG] = listed
    return tags


def write_sweep_file(sweep_dir: Path, parent_run_id: str, keys: list[str],
                     resumed: bool = False) -> None:
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(
        {"parent_run_id": parent_run_id, "resumed": resumed, "jobs": sorted(keys)}, indent=1))


@dataclass
class Plan:
    """What a resume does: the earlier parent run, the jobs done (skipped) and to run."""

    parent_run_id: str
    parent_name: str
    done: dict[str, dict] = field(default_factory=dict)  # job key -> earlier run
    n_jobs: int = 0

    @property
    def n_todo(self) -> int:
        return self.n_jobs - len(self.done)

    def lines(self) -> list[str]:
        head = (f"Resuming sweep {self.parent_name!r} (parent run {self.parent_run_id}): "
                f"{len(self.done)} of {self.n_jobs} jobs done earlier, {self.n_todo} to run")
        skipped = [f"  skipped (done earlier): {run['name']} -> {run['outcome']}, run "
                   f"{run['run_id']}" for run in self.done.values()]
        return [head, *skipped]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def find_parent(client, experiment_id: str, value: str, base_dir: Path):
    """The earlier sweep's parent run named by ``resume=value``."""
    text = str(value).strip()
    if text.lower() in ("true", "yes", "1", "last", "latest"):
        runs = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'sweep'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise ResumeError("resume=true: this experiment has no earlier sweep to resume")
        return runs[0]
    folder = Path(text) if Path(text).is_absolute() else base_dir / text
    if (folder / SWEEP_FILE).is_file():
        text = json.loads((folder / SWEEP_FILE).read_text())["parent_run_id"]
    elif len(text) != 32 or not all(c in "0123456789abcdef" for c in text):
        raise ResumeError(f"resume={value}: neither a sweep folder holding {SWEEP_FILE}, nor a "
                          "parent run id (32 hex digits), nor true (the latest sweep)")
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(text)
    except MlflowException:
        raise ResumeError(f"resume={value}: no run {text} in this store") from None
    if run.data.tags.get(ROLE_TAG) != "sweep":
        raise ResumeError(f"resume={value}: run {text} is not a sweep's parent run")
    return run


def earlier_keys(run) -> list[str] | None:
    """The job keys the earlier sweep recorded (its tag, else its sweep.json)."""
    listed = run.data.tags.get(JOBS_TAG)
    if listed:
        return json.loads(listed)
    folder = run.data.tags.get("backprop_lab.sweep_dir")
    try:
        return json.loads((Path(folder) / SWEEP_FILE).read_text())["jobs"] if folder else None
    except (OSError, ValueError, KeyError):
        return None


def difference(before: list[str], now: list[str]) -> str:
    """What differs between two grids, in overrides (and job counts)."""
    def tokens(keys):
        return {t for key in keys for t in key.split(" ") if t}

    gone, new = sorted(tokens(before) - tokens(now)), sorted(tokens(now) - tokens(before))
    parts = [f"{len(before)} jobs then, {len(now)} now"]
    if gone:
        parts.append("only in the earlier sweep: " + " ".join(gone))
    if new:
        parts.append("only in this one: " + " ".join(new))
    if not gone and not new:
        parts.append("the same overrides, combined into other jobs")
    return "; ".join(parts)


def plan(uri: str, experiment_id: str, value: str, jobs: list[list[str]],
         base_dir: Path) -> Plan:
    """Check that ``jobs`` are the earlier sweep's and find which of them are done."""
    from backprop_lab.tracking.orphans import ALIVE, judge
    from backprop_lab.tracking.records import running_run

    client = _client(uri)
    parent = find_parent(client, experiment_id, value, base_dir)
    parent_id, name = parent.info.run_id, parent.info.run_name or parent.info.run_id
    if parent.info.status == "RUNNING":
        verdict = judge(running_run(parent_id, name, parent.info.experiment_id,
                                    parent.info.start_time, parent.data.tags))
        if verdict.state == ALIVE:
            raise ResumeError(f"the sweep {name!r} (parent run {parent_id}) is still running "
                              f"({verdict.reason}); resume it once it has stopped")
    keys = [job_key(job) for job in jobs]
    before = earlier_keys(parent)
    if before is None:
        raise ResumeError(f"the sweep {name!r} (parent run {parent_id}) did not record its "
                          "jobs (made by an older version): it cannot be resumed")
    if signature(before) != signature(keys):
        raise ResumeError(f"this is not the sweep {name!r} (parent run {parent_id}): "
                          f"{difference(before, keys)}. Run it without resume, or resume with "
                          "the earlier command")
    found = Plan(parent_id, name, n_jobs=len(keys))
    wanted = set(keys)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=50000)
    for child in sorted(children, key=lambda r: r.info.start_time or 0):
        tags = child.data.tags
        key = tags.get(JOB_KEY_TAG)
        if key in wanted and key not in found.done and tags.get(OUTCOME_TAG) in DONE:
            found.done[key] = {"run_id": child.info.run_id, "name": child.info.run_name,
                               "outcome": tags[OUTCOME_TAG],
                               "output_dir": tags.get(OUTPUT_DIR_TAG)}
    return found


def reopen(uri: str, run_id: str) -> None:
    """The earlier parent RUNNING again, with this process's heartbeat tags."""
    from backprop_lab.tracking.heartbeat import start_tags

    client = _client(uri)
    client.update_run(run_id, status="RUNNING")
    for key, value in start_tags().items():
        client.set_tag(run_id, key, value)


# -- a job's side ------------------------------------------------------------------------------


def done_earlier(overrides: list[str]) -> dict | None:
    """The earlier run of this job, if the sweep is a resume and the job was done."""
    raw = os.environ.get(ENV_DONE)
    if not raw:
        return None
    return json.loads(raw).get(job_key(overrides))


def skipped_summary(earlier: dict) -> dict:
    """What the job's summary.json takes from the earlier run's (its metrics), when readable."""
    folder = earlier.get("output_dir")
    try:
        summary = json.loads((Path(folder) / SUMMARY_FILE).read_text()) if folder else {}
    except (OSError, ValueError):
        summary = {}
    keep = ("epochs_run", "seconds", "n_layers", "train_loss", "train_accuracy", "val_loss",
            "val_accuracy", "grad_ratio", "grad_ratio_init")
    return {k: summary.get(k) for k in keep}
