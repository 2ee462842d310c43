"""Where smto finds raw datasets and where it writes files derived from them.

Raw data (e.g. the MNIST IDX files) lives in the *data directory*: the explicit option
(``--data-dir`` / a ``data_dir`` argument), else the ``SMTO_DATA`` environment variable, else
``$XDG_CACHE_HOME/smto`` (``~/.cache/smto`` when ``XDG_CACHE_HOME`` is unset).

Derived files (built Multi-MNIST sets, ...) go to the *cache directory*: the explicit option,
else ``SMTO_CACHE``, else ``<data dir>/cache`` when that can be written, else
``$XDG_CACHE_HOME/smto/cache``. The last fallback exists because a shared data directory is
often read-only (as ``../shared/data`` is on the development machine): derived files are then
written to the user's own cache instead of next to the raw data.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from smto.errors import ConfigError, MissingError

DATA_ENV = "SMTO_DATA"
CACHE_ENV = "SMTO_CACHE"


def user_cache_root() -> Path:
    """``$XDG_CACHE_HOME/smto``, or ``~/.cache/smto`` when ``XDG_CACHE_HOME`` is unset or empty."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "smto"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding raw datasets: ``explicit``, else ``$SMTO_DATA``, else the user cache.

    The directory is not created here (it may be read-only or not exist yet); loaders create
    subfolders only where they need to download into it.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_root()


def is_writable_dir(path: Path) -> bool:
    """Whether ``path`` is (or can be created as) a directory we should write into.

    A directory whose permission bits grant nobody write access (``r-x``) counts as
    read-only even where the process could write anyway (as root): such a directory was
    marked read-only on purpose. A missing directory is judged by its nearest existing
    ancestor and created when that ancestor is writable.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return False
    if not probe.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return False
    if probe != path:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
    return path.is_dir()


def cache_dir(
    explicit: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
) -> Path:
    """The directory for derived files, created if needed.

    Order: ``explicit``, else ``$SMTO_CACHE``, else ``<data_dir(data)>/cache`` when that is
    writable, else ``user_cache_root()/cache``. The fallback keeps derived files out of a
    read-only shared data directory. An explicit or ``SMTO_CACHE`` directory that cannot be
    created is a :class:`smto.errors.ConfigError` naming it (a user's own choice is never
    silently replaced).
    """
    if explicit is not None and str(explicit) != "":
        chosen = Path(explicit).expanduser()
    elif os.environ.get(CACHE_ENV):
        chosen = Path(os.environ[CACHE_ENV]).expanduser()
    else:
        beside_data = data_dir(data) / "cache"
        if is_writable_dir(beside_data):
            return beside_data
        chosen = user_cache_root() / "cache"
    try:
        chosen.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the cache directory {chosen} ({error.strerror or error}): name a "
            f"writable one with {CACHE_ENV} or the cache option"
        ) from None
    return chosen


def set_default_mode(path: Path) -> None:
    """Give a file made by ``tempfile.mkstemp`` (mode 0600) the usual ``0666 & ~umask``."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def require_files(files: Iterable[Path], what: str, split: str, hint: str) -> None:
    """Raises one MissingError naming the first of ``files`` that is missing (and how many
    are), e.g. "Cityscapes file missing: ..., needed by the train split; <hint>", so that a
    dataset fails before anything is decoded, not mid-epoch."""
    missing = [p for p in files if not p.is_file()]
    if missing:
        more = f" ({len(missing)} files missing in all)" if len(missing) > 1 else ""
        raise MissingError(
            f"{what} missing: {missing[0]}, needed by the {split} split{more}; {hint}"
        )
