"""Numbers behind the figures, and the written conclusion, computed from the loaded tables.

Everything here takes the ``runs`` and ``histories`` tables of :mod:`.loading` and returns
DataFrames or text; nothing is hard-coded about what the data should show.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from backprop_lab.engine.activations import ACTIVATIONS
from backprop_lab.engine.run_summary import CHANCE_NOTE, geometric_mean

# Legend order: the registry's display ranks (saturating activations first).
ACTIVATION_ORDER = tuple(sorted(ACTIVATIONS, key=lambda a: ACTIVATIONS[a].display_rank))
RELU_LIKE = ("relu",)
CONFIG_COLUMNS = ("label", "activation", "init", "depth", "n_layers", "width", "sizes")


def chance_levels(runs: pd.DataFrame) -> pd.Series:
    """Per run (indexed by run_id): the chance accuracy its final accuracy is judged against
    (engine/run_summary.py: the majority class's share of the labels; NaN when unknown)."""
    from .loading import run_chance

    levels = {}
    for row in runs.to_dict("records"):
        chance = run_chance(row)
        levels[row["run_id"]] = chance.accuracy if chance is not None else np.nan
    return pd.Series(levels, dtype=float)


def label_order(frame: pd.DataFrame) -> list[str]:
    """Legend order: by activation (saturating ones first), then init."""
    pairs = frame[["label", "activation", "init"]].astype(object).drop_duplicates()
    rank = {a: i for i, a in enumerate(ACTIVATION_ORDER)}
    pairs = pairs.assign(
        _rank=pairs["activation"].map(lambda a: rank.get(a, len(rank))),
        _init=pairs["init"].fillna(""),
    )
    return pairs.sort_values(["_rank", "activation", "_init"])["label"].tolist()


def theory_factors(activation: str, init: str, sizes: str, input_var: float | None = None,
                   kind: str = "mean_field") -> np.ndarray:
    """Predicted delta_std(l) / delta_std(l+1) at initialization (``engine.theory``) for the
    hidden layers l = 1..L-2 of a network with layer widths ``sizes`` (``"2-16-8-1"``):
    element l-1 is the factor of the step from layer l+1 down to layer l. ``kind``:
    ``mean_field`` (the variance map from the data's input variance ``input_var``, 1 when
    unknown) or ``linear`` (the linear regime, E[f'(0)^2]).

    All NaN, with a warning, when theory does not know the pair or the sizes are unknown, so
    that figures can still be drawn without the theoretical line.
    """
    widths = str(sizes).split("-")
    steps = max(len(widths) - 3, 0)
    from backprop_lab.engine.theory import mean_field

    q0 = 1.0 if input_var is None or not np.isfinite(input_var) else float(input_var)
    try:
        theory = mean_field(activation, init, [int(w) for w in widths], input_var=q0)
    except (ValueError, KeyError) as error:
        warnings.warn(f"no theoretical factor for {activation}/{init}/{sizes}: {error}",
                      stacklevel=2)
        return np.full(steps, np.nan)
    factors = theory.std_factors if kind == "mean_field" else theory.linear_factors
    return np.asarray(factors[:steps], dtype=float)


def sort_by_label(frame: pd.DataFrame, *then: str) -> pd.DataFrame:
    """Rows in legend order of ``label`` (see :func:`label_order`), then by ``then`` columns."""
    order = {label: i for i, label in enumerate(label_order(frame))}
    return frame.sort_values(
        ["label", *then],
        key=lambda s: s.astype(object).map(order) if s.name == "label" else s,
    ).reset_index(drop=True)


def at_epochs(histories: pd.DataFrame) -> pd.DataFrame:
    """Rows at initialization (epoch 0) and at each run's last epoch, with a ``when`` column
    (``"init"`` / ``"final"``); a run that stopped early (diverged) ends where it stopped."""
    last = histories.groupby("run_id")["epoch"].transform("max")
    init = histories[histories["epoch"] == 0].assign(when="init")
    final = histories[histories["epoch"] == last].assign(when="final")
    return pd.concat([init, final], ignore_index=True)


def gradient_ratios(histories: pd.DataFrame, metric: str = "grad_norm") -> pd.DataFrame:
    """Per run, ``metric`` of layer 1 over ``metric`` of layer L (the output layer), at
    initialization and at the end. Columns: run_id, seed, config columns, when, epoch,
    value_first, value_last (the two norms), ratio, log10_ratio. A ratio of 1e-3 means the
    first layer gets a thousandth of the output layer's gradient."""
    rows = at_epochs(histories[histories["metric"] == metric])
    first = rows[rows["layer"] == 1]
    top = rows[rows["layer"] == rows["n_layers"]]
    keys = ["run_id", "when"]
    merged = first.merge(top[[*keys, "value"]], on=keys, suffixes=("_first", "_last"))
    merged["ratio"] = merged["value_first"] / merged["value_last"]
    with np.errstate(divide="ignore", invalid="ignore"):
        merged["log10_ratio"] = np.log10(merged["ratio"].astype(float))
    columns = ["run_id", "seed", *CONFIG_COLUMNS, "when", "epoch", "value_first", "value_last",
               "ratio", "log10_ratio"]
    return merged[columns].reset_index(drop=True)


def layer_factors(histories: pd.DataFrame, metric: str = "delta_std") -> pd.DataFrame:
    """Measured per-layer factor of ``metric`` at initialization next to the theory (mean
    field: ``theory``; the linear regime: ``linear``).

    For each run, the geometric mean of metric(l) / metric(l+1) over the hidden-to-hidden steps
    l = 1..L-2 (the output layer's error is not multiplied by f', so the step into it is left
    out), and the same mean of the predicted factors; then geometric means over the runs of a
    configuration (label, depth and layer sizes). Columns: label, activation, init, depth,
    sizes, runs,
    measured, theory, linear.
    """
    init = histories[(histories["metric"] == metric) & (histories["epoch"] == 0)]
    rows = []
    for run_id, run in init.groupby("run_id"):
        n_layers = int(run["n_layers"].iloc[0])
        by_layer = run.set_index("layer")["value"].astype(float)
        steps = [by_layer.get(l) / by_layer.get(l + 1) for l in range(1, n_layers - 1)
                 if l in by_layer.index and l + 1 in by_layer.index]
        if not steps:
            continue
        first = run.iloc[0]
        q0 = first["input_var"] if "input_var" in run.columns else None
        theory = theory_factors(first["activation"], first["init"], first["sizes"], q0)
        linear = theory_factors(first["activation"], first["init"], first["sizes"], q0,
                                kind="linear")
        rows.append({"run_id": run_id, "label": first["label"], "activation": first["activation"],
                     "init": first["init"], "depth": first["depth"], "sizes": first["sizes"],
                     "factor": geometric_mean(steps), "theory": geometric_mean(theory),
                     "linear": geometric_mean(linear)})
    columns = ["label", "activation", "init", "depth", "sizes", "runs", "measured", "theory",
               "linear"]
    if not rows:
        return pd.DataFrame(columns=columns)
    per_run = pd.DataFrame(rows).astype({"label": object, "activation": object, "init": object,
                                         "sizes": object})
    table = per_run.groupby(["label", "activation", "init", "depth", "sizes"],
                            as_index=False).agg(
        runs=("factor", "size"), measured=("factor", geometric_mean),
        theory=("theory", geometric_mean), linear=("linear", geometric_mean),
    )
    return sort_by_label(table, "depth")[columns]


def ratios_by_depth(ratios: pd.DataFrame) -> pd.DataFrame:
    """:func:`gradient_ratios` per configuration and depth: geometric means over seeds, at
    initialization and after training, in legend order."""
    when = {"init": "at initialization", "final": "after training"}
    table = ratios.astype({"label": object, "activation": object, "init": object}).assign(
        when=ratios["when"].map(when)
    ).groupby(["label", "activation", "init", "depth", "when"], as_index=False)["ratio"].agg(
        geometric_mean
    )
    table = table.pivot(index=["label", "activation", "init", "depth"], columns="when",
                        values="ratio").reset_index()
    table.columns.name = None
    return sort_by_label(table, "depth")[["label", "depth", *when.values()]]


def final_accuracy(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Final accuracy per configuration and depth: mean, min, max over seeds and the number of
    runs. Uses ``val/accuracy`` when the runs have a validation set, else ``train/accuracy``;
    returns (table, metric used)."""
    metric = "val/accuracy" if runs["val/accuracy"].notna().any() else "train/accuracy"
    table = runs.groupby(["label", "activation", "init", "depth"], as_index=False).agg(
        runs=(metric, "size"), mean=(metric, "mean"), min=(metric, "min"), max=(metric, "max")
    )
    return sort_by_label(table, "depth"), metric


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _power_of_ten(ratio: float) -> str:
    if not np.isfinite(ratio) or ratio <= 0:
        return "0 (no gradient)" if ratio == 0 else "n/a"
    exponent = math.log10(ratio)
    if abs(exponent) < 1:
        return f"{ratio:.2g}x"
    return f"10^{exponent:+.1f}"


def _verdict(ratio: float) -> str:
    if not np.isfinite(ratio) or ratio <= 0:
        return "no gradient reaches layer 1"
    if ratio < 0.1:
        return "vanishes"
    if ratio > 10:
        return "explodes"
    factor = max(ratio, 1 / ratio)
    return f"survives (within a factor of {math.ceil(factor * 10) / 10:g})"


def conclusions(runs: pd.DataFrame, histories: pd.DataFrame) -> list[str]:
    """Plain-language findings, one sentence per configuration and a few comparisons, all
    computed from the tables (no expected result is written in here)."""
    if runs.empty or histories.empty:
        return ["No runs with histories were found: nothing to conclude."]
    lines: list[str] = []
    ratios = gradient_ratios(histories)
    factors = layer_factors(histories)
    depths = runs["depth"].dropna()
    deepest = int(depths.max()) if not depths.empty else None
    for label in label_order(runs):
        sub = ratios[(ratios["label"] == label) & (ratios["depth"] == deepest)]
        if sub.empty:
            continue
        at_init = geometric_mean(sub.loc[sub["when"] == "init", "ratio"])
        at_end = geometric_mean(sub.loc[sub["when"] == "final", "ratio"])
        first_init = geometric_mean(sub.loc[sub["when"] == "init", "value_first"])
        first_end = geometric_mean(sub.loc[sub["when"] == "final", "value_first"])
        last_init = geometric_mean(sub.loc[sub["when"] == "init", "value_last"])
        last_end = geometric_mean(sub.loc[sub["when"] == "final", "value_last"])
        n_layers = int(sub["n_layers"].iloc[0])
        ids = set(sub["run_id"])
        stuck = (int(runs.loc[runs["run_id"].isin(ids), "at_chance"].eq(True).sum())
                 if "at_chance" in runs else 0)
        text = (
            f"**{label}**, depth {deepest} ({n_layers} weight layers, "
            f"{_runs(len(ids))}): at initialization the layer-1 gradient norm is "
            f"{_power_of_ten(at_init)} of the layer-{n_layers} (output) gradient norm, so the "
            f"gradient {_verdict(at_init)}; "
        )
        norms = (f"layer 1 {first_init:.2g} -> {first_end:.2g}, layer {n_layers} "
                 f"{last_init:.2g} -> {last_end:.2g}")
        if stuck and stuck == len(ids):
            text += (f"after training {'it is' if stuck == 1 else 'all of them are'} still at "
                     f"chance accuracy, so the ratio after training ({_power_of_ten(at_end)}) "
                     f"is no recovery (gradient norms, initialization -> end: {norms}).")
        else:
            text += (f"after training it is {_power_of_ten(at_end)} (gradient norms, "
                     f"initialization -> end: {norms})"
                     + (f"; {stuck} of {len(ids)} runs ended at chance accuracy." if stuck
                        else "."))
        factor = factors[(factors["label"] == label) & (factors["depth"] == deepest)]
        if len(factor) == 1:
            measured, theory = factor["measured"].iloc[0], factor["theory"].iloc[0]
            linear = factor["linear"].iloc[0]
            text += f" Measured per-layer factor of std(δ) at init: {measured:.3g}"
            text += (f" (mean field {theory:.3g}, linear regime {linear:.3g})."
                     if np.isfinite(theory) else ".")
        lines.append(text)
    if ratios["depth"].nunique() > 1:
        by_depth = ratios_by_depth(ratios)
        depths = sorted(int(d) for d in by_depth["depth"].unique())
        parts = [
            f"{label} " + ", ".join(_power_of_ten(v) for v in
                                    sub.set_index("depth")["at initialization"].reindex(depths))
            for label, sub in by_depth.groupby("label", sort=False)
        ]
        lines.append(f"Layer-1 / layer-L gradient norm at initialization for depths "
                     f"{', '.join(map(str, depths))}: " + "; ".join(parts) + ".")
    accuracy, metric = final_accuracy(runs)
    at_depth = accuracy[accuracy["depth"] == deepest]
    if not at_depth.empty:
        ranked = at_depth.sort_values("mean", ascending=False)
        listing = ", ".join(
            f"{r.label} {r.mean:.3f}" + (f" [{r.min:.3f}, {r.max:.3f}]" if r.runs > 1 else "")
            for r in ranked.itertuples()
        )
        lines.append(f"Final {metric} at depth {deepest} (mean [min, max] over seeds): "
                     f"{listing}.")
    depths = sorted(accuracy["depth"].dropna().unique())
    if len(depths) > 1:
        shallow = int(depths[0])
        parts = []
        for label in label_order(accuracy):
            sub = accuracy[accuracy["label"] == label].set_index("depth")["mean"]
            if shallow in sub.index and deepest in sub.index:
                parts.append(f"{label} {sub[shallow]:.3f} -> {sub[deepest]:.3f}")
        if parts:
            lines.append(f"From depth {shallow} to depth {deepest}, final {metric} goes: "
                         + "; ".join(parts) + ".")
    if "at_chance" in runs and runs["at_chance"].eq(True).any():
        lines.append(CHANCE_NOTE[0].upper() + CHANCE_NOTE[1:] + ".")
    failed = runs[runs["outcome"].notna() & (runs["outcome"] != "finished")]
    if not failed.empty:
        lines.append(f"{len(failed)} of {len(runs)} runs did not finish normally: "
                     + ", ".join(f"{r.run_name} ({r.outcome})" for r in failed.itertuples())
                     + ".")
    return lines


def conclusion_markdown(runs: pd.DataFrame, histories: pd.DataFrame) -> str:
    """:func:`conclusions` as a markdown bullet list under a heading (for notebooks)."""
    return "## Conclusion\n\n" + "\n".join(f"- {line}" for line in conclusions(runs, histories))


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3g") -> str:
    """A DataFrame as a GitHub markdown table (without needing ``tabulate``)."""

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "" if np.isnan(value) else format(value, floatfmt)
        return "" if value is None or value is pd.NA else str(value)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *body])


def summary_markdown(sweep, figures: dict[str, str] | None = None) -> str:
    """The report's markdown: what was loaded, the conclusion, the tables, the figures.

    ``sweep`` is a :class:`.loading.SweepData`; ``figures`` maps a figure title to its path
    relative to the markdown file.
    """
    runs, histories = sweep.runs, sweep.histories
    names = getattr(sweep, "sweep_names", None) or ([sweep.sweep_name] if sweep.sweep_id
                                                     else [])
    ids = getattr(sweep, "sweep_ids", None) or ([sweep.sweep_id] if sweep.sweep_id else [])
    title = (f"sweeps {', '.join(f'`{n}`' for n in names)}" if len(names) > 1
             else f"sweep `{names[0]}`" if names else "all runs of the experiment")
    out = [f"# Vanishing-gradient report: {title}", ""]
    out.append(f"- store: `{sweep.uri}`")
    if ids:
        out.append(f"- sweep run id{'s' if len(ids) > 1 else ''}: "
                   + ", ".join(f"`{i}`" for i in ids))
    differences = getattr(sweep, "differences", None)
    if differences:
        from .loading import describe_differences

        what = "sweeps" if len(ids) > 1 else "runs"
        out.append(f"- **the {what} differ in settings besides the ones compared**: "
                   f"{describe_differences(differences)}")
    statuses = ", ".join(f"{k} {v}" for k, v in runs["status"].value_counts().items())
    out.append(f"- runs: {len(runs)} ({statuses})")
    configs = runs.groupby("label")["run_id"].size()
    out.append("- configurations: " + ", ".join(f"{k} x{v}" for k, v in configs.items()))
    depths = sorted(int(d) for d in runs["depth"].dropna().unique())
    out.append(f"- depths (hidden layers): {depths}")
    out += ["", "## Conclusion", ""]
    out += [f"- {line}" for line in conclusions(runs, histories)]
    factors = layer_factors(histories)
    if not factors.empty:
        out += ["", "## Per-layer factor of std(δ) at initialization", "",
                "Geometric mean of std(δ^l) / std(δ^(l+1)) over hidden layers; theory: mean "
                "field, sqrt(n · Var(W) · E[f'(sqrt(q^l) z)^2]) with q^l the variance map "
                "from the input; linear: the same with E[f'(0)^2] (the linear regime).", "",
                markdown_table(factors)]
    ratios = gradient_ratios(histories)
    if not ratios.empty:
        table = ratios_by_depth(ratios)
        out += ["", "## Layer-1 / layer-L gradient norm (geometric mean over seeds)", "",
                markdown_table(table)]
    accuracy, metric = final_accuracy(runs)
    out += ["", f"## Final {metric}", "", markdown_table(accuracy)]
    if figures:
        out += ["", "## Figures", ""]
        out += [f"### {name}\n\n![{name}]({path})\n" for name, path in figures.items()]
    run_columns = ["run_name", "label", "depth", "seed", "status", "outcome", "train/loss",
                   "train/accuracy", "val/accuracy", "at_chance", "vanishing/log10_ratio_init",
                   "vanishing/log10_ratio_end", "run_id"]
    run_columns = [c for c in run_columns if c in runs.columns]
    out += ["", "## Runs", "", markdown_table(runs[run_columns])]
    return "\n".join(out) + "\n"
