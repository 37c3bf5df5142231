"""``python -m backprop_lab.report``: the report command, :mod:`backprop_lab.analysis.report`
under a shorter name (``--paper glorot_bengio`` / ``he_init_depth`` for a paper's figures and
claims)."""

from backprop_lab.analysis.report import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    raise SystemExit(main())
