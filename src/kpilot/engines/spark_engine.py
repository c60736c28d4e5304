"""Run query specs on Apache Spark (PySpark) over a lake written by ``kpilot export lake``.

:class:`SparkEngine` implements the :class:`kpilot.compute.engine.Engine` protocol: the query compiler emits
the same SQL as for DuckDB through :class:`~kpilot.compute.dialect.SparkDialect`, the engine re-spells string
literals for Spark's parser (:mod:`kpilot.engines.spark_sql`) and returns plain Python tuples with the types
DuckDB returns (``int``, ``float``, ``str``, naive ``datetime`` in UTC wall-clock time, ``date``).

The session runs with ``spark.sql.session.timeZone=UTC``: the store's timestamps are naive UTC, and Spark
interprets naive timestamps in the session zone, so any other zone would shift every event. Local-time
bucketing is done explicitly by the dialect (``from_utc_timestamp``).

Temporary views named like the store's tables are registered in the session: ``events``,
``person_distinct_ids``, ``person_property_writes`` and the resolved ``person_properties``. A session serves
one lake at a time: an engine re-registers its views before running a query when another engine on the
same session registered its own since (so engines used one after the other are safe; concurrent engines on
different lakes in one session are not).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpilot.compute.dialect import DIALECTS, Dialect
from kpilot.engines.lake import MANIFEST, LakeManifest
from kpilot.engines.spark_sql import to_spark_sql
from kpilot.errors import KpilotError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

__all__ = ["SparkEngine", "SparkUnavailable", "spark_session"]

_OWNER = "_kpilot_views_owner"  # attribute on the SparkSession: the engine whose views are registered
_EVENTS_DDL = (
    "uuid STRING, event STRING, distinct_id STRING, timestamp TIMESTAMP, properties STRING, "
    "received_at TIMESTAMP, project_id INT, date DATE"
)
_EVENT_COLUMNS = ("project_id", "uuid", "event", "distinct_id", "timestamp", "properties", "received_at")
_IDS_DDL = "distinct_id STRING, person_id BIGINT, project_id INT"
_WRITES_DDL = "distinct_id STRING, key STRING, value STRING, ts TIMESTAMP, set_once BOOLEAN, project_id INT"

# Same rule as the DuckDB view in kpilot.store.schema: the latest $set wins; without any $set, the earliest
# $set_once. DuckDB's arg_max/arg_min skip rows whose value is NULL, hence the `value IS NOT NULL` filters.
_PERSON_PROPERTIES_SQL = """
WITH resolved AS (
    SELECT w.project_id, p.person_id, w.key,
           max_by(w.value, w.ts) FILTER (WHERE NOT w.set_once AND w.value IS NOT NULL) AS set_value,
           count(*) FILTER (WHERE NOT w.set_once) AS n_set,
           min_by(w.value, w.ts) FILTER (WHERE w.set_once AND w.value IS NOT NULL) AS once_value
    FROM person_property_writes w
    JOIN person_distinct_ids p ON p.project_id = w.project_id AND p.distinct_id = w.distinct_id
    GROUP BY w.project_id, p.person_id, w.key
)
SELECT project_id, person_id, key, CASE WHEN n_set > 0 THEN set_value ELSE once_value END AS value
FROM resolved
"""


class SparkUnavailable(KpilotError):
    """PySpark or a Java runtime is missing, or the Spark session could not start."""

    code = "spark_unavailable"
    exit_code = 6


def spark_session(
    master: str = "local[*]",
    *,
    shuffle_partitions: int | None = None,
    app_name: str = "kpilot",
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get or create the process's SparkSession with the settings kpilot's SQL relies on."""
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise SparkUnavailable("Spark needs a Java runtime (17 or newer): install one or set JAVA_HOME")
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable("PySpark is not installed: pip install 'kpilot[spark]'") from exc
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    try:
        with warnings.catch_warnings():
            # PySpark's own test helpers, imported on start-up, warn about new pandas versions
            warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
            session = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up failures have no common base class
        raise SparkUnavailable(f"cannot start Spark with master {master!r}: {exc}") from exc
    # getOrCreate may return a session started elsewhere: the zone is what matters most, set it again.
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session


class SparkEngine:
    """Runs compiled SQL on Spark over the lake at ``lake`` (a local directory or any Hadoop URI)."""

    def __init__(self, session: SparkSession, lake: str | Path, *, cache: bool = False) -> None:
        """``cache`` keeps the tables and the resolved person properties in executor memory after their
        first use: worth it for many queries on one lake (a dashboard, tests), not for one-off queries."""
        self.spark = session
        self.lake = _lake_uri(lake)
        self.cache = cache
        self.manifest = self._read_manifest()
        session.conf.set("spark.sql.session.timeZone", "UTC")  # see the module docstring
        self._token = object()
        self._register_views()

    @classmethod
    def open(
        cls,
        lake: str | Path,
        master: str = "local[*]",
        *,
        shuffle_partitions: int | None = None,
        cache: bool = False,
    ) -> SparkEngine:
        return cls(spark_session(master, shuffle_partitions=shuffle_partitions), lake, cache=cache)

    @property
    def dialect(self) -> Dialect:
        return DIALECTS["spark"]

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        if getattr(self.spark, _OWNER, None) is not self._token:
            self._register_views()
        df = _naive_timestamps(self.spark.sql(to_spark_sql(sql)))
        return [tuple(_plain(v) for v in row) for row in df.collect()]

    # ---- set-up ------------------------------------------------------------------------------------
    def _read_manifest(self) -> LakeManifest:
        where = f"{self.lake}/{MANIFEST}"
        if "://" not in self.lake:
            path = Path(self.lake) / MANIFEST
            if not path.is_file():
                raise SparkUnavailable(f"no kpilot lake at {self.lake} (run `kpilot export lake DIR` first)")
            return LakeManifest.from_json(path.read_bytes(), str(path))
        try:
            rows = self.spark.read.text(where, wholetext=True).collect()
        except Exception as exc:  # missing file on a remote file system
            raise SparkUnavailable(f"cannot read {where}: {exc}") from exc
        return LakeManifest.from_json(str(rows[0][0]), where)

    def _register_views(self) -> None:
        events = self._table("events", _EVENTS_DDL).select(*_EVENT_COLUMNS)
        ids = self._table("person_distinct_ids", _IDS_DDL).select("project_id", "distinct_id", "person_id")
        writes = self._table("person_property_writes", _WRITES_DDL).select(
            "project_id", "distinct_id", "key", "value", "ts", "set_once"
        )
        for name, df in (
            ("events", events),
            ("person_distinct_ids", ids),
            ("person_property_writes", writes),
        ):
            (df.cache() if self.cache else df).createOrReplaceTempView(name)
        props = self.spark.sql(_PERSON_PROPERTIES_SQL)
        (props.cache() if self.cache else props).createOrReplaceTempView("person_properties")
        setattr(self.spark, _OWNER, self._token)

    def _table(self, name: str, ddl: str) -> DataFrame:
        """The Parquet table ``name`` with partition discovery; empty (same schema) when it has no files."""
        path = f"{self.lake}/{name}"
        try:
            return self.spark.read.schema(ddl).option("basePath", path).parquet(path)
        except Exception as exc:
            if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc):
                return self.spark.createDataFrame([], ddl)
            raise


def _lake_uri(lake: str | Path) -> str:
    text = str(lake)
    if "://" in text:
        return text.rstrip("/")
    return str(Path(text).resolve())


def _naive_timestamps(df: DataFrame) -> DataFrame:
    """Cast TIMESTAMP columns to TIMESTAMP_NTZ: PySpark turns TIMESTAMP into the *Python process's* local
    time when collecting, TIMESTAMP_NTZ comes back as the naive (UTC) wall-clock value."""
    from pyspark.sql import functions as F

    cols = []
    changed = False
    for f in df.schema.fields:
        target = _ntz(f.dataType)
        if target is None:
            cols.append(F.col(f"`{f.name}`"))
        else:
            changed = True
            cols.append(F.col(f"`{f.name}`").cast(target).alias(f.name))
    return df.select(*cols) if changed else df


def _ntz(t: DataType) -> DataType | None:
    """``t`` with every TIMESTAMP replaced by TIMESTAMP_NTZ, or None when it holds no TIMESTAMP."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType, TimestampNTZType, TimestampType

    if isinstance(t, TimestampType):
        return TimestampNTZType()
    if isinstance(t, ArrayType):
        inner = _ntz(t.elementType)
        return None if inner is None else ArrayType(inner, t.containsNull)
    if isinstance(t, MapType):
        k, v = _ntz(t.keyType), _ntz(t.valueType)
        if k is None and v is None:
            return None
        return MapType(k or t.keyType, v or t.valueType, t.valueContainsNull)
    if isinstance(t, StructType):
        inner_types = [_ntz(f.dataType) for f in t.fields]
        if all(x is None for x in inner_types):
            return None
        return StructType(
            [
                StructField(f.name, x or f.dataType, f.nullable)
                for f, x in zip(t.fields, inner_types, strict=True)
            ]
        )
    return None


def _plain(value: Any) -> Any:
    """Spark's Python values as DuckDB's: structs become dicts, containers are converted recursively."""
    from pyspark.sql import Row

    if value is None or isinstance(value, str | int | float | bool | datetime | date | Decimal):
        return value
    if isinstance(value, Row):
        return {k: _plain(v) for k, v in value.asDict(recursive=False).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value
