"""The Optuna RDB storage a sweep lives in: a local SQLite file, or PostgreSQL for many workers.

Claiming a trial is atomic on both, which is what makes "every run exactly once" hold:

* A worker claims a waiting trial with ``RDBStorage.set_trial_state_values(id, RUNNING)``
  (the primitive ``Study.ask()`` uses to pop Optuna's queue). In one transaction it reads the
  trial row with ``SELECT ... FOR UPDATE``, returns False unless the state is still WAITING,
  and writes RUNNING.
* PostgreSQL: ``FOR UPDATE`` locks the row; a second claimant blocks on it until the first
  commits, then (READ COMMITTED re-reads the locked row) sees RUNNING and gets False. So one
  claim wins. (Measured with 4 processes racing over 300 trials: no trial claimed twice.)
* SQLite has no row locks, and Python's sqlite3 driver only opens a transaction at the first
  write, so Optuna's read of the state runs outside the transaction: two processes can both
  read WAITING and both write RUNNING. (Measured with plain Optuna 5.0: 40 to 53 of 200
  trials claimed twice by 4 racing processes.) :func:`open_storage` therefore makes every
  SQLite transaction ``BEGIN IMMEDIATE``: it takes the database's write lock before the read,
  so transactions run one at a time and the read-check-write is atomic (the same race: no
  trial claimed twice; tests/sweep/test_claims.py). Waiting for the lock is bounded by the
  driver's busy timeout.

Trial numbers grow in creation order (``RDBStorage.create_new_trial`` locks the study row and
numbers a trial by the trials before it); :mod:`smto.sweep.trials` relies on that to settle
duplicates.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smto._optional import require
from smto.errors import ConfigError, DataError, MissingError, MissingExtraError, SmtoError

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

SQLITE_BUSY_TIMEOUT = 120.0
"""Seconds a SQLite transaction waits for the database lock before failing."""
STORE_FILE = "sweeps.db"
STORAGE_FORMS = "use sqlite:///path/to/sweeps.db or postgresql://user@host/database"


def require_optuna() -> Any:
    """The optuna module, or a clear error naming the extra that installs it."""
    optuna = require("optuna", "sweep", "smto.sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage_url(root: str | Path) -> str:
    """The embedded default: a SQLite file next to the runs."""
    return f"sqlite:///{Path(root).resolve() / STORE_FILE}"


def storage_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare
    ``postgresql://`` as psycopg 3; with only psycopg2 installed it is made explicit."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("psycopg") is not None:
                return "postgresql+psycopg://" + url[len(prefix) :]
            if importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix) :]
            raise MissingExtraError(
                "a PostgreSQL storage needs a driver: pip install 'smto[sweep]' (psycopg2) "
                "or pip install psycopg"
            )
    return url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite storage URL; None for another database or an in-memory one."""
    parsed = _parse(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(database).resolve()


def open_storage(
    url: str, heartbeat_interval: int = 60, grace_period: int | None = None, *, create: bool = True
) -> RDBStorage:
    """The RDB storage at ``url`` with heartbeats every ``heartbeat_interval`` seconds; a
    running trial whose heartbeat is older than ``grace_period`` (default twice the interval)
    is stale (its worker is gone). ``create=False`` is for a look that must not change
    anything (``smto sweep status``): a missing SQLite file is a MissingError, not a new
    empty database. A URL SQLAlchemy cannot use is a ConfigError, and a database that is not
    a readable Optuna storage a DataError, each naming the storage."""
    optuna = require_optuna()
    from sqlalchemy.exc import SQLAlchemyError

    for name, value in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be a whole number of seconds >= 1, got {value!r}")
    url = storage_url(url)
    path = sqlite_path(url)
    sqlite = _parse(url).get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if sqlite:
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    if path is not None and not path.is_file():
        if not create:
            raise MissingError(
                f"no sweep storage at {path}: check the path (--storage, or the sweep's root), "
                "or start the sweep with `smto sweep run`"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(
                url,
                engine_kwargs=kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                skip_table_creation=not create,
            )
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, RuntimeError) as error:
        # RuntimeError: a schema of another Optuna version
        raise _storage_error(url, path, error) from None
    if sqlite:
        _serialize_sqlite(storage)
    return storage


def _parse(url: str) -> Any:
    """The SQLAlchemy URL object of ``url``; a ConfigError for text that is not a URL."""
    sqlalchemy = require("sqlalchemy", "sweep", "smto.sweep")
    try:
        return sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage {url!r} is not a database URL; {STORAGE_FORMS}") from None


def _storage_error(url: str, path: Path | None, error: Exception) -> SmtoError:
    """What is wrong with a storage that failed to open, and what to do (the password of a
    URL left out)."""
    from sqlalchemy.exc import ArgumentError, DBAPIError

    shown = str(path) if path is not None else _parse(url).render_as_string(hide_password=True)
    if isinstance(error, ArgumentError):  # also NoSuchModuleError: an unknown dialect
        return ConfigError(f"storage {shown!r} cannot be used: {error}; {STORAGE_FORMS}")
    cause = error.__cause__ or error  # Optuna's StorageInternalError wraps SQLAlchemy's
    reason = str(cause.orig if isinstance(cause, DBAPIError) else cause).splitlines()[0]
    if path is not None:
        return DataError(
            f"{path} is not a readable sweep storage ({reason}): a corrupt file or not an "
            "Optuna database; move it away to start its sweeps afresh, or give the right "
            "--storage"
        )
    return ConfigError(
        f"cannot open the storage {shown} ({reason}): check the URL (user, host, database) "
        "and that the server is running and holds an Optuna storage"
    )


def _serialize_sqlite(storage: RDBStorage) -> None:
    """Every transaction on the SQLite file starts with BEGIN IMMEDIATE (module docstring)."""
    from sqlalchemy import event

    engine = storage.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()
