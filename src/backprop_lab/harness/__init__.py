"""The Hydra app around the engine: configs, one job from config to recorded run, sweeps.

    config       the configuration schema (Hydra structured configs) and its checks
    app          one job: build, train, save, end (``train.py`` calls its ``main``)
    build        from a config to the engine's objects; bad values named by config key
    callbacks    the Hydra callback of the launching process: checks, store, parent run, table
    job_context  what a job knows about itself (folder, overrides, name, sweep)
    progress     the progress bar, the one-line summaries and the sweep's table
    run_outputs  what a job saves (config, weights, history.csv, histograms)
    run_figures  a run's figures, at the end of a single run or later from what it saved
"""
