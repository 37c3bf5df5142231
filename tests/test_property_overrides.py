"""Property: whatever overrides a user types, the command either exits non-zero naming the bad
key before any run exists, or its run ends FINISHED, or FAILED with a reason. Never a
traceback, never a run left RUNNING, and never a password or token in anything printed,
stored or saved: tracking URIs (credentials, schemes, paths, in-memory SQLite), experiment
names (empty, at MLflow's 500-character limit and past it) and a user's own key holding a URI
with credentials are drawn too.

Hypothesis draws combinations of valid and invalid values for every key of the
configuration table (docs/running.md). Most examples go through the real entry point in this process
(``app.main`` with ``sys.argv``: Hydra, the callbacks, the job, exactly as ``train.py``), which
costs about 0.3 s each; a few spawn ``train.py`` itself. ``-m slow`` runs many more of both.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import TRAIN, cli_env

SECRET = "Pr0pS3cret"
# key -> (valid values, invalid values), as typed on the command line.
VALUES: dict[str, tuple[list[str], list[str]]] = {
    "activation": (["sigmoid", "tanh", "relu", "leaky_relu", "softsign", "identity"],
                   ["swish", "1"]),
    "seed": (["0", "7", "4294967295"], ["-1", "abc", "1.5", "99999999999999999999999"]),
    "epochs": (["0", "1", "3"], ["-1", "10000000000", "abc", "2.5"]),
    "rng": (["generator", "legacy"], ["mt19937", "0"]),
    "dtype": (["float64", "float32"], ["float16", "int"]),
    "threads": (["1", "2", "null"], ["0", "-2", "x"]),
    "diagnostics": (["true", "false"], ["maybe", "2"]),
    "histogram_every": (["0", "1", "100"], ["-1", "x"]),
    "progress": (["false"], ["sometimes"]),
    "figures": (["false", "null", "true"], ["perhaps"]),
    "dataset": (["spiral", "moons", "circles", "xor", "blobs", "digits", "breast_cancer"],
                ["mnist2", "iris"]),
    "dataset.n_samples": (["5", "30", "null"], ["0", "-5", "x", "1000000000000"]),
    "dataset.noise": (["0", "0.1", "null", "1000"], ["-0.1", "x", "nan", "inf", "1e300"]),
    "dataset.val_fraction": (["0", "0.2", "0.5"], ["1", "-0.1", "1.5", "x"]),
    "model": (["mlp", "deep"], ["cnn"]),
    "model.hidden": (["[4]", "[8,4]", "[]"], ["[0]", "[-3]", "[a]", "[100000000,100000000]"]),
    "model.depth": (["1", "2"], ["0", "-1", "100000000"]),
    "model.width": (["4", "8"], ["0", "-4", "x", "100000000000"]),
    "model.init": (["auto", "he", "lecun", "xavier_uniform", "standard", "gaussian", "orthogonal"],
                   ["zeros", "x"]),
    "model.sigma_b2": (["0", "0.05"], ["-1", "nan", "x"]),
    "model.output": (["auto", "sigmoid_bce", "softmax_ce", "mse"], ["hinge"]),
    "optimizer": (["gd", "sgd", "momentum", "adam"], ["rmsprop"]),
    "optimizer.lr": (["0.01", "0.5", "1e6"], ["0", "-1", "x", "nan"]),
    "optimizer.batch_size": (["null", "1", "16"], ["0", "-1", "x"]),
    "optimizer.weight_decay": (["0", "0.01"], ["-1", "x"]),
    "tracking": (["mlflow", "none"], ["wandb"]),
    "tracking.experiment": (["prop", "other-exp", "e" * 500], ["''", "' '", "e" * 501]),
    # {db}: the example's store. Every secret is SECRET: it must show nowhere (check_example).
    "tracking.uri": (["sqlite:///{db}", "{db}"],
                     ["sqlite://", "sqlite:///:memory:", ":memory:", "postgresql://u:"
                      f"{SECRET}@h/db", f"foo://u:{SECRET}@bar", f"http://u:{SECRET}@127.0.0.1:9",
                      f"https://{SECRET}@127.0.0.1:9/x"]),
    # A key of the user's own (Hydra's +): a URI with credentials, recorded as a param.
    "+note": ([f"postgresql+psycopg2://bob:{SECRET}@db.example/x",
               f"http://u:{SECRET}@h:1/p", f"'s3://b/k?token={SECRET}'"], []),
}
GROUPS = {"dataset", "model", "optimizer", "tracking"}


@st.composite
def overrides(draw) -> list[tuple[str, str]]:
    """A few keys (epochs always: the default 1000 would make examples slow), each with a
    valid or an invalid value; groups first, as a user would type them."""
    keys = draw(st.lists(st.sampled_from(sorted(set(VALUES) - {"epochs"})), min_size=0,
                         max_size=5, unique=True))
    chosen = []
    for key in ["epochs", *keys]:
        valid, invalid = VALUES[key]
        bad = draw(st.booleans()) if key != "epochs" else draw(st.integers(0, 4)) == 0
        bad = bad and bool(invalid)
        chosen.append((key, draw(st.sampled_from(invalid if bad else valid))))
    if "figures" not in keys:
        chosen.append(("figures", "false"))  # figures take a second or two
    return sorted(chosen, key=lambda kv: kv[0] not in GROUPS)


def run_in_process(args: list[str]) -> tuple[int, str]:
    """``train.py ARGS`` through the real entry point in this process: (exit status, output)."""
    from backprop_lab.harness.app import main

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM,
                                                       signal.SIGHUP)}
    argv, sys.argv = sys.argv, ["train.py", *args]
    out = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # anything escaping main() is what a user would see raw
        import traceback

        out.write("Traceback (escaped main):\n" + "".join(traceback.format_exception(exc)))
        code = 99
    finally:
        sys.argv = argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, out.getvalue()


def run_cli(args: list[str], cwd: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(TRAIN), *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def store_runs(db: Path) -> list[tuple[str, str | None]]:
    """(status, failure reason) of every run in the store (none if there is no store)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(
            "SELECT r.status, t.value FROM runs AS r LEFT JOIN tags AS t ON"
            " t.run_uuid = r.run_uuid AND t.key = 'backprop_lab.failure_reason'").fetchall()


def check_example(chosen: list[tuple[str, str]], runner) -> None:
    with tempfile.TemporaryDirectory(prefix="prop-") as tmp:
        folder = Path(tmp)
        db = folder / "store" / "mlflow.db"
        args = [f"{k}={v.format(db=db)}" for k, v in chosen] + [
            "progress=false", f"hydra.run.dir={folder / 'run'}"]
        if "tracking.uri" not in dict(chosen):
            args.append(f"tracking.uri=sqlite:///{db}")
        if ("progress", "sometimes") in chosen:
            args.remove("progress=false")
        code, output = runner(args) if runner is run_in_process else runner(args, folder)
        context = f"train.py {' '.join(args)}\nexit {code}\n{output[-3000:]}"
        assert "Traceback" not in output, context
        # No secret in anything printed, stored or saved (tracking/secrets.py).
        assert SECRET not in output, context
        for path in folder.rglob("*"):
            assert not path.is_file() or SECRET.encode() not in path.read_bytes(), (path, context)
        runs = store_runs(db)
        assert all(status != "RUNNING" for status, _ in runs), context
        if code == 0:
            tracked = ("tracking", "none") not in chosen
            assert [status for status, _ in runs] == (["FINISHED"] if tracked else []), context
            return
        if runs:  # the run exists: it failed or diverged, with a reason
            assert [status for status, _ in runs] == ["FAILED"], context
            assert runs[0][1], context
            return
        # Rejected before any run: the message names one of the keys drawn.
        names = {name for key, _ in chosen for name in (key, key.rsplit(".", 1)[-1])}
        error = output.lower()
        assert any(name.lower() in error for name in names) or "failed:" in error, context


# No "explain" phase: it traces the code, and Hydra, seeing a tracer (a debugger, it thinks),
# then re-raises errors with their tracebacks instead of printing its message.
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])


@settings(max_examples=40, derandomize=True, **SETTINGS)
@given(overrides())
def test_any_overrides_end_cleanly_in_process(chosen):
    check_example(chosen, run_in_process)


@settings(max_examples=8, derandomize=True, **SETTINGS)
@given(overrides())
def test_any_overrides_end_cleanly_through_the_cli(chosen):
    check_example(chosen, run_cli)


@pytest.mark.slow
@settings(max_examples=400, **SETTINGS)
@given(overrides())
def test_any_overrides_end_cleanly_in_process_many(chosen):
    check_example(chosen, run_in_process)


@pytest.mark.slow
@settings(max_examples=60, **SETTINGS)
@given(overrides())
def test_any_overrides_end_cleanly_through_the_cli_many(chosen):
    check_example(chosen, run_cli)
