"""Column names shared by the analysis tables, importable without pandas or MLflow."""

# Columns repeated on every row of the histories table to identify the run.
ID_COLUMNS = (
    "run_id",
    "run_name",
    "label",
    "activation",
    "init",
    "depth",
    "n_layers",
    "width",
    "sizes",
    "seed",
    "dataset",
    "optimizer",
    "lr",
    "input_var",
)
