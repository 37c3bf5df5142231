"""Credentials kept out of everything a run records or prints.

A secret reaches backprop-lab in three ways: in the user info of a URI
(``postgresql+psycopg2://user:PW@host/db``, ``http://user:PW@host:5050``), in a query parameter
of a URI (``...?password=PW``, ``?token=PW``, a signed URL's ``sig=``), or in MLflow's documented
environment variables (``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN``, ...). Everything
that is written for a person or into a store goes through :func:`mask`:

- the user info of every ``scheme://...@`` becomes ``***`` (``http://***@host:5050``): a user
  name alone may be a token (``https://TOKEN@host``);
- the values of secret-looking query parameters become ``***``;
- any text equal to a registered secret (the environment's, and the passwords of the URIs seen
  by :func:`register_uri`, percent-decoded too) becomes ``***``.

Where it is applied: params and tags (``store.text``, for every backend), the job's
``config.yaml``, ``.hydra/*.yaml``, ``summary.json``, the sweep's ``multirun.yaml`` and
``runs.csv`` (:func:`mask_file`), log records (:func:`install_log_masking`) and the
process's stdout and stderr (:func:`install_output_masking`: progress lines, error messages,
tracebacks). The secret itself stays where it is needed: in the URI the store is opened with.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from urllib.parse import unquote, urlsplit

MASK = "***"
#: MLflow's environment variables that hold a secret (never logged, masked where seen).
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
              "MLFLOW_TRACKING_CLIENT_CERT_KEY", "AWS_SECRET_ACCESS_KEY",
              "AZURE_STORAGE_ACCESS_KEY", "PGPASSWORD")
MIN_SECRET = 4  # shorter registered values would mask ordinary words

# scheme://userinfo@ : userinfo runs to the last "@" before a "/", whitespace or quote. Hydra
# escapes ":" in the overrides it writes (postgresql\://bob\:PW@host): "\:" counts as ":".
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://)(?P<info>[^/\s'\"<>]*)@")
_QUERY = re.compile(r"(?P<key>[?&;](?:[A-Za-z0-9_.\-]*(?:pass(?:word)?|pwd|token|secret|"
                    r"api[_-]?key|access[_-]?key|sig(?:nature)?|credential|auth)"
                    r"[A-Za-z0-9_.\-]*)=)(?P<value>[^&;\s'\"#]+)", re.IGNORECASE)

_secrets: set[str] = set()


def register(secret: str | None) -> None:
    """Mask ``secret`` wherever it shows from now on (in this process)."""
    if secret and len(secret) >= MIN_SECRET and secret != MASK:
        _secrets.add(secret)
        decoded = unquote(secret)
        if len(decoded) >= MIN_SECRET:
            _secrets.add(decoded)


def register_environment(environ=os.environ) -> None:
    for name in SECRET_ENV:
        register(environ.get(name))


def register_uri(uri: str | None) -> None:
    """Register the password (and a user info without one: a token) of ``uri``."""
    if not uri or "://" not in uri:
        return
    info = _userinfo(uri)
    if info:
        user, _, password = info.partition(":")
        register(password or user)


def _userinfo(uri: str) -> str:
    netloc = uri.split("://", 1)[1].split("/", 1)[0]
    return netloc.rpartition("@")[0]


def credentials(uri: str) -> tuple[str, str] | None:
    """(user, password) of an ``http(s)://user:pw@host`` URI, percent-decoded (None: none)."""
    parts = urlsplit(uri)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def without_credentials(uri: str) -> str:
    """``uri`` with its user info removed (what is sent as the address once the credentials
    travel in a header)."""
    info = _userinfo(uri) if "://" in uri else ""
    if not info:
        return uri
    return uri.replace(info + "@", "", 1)


def has_secret(text: str) -> bool:
    return (("@" in text and "//" in text) or "=" in text and _QUERY.search(text) is not None
            or any(s in text for s in _secrets))


def mask(value):
    """``value`` (str; other types are returned as they are) with every secret as ``***``."""
    if not isinstance(value, str) or not value:
        return value
    if "//" in value and "@" in value:
        value = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@" if m["info"] else m[0], value)
    if "=" in value:
        value = _QUERY.sub(lambda m: m["key"] + MASK, value)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in value:
            value = value.replace(secret, MASK)
    return value


def mask_tree(tree):
    """A plain config (dicts, lists, scalars) with every string masked."""
    if isinstance(tree, dict):
        return {k: mask_tree(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(mask_tree(v) for v in tree)
    return mask(tree)


def mask_file(path: Path) -> bool:
    """Rewrite a text file with its secrets masked (atomically); True if it changed."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    masked = mask(text)
    if masked == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.masked")
    tmp.write_text(masked)
    os.replace(tmp, path)
    return True


def mask_files(folder: Path, pattern: str = "*.yaml") -> None:
    for path in sorted(folder.glob(pattern)):
        mask_file(path)


# -- logging and the process's output --------------------------------------------------------


def install_log_masking() -> None:
    """Mask every log record of this process as it is made (message, arguments, traceback)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "masks_secrets", False):
        return

    def masked_record(*args, **kwargs):
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it itself
            return record
        if has_secret(message):
            record.msg, record.args = mask(message), ()
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            if has_secret(text):
                record.exc_text = mask(text)
        return record

    masked_record.masks_secrets = True
    logging.setLogRecordFactory(masked_record)


class MaskedStream(io.TextIOBase):
    """A text stream that masks what is written to it and passes it on."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(mask(text) if has_secret(text) else text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install_output_masking() -> None:
    """Mask what this process writes to sys.stdout and sys.stderr (and every log record)."""
    register_environment()
    install_log_masking()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, MaskedStream):
            setattr(sys, name, MaskedStream(stream))
