"""The cures through the config and the CLI: errors named before any run, every diagnostic
recorded for each option, the cures experiment and its paper report on shrunk sizes (slow)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from backprop_lab.engine.history import CLIP_SCALARS, LAYER_METRICS, layer_metric_name
from backprop_lab.harness.build import build
from backprop_lab.harness.config import ConfigError
from tests.test_configs import make
from tests.test_papers_slow import sweep_of


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.residual=true", "model.hidden=[16,8]"],
     r"model\.residual=True: .*same width; got hidden widths \[16, 8\]"),
    (["model.residual=true", "model.hidden=[16]"], r"model\.residual=True: .*at least two"),
    (["model=deep", "model.residual=true", "model.residual_scale=0"],
     r"model\.residual_scale=0\.0: residual_scale must be a finite number > 0"),
    (["optimizer.clip_norm=-1"], r"optimizer\.clip_norm=-1\.0: clip_norm must be a positive"),
    (["model=deep", "model.norm=layer", "jacobian_probes=4"],
     r"jacobian_probes=4: the Jacobian spectrum is measured for plain networks only"),
    (["model=deep", "model.residual=true", "jacobian_probes=4"],
     r"jacobian_probes=4: the Jacobian spectrum is measured for plain networks only"),
])
def test_bad_cure_values_are_named_before_any_run(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build(make(["epochs=2", *overrides]))


def test_bad_norm_lists_the_choices() -> None:
    with pytest.raises(Exception) as info:  # Hydra's composition error, the Enum's in its cause
        make(["model.norm=group"])
    assert "[none, layer, batch]" in f"{info.value} {info.value.__cause__}"


@pytest.mark.parametrize(("cure", "repr_part"), [
    ("residual", "residual x0.15"), ("layer_norm", "layer norm"), ("batch_norm", "batch norm"),
    ("clip", None), ("orthogonal", "orthogonal 1.761"), ("plain", None)])
def test_every_cure_composes_into_the_experiment(cure: str, repr_part: str | None) -> None:
    built = build(make(["experiment=cures", f"cure={cure}", "epochs=2"]))
    assert built.net.sizes[1:-1] == [64] * 50
    if repr_part is not None:
        assert repr_part in repr(built.net)
    assert (built.optimizer.clip_norm == 1.0) == (cure == "clip")


@pytest.mark.slow
def test_each_option_trains_through_the_cli_with_every_diagnostic(tmp_path) -> None:
    """``model.residual=true``, ``model.norm=layer``/``batch`` and ``optimizer.clip_norm`` each
    train a deep network and record every per-layer diagnostic of every layer (finite at
    initialization) and, when clipping, the pre-clip norm and the clipped fraction."""
    sweep = sweep_of(tmp_path, "cures", "activation=tanh", "seed=0",
                     "cure=residual,layer_norm,batch_norm,clip", "model.depth=4",
                     "model.width=8", "epochs=3", "dataset.n_samples=20", "histogram_every=0")
    h = sweep.histories
    assert len(sweep.runs) == 4 and set(sweep.runs["outcome"]) == {"finished"}
    for run_id, sub in h.groupby("run_id", observed=True):
        cure = re.search(r"cure=(\w+)", sweep.runs.set_index("run_id").loc[run_id,
                                                                           "overrides"])[1]
        names = {layer_metric_name(str(m), int(l)) if pd.notna(l) and int(l) > 0 else str(m)
                 for m, l in sub[["metric", "layer"]].drop_duplicates().itertuples(index=False)}
        for metric in LAYER_METRICS:
            for layer in range(1, 6):
                assert layer_metric_name(metric, layer) in names, (cure, metric, layer)
        at_init = sub[(sub["epoch"] == 0) & (sub["metric"] != "update_ratio")]
        assert np.isfinite(at_init["value"].astype(float)).all(), cure
        assert (set(CLIP_SCALARS) <= names) == (cure == "clip"), cure


@pytest.mark.slow
def test_cures_experiment_and_its_report_on_shrunk_sizes(tmp_path) -> None:
    """The whole sweep (3 activations x 6 cures, one seed), shrunk, and the paper report."""
    from backprop_lab.analysis.papers import build_report, write_paper_report
    from backprop_lab.analysis.papers.cures import run_table

    sweep = sweep_of(tmp_path, "cures", "seed=0", "model.depth=3", "model.width=8",
                     "epochs=3", "dataset.n_samples=20", "histogram_every=0")
    per_run = run_table(sweep.runs, sweep.histories)
    assert len(per_run) == 18
    assert set(per_run["cure"]) == {"plain", "orthogonal", "residual", "layer_norm",
                                    "batch_norm", "clip"}
    assert (per_run[["ratio at init", "ratio at end"]] > 0).all().all()
    report = build_report("cures", sweep)
    # a "fails" claim per activation, a "cures" claim per cure, a theory claim per activation
    assert len(report.claims) == 3 * 6 + 3
    files = write_paper_report("cures", sweep, tmp_path / "report", dpi=50)
    names = {p.name for p in files}
    assert {"profiles_grad_norm.png", "val_loss.png", "summary.md"} <= names
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "What each cure changes, against plain" in text
    assert text.count("| tanh | residual |") >= 1


def test_compare_rule_needs_non_overlapping_ranges() -> None:
    from backprop_lab.analysis.papers.cures import compare

    plain = pd.Series([1.0, 2.0, 3.0])
    assert compare(pd.Series([4.0, 5.0, 6.0]), plain) == "higher"
    assert compare(pd.Series([0.1, 0.5, 0.9]), plain) == "lower"
    assert compare(pd.Series([0.5, 2.5, 9.0]), plain) == "no clear change"
    assert compare(pd.Series([np.inf, np.inf, np.inf]), plain) == "higher"
    assert compare(pd.Series([np.nan, 1.0, 1.0]), plain) == "n/a"


def test_vanishing_theory_factor_uses_the_residual_mean_field_and_none_for_norms() -> None:
    """vanishing/theory_factor of a residual network is the residual mean field's (measured
    within 3% on a 256-wide network); normalized networks have no mean field: NaN, not logged."""
    import math

    from backprop_lab.engine.optimizers import make_optimizer
    from backprop_lab.engine.run_summary import measured_factor
    from backprop_lab.engine.training import train
    from backprop_lab.harness.build import theory_factor_of

    base = ["model=deep", "model.depth=20", "model.width=256", "epochs=1"]
    built = build(make([*base, "model.residual=true", "model.residual_scale=0.2"]))
    history = train(built.net, built.dataset, make_optimizer("gd", lr=1e-9), epochs=1).history
    measured = measured_factor(history.layers["delta_std"][0])
    theory = theory_factor_of(built)
    assert theory > 1.05  # the skip path makes delta grow toward the input; plain tanh shrinks
    assert abs(measured / theory - 1) < 0.03, (measured, theory)
    assert math.isnan(theory_factor_of(build(make([*base, "model.norm=layer"]))))
