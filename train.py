"""Train one network, or sweep many, with Hydra configs and MLflow tracking.

    python train.py                                  # the reference notebook's network
    python train.py -m activation=sigmoid,tanh,relu  # one MLflow parent run, three children
    python train.py -m experiment=vanishing_gradients
    python train.py --help                           # every config group and key

Configs: conf/ (groups) and experiments/ (named studies). All the work happens in
backprop_lab.harness.app.main, also installed as the `backprop-train` console script.
"""

import sys
from pathlib import Path

try:
    try:
        from backprop_lab.harness.app import main
    except ModuleNotFoundError:  # running from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
        from backprop_lab.harness.app import main
except KeyboardInterrupt:  # Ctrl-C while importing: nothing exists yet
    sys.stderr.write("\nInterrupted by SIGINT: stopped before any run was created.\n")
    raise SystemExit(130) from None

if __name__ == "__main__":
    main()
