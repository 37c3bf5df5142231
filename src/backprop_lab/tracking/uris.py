"""What a tracking URI and an experiment name may be, checked before any run exists.

:func:`check_tracking_uri` refuses, naming the value (credentials masked) and what to use:

- a SQLite URI without a file (``sqlite://``, ``sqlite:///:memory:``): the database would live
  in the process's memory, every run would be lost when it exits;
- ``postgresql://`` / ``postgres://`` without a driver: SQLAlchemy 2.1 reads it as psycopg 3,
  which the project does not install; ``postgresql+psycopg2://`` is what works;
- a scheme MLflow has no store for (``foo://bar``), with the supported ones listed.

:func:`check_experiment_name` applies MLflow's own rule (non-empty, at most 500 characters) for
every store, SQLite included (the direct SQLite writer would otherwise accept what a server
refuses).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from backprop_lab.tracking.secrets import mask

#: MLflow's limit on experiment names (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH).
MAX_EXPERIMENT_NAME = 500
#: Schemes MLflow has a tracking store for, as <scheme> or <database>+<driver>.
PLAIN_SCHEMES = ("sqlite", "file", "http", "https", "databricks")
DATABASES = ("postgresql", "mysql", "mssql", "sqlite")
SUPPORTED = ("sqlite:///PATH (or a path ending in .db), http(s)://HOST:PORT (user:password@ "
             "allowed), postgresql+psycopg2://USER@HOST/DB, mysql+pymysql://USER@HOST/DB, "
             "mssql+pyodbc://..., file:///FOLDER, databricks")


def check_tracking_uri(uri: str, source: str = "tracking.uri") -> None:
    """Raise ValueError if ``uri`` cannot keep runs (see the module docstring). ``source``
    names where the URI came from (``tracking.uri`` or ``MLFLOW_TRACKING_URI``)."""
    shown = f"{source}={mask(uri)}"
    if "://" not in uri:
        if uri.strip() in (":memory:", ""):
            raise ValueError(f"{shown}: an in-memory SQLite database keeps nothing once the "
                             "process exits; give a file, e.g. sqlite:///mlflow.db")
        return  # a path: MLflow's file store, or a .db file (resolve_tracking_uri)
    scheme = uri.split("://", 1)[0].lower()
    prefix = scheme.removeprefix("backprop-lab+")
    database = prefix.split("+", 1)[0]
    if database == "sqlite":
        path = uri.split("://", 1)[1]
        if path in ("", "/", "/:memory:", ":memory:") or "mode=memory" in uri:
            raise ValueError(f"{shown}: a SQLite URI without a file path is an in-memory "
                             "database, which keeps nothing once the process exits; give a "
                             "file: sqlite:///mlflow.db (relative) or sqlite:////abs/path.db")
        return
    if prefix in ("postgresql", "postgres"):
        fixed = "postgresql+psycopg2://" + uri.split("://", 1)[1]
        raise ValueError(f"{shown}: name the driver: {mask(fixed)} (psycopg2, from the "
                         "cluster extra; SQLAlchemy reads a bare postgresql:// as psycopg 3, "
                         "which is not installed)")
    if prefix in PLAIN_SCHEMES or database in DATABASES:
        if prefix in ("http", "https") and not urlsplit(uri).hostname:
            raise ValueError(f"{shown}: no host in the server's address "
                             "(http://HOST:PORT)")
        return
    raise ValueError(f"{shown}: unsupported tracking URI scheme {scheme!r}; supported: "
                     f"{SUPPORTED}")


def check_experiment_name(name: str | None, source: str = "tracking.experiment") -> None:
    """MLflow's rule for experiment names, for every store."""
    if name is None or not str(name).strip():
        raise ValueError(f"{source}={name!r}: an experiment needs a name (MLflow refuses an "
                         "empty one)")
    if len(str(name)) > MAX_EXPERIMENT_NAME:
        raise ValueError(f"{source}: {len(name)} characters; MLflow allows at most "
                         f"{MAX_EXPERIMENT_NAME}")
