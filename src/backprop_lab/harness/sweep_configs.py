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
check all share the compositions: the flagship sweep composes once instead of seven times.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


class SweepComposer:
    """``load_sweep_config`` with compositions shared by the jobs of a sweep (module docstring)."""

    def __init__(self, loader: Any) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader = loader
        self.compose = loader.load_sweep_config  # Hydra's own, bound before install replaces it
        self.parser = OverridesParser.create(config_loader=loader)
        self.bases: dict[tuple[str, ...], DictConfig] = {}
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
        base = self.bases.get(rest)
        if base is None:
            self.compositions += 1
            base = self.bases[rest] = self.compose(master_config, list(rest))
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
