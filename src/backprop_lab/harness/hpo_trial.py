"""The job's side of an Optuna sweep (harness/hpo.py): which trial it is, and pruning.

A job launched by the Optuna sweeper finds its trial through two environment variables the
sweeper sets for it (``hydra.job.env_set``): the study journal and the trial's id. With a pruner
configured, :class:`TrialReporter` reports the objective every ``report_every`` epochs to the
study and stops training (``StopTraining``) once the pruner says the trial is not promising.
"""

from __future__ import annotations

import math
from typing import Any

from backprop_lab.engine.training import StopTraining
from backprop_lab.harness import hpo


class TrialReporter:
    """Training callback: report ``objective`` to the trial, stop when it should be pruned."""

    def __init__(self, trial: Any, objective: str, every: int) -> None:
        self.trial = trial
        self.objective = objective
        self.every = every
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch: int, history) -> None:
        if epoch % self.every or self.objective not in history.scalars:
            return
        value = float(history.scalars[self.objective][epoch])
        if not math.isfinite(value):
            return  # training itself stops a diverging run
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            raise StopTraining(f"pruned by Optuna at epoch {epoch} ({self.objective} {value:.4g})")


def current_trial() -> tuple[Any, hpo.SweeperSettings] | None:
    """(the running job's optuna Trial, the sweeper's settings), or None outside a search."""
    found = hpo.job_trial()
    if found is None:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path, study_id, trial_id = found
    settings = hpo.SweeperSettings.from_config(HydraConfig.get().sweeper)
    storage = hpo.open_storage(path)
    name = storage.get_study_name_from_id(study_id)
    study = optuna.load_study(study_name=name, storage=storage,
                              pruner=hpo.make_pruner(settings))
    return optuna.trial.Trial(study, trial_id), settings


def trial_tags(trial: Any) -> dict[str, str]:
    """The run's tags naming its study and trial number."""
    from backprop_lab.contract import STUDY_TAG, TRIAL_TAG

    return {STUDY_TAG: trial.study.study_name, TRIAL_TAG: str(trial.number)}


def reporter(trial: Any, settings: hpo.SweeperSettings) -> TrialReporter | None:
    """The pruning callback, when the sweep has a pruner."""
    if settings.pruner == "none":
        return None
    return TrialReporter(trial, settings.objective, settings.report_every)
