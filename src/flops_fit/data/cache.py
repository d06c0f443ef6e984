"""The on-disk cache: where it lives, content keys, atomic writes and cross-process locks."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from flops_fit.artifacts import atomic_path
from flops_fit.errors import FlopsFitError

# Bump when the token-stream layout or tokenization rules change: old entries are then ignored.
CACHE_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$FLOPS_FIT_CACHE``, else ``~/.cache/flops_fit``; created if missing."""
    if cache_dir is not None:
        root, what = Path(cache_dir), f"cache_dir={cache_dir}"
    elif os.environ.get("FLOPS_FIT_CACHE"):
        root, what = Path(os.environ["FLOPS_FIT_CACHE"]), f"FLOPS_FIT_CACHE={os.environ['FLOPS_FIT_CACHE']}"
    else:
        root, what = Path("~/.cache/flops_fit").expanduser(), "the default cache ~/.cache/flops_fit"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlopsFitError(f"{what} cannot be created ({e.strerror}); set FLOPS_FIT_CACHE to a writable folder") from None
    return root


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hex digest of a JSON-able object, independent of dict ordering."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_identity(paths: list[Path]) -> list[list[Any]]:
    """[path, size, mtime_ns] per file: a cheap fingerprint of a corpus on disk."""
    out = []
    for p in paths:
        st = p.stat()
        out.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return out


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "data"


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=str))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``<path>.lock`` so parallel jobs build a cache entry once and never see half of one."""
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        yield
