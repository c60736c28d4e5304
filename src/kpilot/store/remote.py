"""The event store of a running ``kpilot serve``, reached through the server's local admin API.

While a server runs on a workspace it holds the DuckDB file, and no other process can open it, not even
read-only. The CLI then opens the workspace with a :class:`RemoteStore` in place of the
:class:`~kpilot.store.duckdb_store.EventStore`; it offers the part of the store's interface that CLI
commands use, and sends the work to the server:

* Reads (``fetchall``, ``cursor().execute(sql, params).fetchall()``, ``cursor().sql(sql).to_arrow_table()``)
  send one SELECT and its parameters to ``POST /api/sql``. The server runs it on a cursor of its own, inside
  a transaction it rolls back, and replies with the rows as Arrow IPC in DuckDB's lossless Arrow types. The
  client reads them back through an in-memory DuckDB, so every value has the Python type a local
  ``fetchall`` gives (dates, timestamps, decimals, HUGEINT as int, INTERVAL as timedelta, MAP as dict...).
* Event batches (``write_batch``) go to ``POST /api/batches/{project_id}`` as Arrow IPC; the server stores
  each with one ``EventStore.write_batch`` (one transaction, the same deduplication) and replies the counts.
* Anything else that needs the DuckDB file itself raises :class:`ServerHoldsStore`, which names the server.

The wire formats of both directions are defined here; the module imports neither FastAPI nor uvicorn.
Errors the server replies with are raised again as the exception the command would have raised itself
(:func:`error_from_reply`), so the CLI prints the same message and exits with the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from kpilot.collect.normalize import Normalized
from kpilot.errors import ImportRejected, KpilotError, NotFoundError, SpecError, WorkspaceError
from kpilot.server.discovery import ServerInfo, post
from kpilot.store.duckdb_store import BatchResult

__all__ = [
    "ARROW_STREAM",
    "RemoteCursor",
    "RemoteStore",
    "ServerHoldsStore",
    "decode_batch",
    "decode_query",
    "encode_batch",
    "encode_query",
    "error_from_reply",
    "read_ipc",
    "write_ipc",
]

ARROW_STREAM = "application/vnd.apache.arrow.stream"
TIMEOUT = 3600.0
"""Seconds to wait for one reply: a large batch or a heavy query may take minutes, a hung server not forever."""

_SQL = b"kpilot.sql"
_STYLE = b"kpilot.params"
_RECEIVED_AT = b"kpilot.received_at"

_BATCH_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("distinct_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("properties", pa.string()),
        ("merges", pa.list_(pa.list_(pa.string()))),
        ("set_props", pa.string()),
        ("set_once_props", pa.string()),
    ]
)


class ServerHoldsStore(WorkspaceError, AttributeError):
    """An operation needs the DuckDB file, which the running server holds (also an AttributeError, so
    ``hasattr``/``getattr(..., default)`` on a :class:`RemoteStore` keep their meaning)."""


# ---- wire formats ----------------------------------------------------------------------------------------
def write_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def read_ipc(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()


def encode_query(sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> bytes:
    """One SELECT and its parameters: a one-row Arrow table (a column per parameter, so dates, timestamps,
    intervals and decimals keep their types), the SQL text in the schema metadata."""
    if not params:
        style, names, values = "none", [], []
    elif isinstance(params, Mapping):
        style, names, values = "named", [str(k) for k in params], list(params.values())
    else:
        style, names, values = "positional", [str(i) for i in range(len(params))], list(params)
    arrays = []
    for name, value in zip(names, values, strict=True):
        try:
            arrays.append(pa.array([value]))
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise TypeError(
                f"parameter {name} ({type(value).__name__}) cannot be sent to the server"
            ) from exc
    schema = pa.schema(
        [pa.field(n, a.type) for n, a in zip(names, arrays, strict=True)],
        metadata={_SQL: sql.encode(), _STYLE: style.encode()},
    )
    return write_ipc(pa.Table.from_arrays(arrays, schema=schema))


def decode_query(data: bytes) -> tuple[str, list[Any] | dict[str, Any] | None]:
    """The SQL text and parameters of :func:`encode_query`; ValueError for anything else."""
    table = read_ipc(data)
    meta = table.schema.metadata or {}
    if _SQL not in meta:
        raise ValueError("the request carries no SQL (schema metadata kpilot.sql)")
    sql = meta[_SQL].decode()
    style = meta.get(_STYLE, b"none").decode()
    if style == "none":
        return sql, None
    if table.num_rows != 1:
        raise ValueError("parameters must be one row")
    row = {name: table.column(name)[0].as_py() for name in table.column_names}
    if style == "named":
        return sql, row
    if style == "positional":
        return sql, [row[str(i)] for i in range(len(row))]
    raise ValueError(f"unknown parameter style {style!r}")


def encode_batch(events: Sequence[Normalized], received_at: datetime | None = None) -> bytes:
    """Normalised events as Arrow. Person property values travel as the text the store keeps for them, so
    the server stores exactly what a direct write would."""
    from kpilot.store.duckdb_store import _prop_text, event_columns

    def props(values: Mapping[str, Any]) -> str:
        return orjson.dumps({str(k): _prop_text(v) for k, v in values.items()}).decode()

    table = pa.Table.from_pydict(
        {
            **event_columns(events),
            "merges": [[list(m) for m in e.merges] for e in events],
            "set_props": [props(e.set_props) for e in events],
            "set_once_props": [props(e.set_once_props) for e in events],
        },
        schema=_BATCH_SCHEMA.with_metadata(
            {_RECEIVED_AT: received_at.isoformat().encode()} if received_at is not None else None
        ),
    )
    return write_ipc(table)


def decode_batch(data: bytes) -> tuple[list[Normalized], datetime | None]:
    """The events of :func:`encode_batch`; ValueError when the table does not have its schema."""
    table = read_ipc(data)
    if not table.schema.remove_metadata().equals(_BATCH_SCHEMA):
        raise ValueError(f"an event batch needs the columns {_BATCH_SCHEMA}, got {table.schema}")
    meta = table.schema.metadata or {}
    received_at = datetime.fromisoformat(meta[_RECEIVED_AT].decode()) if _RECEIVED_AT in meta else None
    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    events = []
    for i in range(table.num_rows):
        if cols["uuid"][i] is None or cols["timestamp"][i] is None:
            raise ValueError(f"row {i}: uuid and timestamp are required")
        events.append(
            Normalized(
                cols["uuid"][i],
                cols["event"][i],
                cols["distinct_id"][i],
                cols["timestamp"][i],
                orjson.loads(cols["properties"][i] or "{}"),
                [(str(a), str(b)) for a, b in cols["merges"][i] or []],
                orjson.loads(cols["set_props"][i] or "{}"),
                orjson.loads(cols["set_once_props"][i] or "{}"),
            )
        )
    return events, received_at


# ---- errors ----------------------------------------------------------------------------------------------
_KNOWN: dict[str, type[KpilotError]] = {
    c.code: c for c in (KpilotError, WorkspaceError, NotFoundError, SpecError, ImportRejected)
}
_BUILTIN: dict[str, type[Exception]] = {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}


def error_from_reply(
    server: ServerInfo, status: int, body: bytes, translate: Callable[[str], str] | None = None
) -> Exception:
    """The exception to raise for an error reply.

    An error of the operation itself (the reply names its ``exit_code``) becomes the exception the command
    raises when it runs without a server: same class where it is known, same message (passed through
    ``translate``), code and exit code. Anything else (the server refused or failed the request) is a
    :class:`WorkspaceError` naming the server.
    """
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        if translate is not None:
            message = translate(message)
    except (ValueError, KeyError, TypeError):
        return WorkspaceError(f"the kpilot server at {server.url} (pid {server.pid}) replied HTTP {status}")
    if "exit_code" not in error:
        return WorkspaceError(f"the kpilot server at {server.url} (pid {server.pid}): {message}")
    if code.startswith("duckdb."):
        cls = getattr(duckdb, code.removeprefix("duckdb."), None)
        if isinstance(cls, type) and issubclass(cls, duckdb.Error):
            return cls(message)
        return duckdb.Error(message)
    if code in _BUILTIN:
        return _BUILTIN[code](message)
    known = _KNOWN.get(code)
    exc = known(message) if known is not None else KpilotError(message)
    exc.code = code
    exc.exit_code = int(error["exit_code"])
    return exc


# ---- the store -------------------------------------------------------------------------------------------
class RemoteCursor:
    """A read cursor: ``execute`` runs the statement on the server, the fetch methods read the rows."""

    def __init__(self, store: RemoteStore) -> None:
        self._store = store
        self._local = store._local.cursor()
        self._names: list[str] = []

    def execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] | None = None) -> RemoteCursor:
        table = self._store.query_arrow(sql, parameters)
        self._local.close()  # a fresh local cursor per statement: DB-API semantics for unfinished results
        self._local = self._store._local.cursor()
        self._local.register("kpilot_remote_result", table)
        self._local.execute("SELECT * FROM kpilot_remote_result")
        self._names = table.column_names
        return self

    def sql(
        self, query: str, *, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> duckdb.DuckDBPyRelation:
        """The rows of ``query`` as a (local) relation: ``.to_arrow_table()``, ``.fetchall()``..."""
        return self._local.from_arrow(self._store.query_arrow(query, params))

    @property
    def description(self) -> list[tuple[Any, ...]] | None:
        local = self._local.description
        if local is None:
            return None
        return [(name, *rest) for name, (_, *rest) in zip(self._names, local, strict=True)]

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._local.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._local.fetchone()

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        return self._local.fetchmany(size)

    def close(self) -> None:
        self._local.close()

    def __enter__(self) -> RemoteCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def flush_ingestion(server: ServerInfo) -> None:
    """``POST /api/ingestion/flush`` on ``server``: returns once every acknowledged event is stored (or the
    server gave up waiting after 30 s; the command then reads what is stored)."""
    try:
        status, _, body = post(server, "/api/ingestion/flush", b"{}", "application/json", timeout=TIMEOUT)
    except OSError as exc:
        raise WorkspaceError(
            f"the kpilot server at {server.url} (pid {server.pid}) did not answer: {exc}"
        ) from exc
    if status != 200:
        raise error_from_reply(server, status, body, None)


class RemoteStore:
    """:class:`EventStore`'s read interface and ``write_batch``, served by the running ``kpilot serve``."""

    def __init__(self, server: ServerInfo, path: Path, *, read_only: bool = False) -> None:
        self.server = server
        self.path = path
        self.read_only = read_only
        self._local = duckdb.connect()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ServerHoldsStore(
            f"this command needs the event store itself, which the kpilot server at {self.server.url} "
            f"(pid {self.server.pid}) holds: stop the server, then run the command again "
            f"(EventStore.{name} is not available through the server)"
        )

    def close(self) -> None:
        self._local.close()

    # ---- reads ---------------------------------------------------------------------------------------
    def cursor(self) -> RemoteCursor:
        return RemoteCursor(self)

    def fetchall(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        with self.cursor() as cur:
            return cur.execute(sql, params).fetchall()

    def query_arrow(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """The rows of one SELECT, as the server's Arrow table (DuckDB's lossless Arrow types)."""
        return read_ipc(self._post("/api/sql", encode_query(sql, params), ARROW_STREAM))

    # ---- writes --------------------------------------------------------------------------------------
    def write_batch(
        self, project_id: int, events: Sequence[Normalized], received_at: datetime | None = None
    ) -> BatchResult:
        """Store ``events`` through the server, atomically, deduplicated as :meth:`EventStore.write_batch`."""
        if self.read_only:
            raise WorkspaceError("the workspace was opened read-only")
        if not events:
            return BatchResult(0, 0, 0)
        reply = json.loads(self._post(f"/api/batches/{project_id}", encode_batch(events, received_at)))
        return BatchResult(int(reply["received"]), int(reply["accepted"]), int(reply["deduplicated"]))

    def flush_ingestion(self) -> None:
        """Wait until the server has stored every event it acknowledged so far (its ingestion log is
        applied in the background), so that what this command reads includes them."""
        flush_ingestion(self.server)

    def ensure_rollups(self, project_id: int, timezone: str) -> bool:
        """Have the server build ``project_id``'s rollup in ``timezone`` unless it has it (a project created
        while serving gets its rollup, in the server's store, as it would without the server)."""
        if self.read_only:
            return False
        return bool(self.call(f"/api/rollups/{project_id}", {"timezone": timezone})["built"])

    # ---- other operations ----------------------------------------------------------------------------
    def call(self, path: str, body: Any, translate: Callable[[str], str] | None = None) -> Any:
        """POST ``body`` as JSON to an admin endpoint; the decoded JSON reply. Errors are raised as
        :func:`error_from_reply` says, their messages passed through ``translate``."""
        return json.loads(self._post(path, json.dumps(body).encode(), translate=translate))

    def _post(
        self,
        path: str,
        data: bytes,
        content_type: str = "application/json",
        translate: Callable[[str], str] | None = None,
    ) -> bytes:
        try:
            status, _, body = post(self.server, path, data, content_type, timeout=TIMEOUT)
        except OSError as exc:
            raise WorkspaceError(
                f"the kpilot server at {self.server.url} (pid {self.server.pid}) did not answer: {exc}"
            ) from exc
        if status != 200:
            raise error_from_reply(self.server, status, body, translate)
        return body
