"""Images with a step, stored as MLflow's ``log_image(image, key=, step=)`` stores them.

The MLflow UI's image charts (with a step slider) read a run's images from its artifacts, by
file name, when the run has the tag ``mlflow.loggedImages``; MLflow 3.17's client writes, per
image,

    images/<key, "/" as "~">+step+<step>+timestamp+<ms>+<uuid>.png              (full size)
    images/<key, "/" as "~">+step+<step>+timestamp+<ms>+<uuid>+compressed.webp  (<= 256 px)

:func:`write_step_image` makes both files from a PNG in a local folder, which is then logged
like any other artifact folder (``ArtifactSpec(folder, "images")``): the same files reach the
store whether it is written directly (SQLite), through the REST API or with MLflow's client,
and mlflow is not imported.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

IMAGES_DIR = "images"  # in the run's artifacts (MLflow's folder for keyed images)
LOGGED_IMAGES_TAG = "mlflow.loggedImages"  # mlflow.utils.mlflow_tags.MLFLOW_LOGGED_IMAGES
COMPRESSED_SIZE = 256  # mlflow.tracking.multimedia.COMPRESSED_IMAGE_SIZE
_KEY = re.compile(r"^[a-zA-Z0-9_\-./ ]+$")  # the keys MLflow's log_image accepts


def image_stem(key: str, step: int, timestamp_ms: int) -> str:
    """The file name (without extension) MLflow gives an image of ``key`` at ``step``."""
    if not _KEY.match(key):
        raise ValueError(f"image key {key!r}: only letters, digits, _ - . / and spaces")
    return f"{key.replace('/', '~')}+step+{int(step)}+timestamp+{int(timestamp_ms)}+{uuid.uuid4()}"


def write_step_image(png: Path, folder: Path, key: str, step: int, timestamp_ms: int) -> Path:
    """Move ``png`` into ``folder`` under MLflow's name for (key, step), beside its compressed
    copy; returns the PNG's new path."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    stem = image_stem(key, step, timestamp_ms)
    target = folder / f"{stem}.png"
    png.replace(target)
    with Image.open(target) as image:
        width, height = image.size
        scale = COMPRESSED_SIZE / max(width, height)
        small = image.resize((max(1, int(width * scale)), max(1, int(height * scale))))
        small.save(folder / f"{stem}+compressed.webp")
    return target
