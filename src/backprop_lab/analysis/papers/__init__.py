"""The classic papers reproduced as reports: ``python -m backprop_lab.report --paper NAME``.

Each paper module turns a loaded sweep into a :class:`.common.PaperReport` (claims checked
against the data, tables, figure makers); :func:`write_paper_report` writes its figures and
``summary.md``.
"""

from __future__ import annotations

from pathlib import Path

from .common import Claim, PaperReport, draw, paper_markdown

PAPERS = ("glorot_bengio", "he_init_depth", "schoenholz_depth_scale", "dynamical_isometry",
          "cures")


def build_report(paper: str, sweep) -> PaperReport:
    """The report of ``paper`` (one of :data:`PAPERS`) for a loaded sweep; histograms are read
    from the runs' artifacts when the paper needs them."""
    if paper == "glorot_bengio":
        from ..histograms import load_histograms
        from .glorot_bengio import report

        return report(sweep, load_histograms(sweep.uri, sweep.runs))
    if paper == "he_init_depth":
        from .he_init_depth import report

        return report(sweep)
    if paper == "schoenholz_depth_scale":
        from .schoenholz_depth_scale import report

        return report(sweep)
    if paper == "dynamical_isometry":
        from .dynamical_isometry import report

        return report(sweep)
    if paper == "cures":
        from .cures import report

        return report(sweep)
    raise ValueError(f"unknown paper {paper!r}; valid choices: {', '.join(PAPERS)}")


def write_paper_report(paper: str, sweep, out: Path, dpi: int = 120) -> list[Path]:
    """Every figure of the paper's report as ``<out>/<name>.png`` and ``<out>/summary.md``;
    returns the files written."""
    from ..figures import save_figures

    report = build_report(paper, sweep)
    written, links = save_figures(draw(report.figures), out, dpi)
    summary = out / "summary.md"
    summary.write_text(paper_markdown(report, sweep, links), encoding="utf-8")
    written.append(summary)
    return written


__all__ = ["PAPERS", "Claim", "PaperReport", "build_report", "write_paper_report"]
