"""Every job's config of a sweep, composed once per distinct choice of config groups.

Hydra composes a multirun's job from scratch (defaults list, every YAML file, every schema
merge: about 65 ms here) twice: once when the sweeper checks the batch
(``Sweeper.validate_batch_is_legal``) and once when the launcher starts the job; and this
project checks every job before any run exists, a third time. In most sweeps the jobs differ
only in plain values (``activation=sigmoid,tanh,relu``, ``seed=0,1,2``), which Hydra applies
*after* composition, key by key, as the last step. :class:`SweepComposer` composes once for
each distinct set of the other overrides (config groups such as ``model=deep``, additions,
deletions, ``hydra.*`` keys) and derives each job from that composition the way Hydra would:

1. copy the composed config;
2. apply the job's plain overrides with Hydra's own ``_apply_overrides_to_config`` (its type
   checks and error messages);
3. set what Hydra derives from the overrides: ``hydra.overrides.task`` (in the job's order) and
   ``hydra.job.override_dirname``; copy the sweep's resolver cache (timestamps) as Hydra does.

Often a job needs no composition at all: the one Hydra made for the sweep itself (the master
config) already is it, with the swept keys at their defaults. A job is derived from a copy of the
master when its overrides other than plain ones are exactly the command line's fixed ones (same
groups, additions, deletions, in order; the ``hydra.*`` ones are the master's by construction),
every fixed plain value of the command line is set again by the job, and no config group was left
missing (``???``: Hydra's composition of the job must fail then). The flagship sweep then composes
nothing beyond the master, with or without ``tracking=none``.

An override is plain when it changes (no ``+``, ``~``, ``++``) a key that is not a config group
and not under ``hydra.``, has no ``@package``, and no other value override of the job touches
the same key or a key above or below it (then the order of application could matter; a group
choice such as ``optimizer=adam`` beside ``optimizer.lr=0.1`` does not: it acts before the
values). Everything else is composed by Hydra itself, once per distinct set (a job that only
differs in such overrides is composed once, not three times). The tests
(``test_sweep_configs_equal_hydras_own_composition``) check that derived configs equal Hydra's,
node for node, over sweeps of values, groups, additions and mixtures.

:meth:`SweepComposer.install` puts the composer in front of the Hydra instance's config loader
for the sweep, so the sweeper's check, the launchers (basic, joblib, Ray) and this project's
check all share the compositions: the flagship sweep composes no job from scratch (it composed
seven times without the composer).

:func:`mode_composition_reused` removes one more composition, Hydra's own: before a run or a
sweep, Hydra composes the whole config just to read ``hydra.mode`` (``Hydra.get_mode``) and then
composes it again, with ``hydra.mode=RUN`` or ``MULTIRUN`` appended. The first composition is
kept and handed to the second, which only applies the appended override (the tests compare the
result with Hydra's own composition).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def task_config(config: DictConfig) -> DictConfig:
    """The job's own config, without the ``hydra`` node."""
    cfg = copy.deepcopy(config)
    with read_write(cfg), open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


class SweepComposer:
    """``load_sweep_config`` with compositions shared by the jobs of a sweep (module docstring)."""

    def __init__(self, loader: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader = loader
        self.compose = loader.load_sweep_config  # Hydra's own, bound before install replaces it
        self.parser = OverridesParser.create(config_loader=loader)
        # (from the master?, the other overrides) -> their composition
        self.bases: dict[tuple[bool, tuple[str, ...]], DictConfig] = {}
        self.groups: dict[str, bool] = {}  # key -> names a config group
        self.compositions = 0  # how many times Hydra composed (the tests count them)

    @classmethod
    def install(cls, loader: Any) -> SweepComposer:
        """Serve ``loader.load_sweep_config`` from a composer (once per loader)."""
        existing = getattr(loader.load_sweep_config, "__self__", None)
        if isinstance(existing, cls):
            return existing
        composer = cls(loader)
        loader.load_sweep_config = composer.load_sweep_config
        return composer

    def load_sweep_config(self, master_config: DictConfig,
                          sweep_overrides: Sequence[str]) -> DictConfig:
        """The job's full config (``hydra`` node included), equal to Hydra's composition."""
        # Private: Hydra's own application of command-line overrides after composition (its
        # checks and messages) and its override_dirname; Hydra has no public functions for them.
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        overrides = list(sweep_overrides)
        parsed = self.parser.parse_overrides(overrides)
        plain = self._plain(parsed)
        rest = tuple(text for text, p in zip(overrides, parsed, strict=True) if id(p) not in plain)
        from_master = self._master_fits(master_config, parsed, plain, rest)
        key = (from_master, rest)
        base = self.bases.get(key)
        if base is None and from_master:
            base = self.bases[key] = copy.deepcopy(master_config)
        elif base is None:
            self.compositions += 1
            base = self.bases[key] = self.compose(master_config, list(rest))
        cfg = copy.deepcopy(base)  # the caller's to change (launchers set hydra.job.num)
        ConfigLoaderImpl._apply_overrides_to_config([p for p in parsed if id(p) in plain], cfg)
        task = [p for p in parsed if not p.is_hydra_override()]
        job = cfg.hydra.job
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [p.input_line for p in task]
            job.override_dirname = get_overrides_dirname(
                overrides=task,
                kv_sep=job.config.override_dirname.kv_sep,
                item_sep=job.config.override_dirname.item_sep,
                exclude_keys=job.config.override_dirname.exclude_keys,
            )
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    def _master_fits(self, master_config: DictConfig, job: list, plain: set[int],
                     rest: tuple[str, ...]) -> bool:
        """May the job (``job`` parsed, ``plain`` the ids of its plain overrides, ``rest`` the
        others) be derived from the master config instead of composed?"""
        from hydra.types import RunMode

        if master_config.hydra.mode != RunMode.MULTIRUN:
            return False  # a master composed some other way (an API caller's)
        choices = master_config.hydra.runtime.choices
        if any(OmegaConf.is_missing(choices, group) for group in choices):
            return False  # a config group left missing: Hydra's composition of a job must fail
        fixed = [p for p in self.parser.parse_overrides(list(master_config.hydra.overrides.task))
                 if not p.is_sweep_override()]
        fixed_plain = self._plain(fixed)
        if tuple(p.input_line for p in fixed if id(p) not in fixed_plain) != rest:
            return False  # the job's groups, additions or deletions are not the master's
        # Every fixed value the master applied, the job applies again.
        return ({p.key_or_group for p in fixed if id(p) in fixed_plain}
                <= {p.key_or_group for p in job if id(p) in plain})

    def _is_group(self, key: str) -> bool:
        if key not in self.groups:
            self.groups[key] = self.loader.repository.group_exists(key.replace(".", "/"))
        return self.groups[key]

    def _plain(self, parsed: list) -> set[int]:
        """ids of the overrides that may be applied to a composition of the others."""
        from hydra.core.override_parser.types import OverrideType

        def is_plain(p) -> bool:
            key = p.key_or_group
            return (p.type == OverrideType.CHANGE and p.package is None
                    and not p.is_sweep_override() and not p.is_hydra_override()
                    and not key.startswith("hydra.")
                    and not self._is_group(key))

        candidates = [p for p in parsed if is_plain(p)]
        plain = set()
        for p in candidates:
            key = p.key_or_group
            clash = any(q is not p and not self._is_group(q.key_or_group)
                        and _related(key, q.key_or_group) for q in parsed)
            if not clash:
                plain.add(id(p))
        return plain


def _related(a: str, b: str) -> bool:
    """The keys are equal or one lies under the other (``model`` and ``model.depth``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


@contextlib.contextmanager
def mode_composition_reused() -> Iterator[None]:
    """Within this block, Hydra's run or multirun reuses the composition ``Hydra.get_mode`` made.

    Hydra composes the config once to read ``hydra.mode`` and once more for the run or the sweep,
    with ``hydra.mode=<mode>`` appended to the same overrides (``hydra._internal.utils._run_app``).
    The first composition is kept; the second call, if it has exactly those overrides plus only
    ``hydra.mode`` ones, gets it with the appended overrides applied and recorded as Hydra does,
    after Hydra's check of the sweep overrides. A single run (composed in Hydra's run mode) gets
    it only without sweep overrides and without config groups left missing, the two things
    that mode rejects; Hydra's own composition then reports them. Any other call composes as
    usual. A private Hydra method (``Hydra.get_mode``) is replaced for the block.
    """
    from hydra._internal.hydra import Hydra

    hydras_own = Hydra.get_mode

    def get_mode(self, config_name: str | None, overrides: list[str]) -> Any:
        from hydra.types import RunMode

        try:
            cfg = self.compose_config(config_name=config_name, overrides=overrides,
                                      with_log_configuration=False, run_mode=RunMode.MULTIRUN,
                                      validate_sweep_overrides=False)
        except Exception:  # as Hydra's own: the real composition reports the error
            return None
        _ReusedComposition(self.config_loader, config_name, overrides, cfg)
        return cfg.hydra.mode

    Hydra.get_mode = get_mode
    try:
        yield
    finally:
        Hydra.get_mode = hydras_own


class _ReusedComposition:
    """Serves the loader's next ``load_configuration`` from ``cfg`` when it fits, once."""

    def __init__(self, loader: Any, config_name: str | None, overrides: list[str],
                 cfg: DictConfig) -> None:
        self.loader, self.config_name, self.cfg = loader, config_name, cfg
        self.overrides = list(overrides)  # Hydra extends the caller's list afterwards
        self.hydras_own = loader.load_configuration
        self.replaced = vars(loader).get("load_configuration")  # None: the class's method
        loader.load_configuration = self.load_configuration

    def load_configuration(self, config_name: str | None, overrides: list[str], run_mode: Any,
                           from_shell: bool = True,
                           validate_sweep_overrides: bool = True) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.types import RunMode

        if self.replaced is None:  # once: back to what the loader had
            del self.loader.load_configuration
        else:
            self.loader.load_configuration = self.replaced
        n = len(self.overrides)
        parsed = OverridesParser.create(config_loader=self.loader).parse_overrides(
            list(overrides))
        appended = parsed[n:]
        choices = self.cfg.hydra.runtime.choices
        # A single run's composition differs from the multirun one only in rejecting sweeps and
        # config groups left missing (``???``): without either, it is the same.
        same_as_run = (not any(p.is_sweep_override() for p in parsed)
                       and not any(OmegaConf.is_missing(choices, g) for g in choices))
        if not ((run_mode == RunMode.MULTIRUN or (run_mode == RunMode.RUN and same_as_run))
                and from_shell and config_name == self.config_name
                and list(overrides[:n]) == self.overrides
                and all(p.key_or_group == "hydra.mode" and not p.is_sweep_override()
                        and p.type.name == "CHANGE" for p in appended)):
            return self.hydras_own(config_name, overrides, run_mode, from_shell,
                                   validate_sweep_overrides)
        if validate_sweep_overrides:
            ConfigLoaderImpl.validate_sweep_overrides_legal(parsed, run_mode, from_shell)
        cfg = self.cfg
        ConfigLoaderImpl._apply_overrides_to_config(appended, cfg)
        for p in appended:
            cfg.hydra.overrides.hydra.append(p.input_line)
        return cfg
