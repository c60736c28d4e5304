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

Rollups (per local day and event, the persons as roaring bitmaps; :mod:`kpilot.compute.rollups`): the engine
implements :class:`kpilot.compute.engine.RollupSource`. When the lake holds a rollup of the project in the
project's timezone (the manifest's ``rollup`` entry) and the spec is answerable from one, it reads only the
days and events the spec needs (filters pushed down to the Parquet scan), unions delta rows, applies the
merges recorded after the build and answers; otherwise :func:`~kpilot.compute.engine.run_query` computes
from raw events. :meth:`SparkEngine.build_rollups` (re)builds a project's rollup from the lake's events on
the cluster and writes it in the layout ``kpilot export lake`` uses.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpilot.compute.dialect import DIALECTS, Dialect
from kpilot.engines.lake import MANIFEST, LakeManifest, LakeProject, LakeRollup, utc_text, write_manifest
from kpilot.engines.spark_sql import spark_literal, to_spark_sql
from kpilot.errors import KpilotError, WorkspaceError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType

    from kpilot.compute.rollups import Rollups
    from kpilot.compute.spec import QuerySpec
    from kpilot.workspace import ProjectInfo

__all__ = ["SparkEngine", "SparkUnavailable", "spark_session"]

_OWNER = "_kpilot_views_owner"  # attribute on the SparkSession: the engine whose views are registered
_EVENTS_DDL = (
    "uuid STRING, event STRING, distinct_id STRING, timestamp TIMESTAMP, properties STRING, "
    "received_at TIMESTAMP, project_id INT, date DATE"
)
_EVENT_COLUMNS = ("project_id", "uuid", "event", "distinct_id", "timestamp", "properties", "received_at")
_IDS_DDL = "distinct_id STRING, person_id BIGINT, project_id INT"
_WRITES_DDL = "distinct_id STRING, key STRING, value STRING, ts TIMESTAMP, set_once BOOLEAN, project_id INT"
_ROLLUP_PROJECTS_DDL = "timezone STRING, built_at TIMESTAMP"
_ROLLUP_PERSONS_DDL = "day DATE, event STRING, persons BINARY"
_ROLLUP_MERGES_DDL = "absorbed BIGINT, survivor BIGINT"
ROLLUP_ROW_GROUP_BYTES = 16 * 1024 * 1024
"""Parquet row-group size of the rollup files Spark writes: readers skip groups by their ``day`` range."""

# Per local day and event, and per local day over all events (the grouping set that leaves event NULL):
# the sorted distinct person ids, resolved through person_distinct_ids exactly as the queries resolve them.
_ROLLUP_SETS_SQL = """
SELECT day, event, sort_array(collect_set(person_id)) AS persons
FROM (
    SELECT CAST({local} AS DATE) AS day, e.event, p.person_id
    FROM events e
    JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
    WHERE e.project_id = {project_id} AND p.project_id = {project_id}
) AS resolved
GROUP BY GROUPING SETS ((day, event), (day))
"""

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
    if master.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        # Python workers (building rollup bitmaps) must run this interpreter, which has pyroaring and
        # pyarrow; PySpark's default is whatever `python3` is first on PATH. Read when the context starts.
        os.environ["PYSPARK_PYTHON"] = sys.executable
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

    def __init__(
        self,
        session: SparkSession,
        lake: str | Path,
        *,
        cache: bool = False,
        rollups: bool | None = None,
    ) -> None:
        """``cache`` keeps the tables and the resolved person properties in executor memory after their
        first use: worth it for many queries on one lake (a dashboard, tests), not for one-off queries.

        ``rollups`` (default: setting ``KPILOT_ROLLUPS``, on) answers the specs a rollup can answer from
        the lake's rollups; off, every query reads raw events.
        """
        self.spark = session
        self.lake = _lake_uri(lake)
        self.cache = cache
        if rollups is None:
            from kpilot.config import get_settings

            rollups = get_settings().rollups
        self.rollups = rollups
        self.last_source = "events"
        """Where the last :func:`~kpilot.compute.engine.run_query` answer came from: "rollups" or "events"."""
        self.manifest = self._read_manifest()
        session.conf.set("spark.sql.session.timeZone", "UTC")  # see the module docstring
        self._token = object()
        self._rollup_frames: dict[int, DataFrame | None] = {}
        self._rollup_merges: dict[int, list[tuple[int, int]]] = {}
        self._register_views()

    @classmethod
    def open(
        cls,
        lake: str | Path,
        master: str = "local[*]",
        *,
        shuffle_partitions: int | None = None,
        cache: bool = False,
        rollups: bool | None = None,
    ) -> SparkEngine:
        return cls(
            spark_session(master, shuffle_partitions=shuffle_partitions), lake, cache=cache, rollups=rollups
        )

    @property
    def dialect(self) -> Dialect:
        return DIALECTS["spark"]

    def fetchall(self, sql: str) -> list[tuple[Any, ...]]:
        if getattr(self.spark, _OWNER, None) is not self._token:
            self._register_views()
        df = _naive_timestamps(self.spark.sql(to_spark_sql(sql)))
        return [tuple(_plain(v) for v in row) for row in df.collect()]

    # ---- rollups: answering ----------------------------------------------------------------------------
    def from_rollups(self, project: ProjectInfo, spec: QuerySpec) -> dict[str, Any] | None:
        """``spec``'s result from the lake's rollup of ``project``, or None (no usable rollup: raw events)."""
        from kpilot.compute.rollups import answer, answerable, needs

        self.last_source = "events"
        if not self.rollups:
            return None
        entry = self.manifest.by_id(project.id)
        if entry is None or entry.rollup is None or entry.rollup.timezone != project.timezone:
            return None
        if not answerable(spec, project.timezone):
            return None
        first, last, events = needs(spec, project.week_start)
        rollups = self.load_rollups(entry, first, last, events)
        got = answer(rollups, spec, project.week_start)
        if got is not None:
            self.last_source = "rollups"
        return got

    def load_rollups(self, entry: LakeProject, first: date, last: date, events: set[str | None]) -> Rollups:
        """The sets of days ``first``..``last`` and ``events`` (None: any event) of the lake's rollup of
        ``entry``, delta rows unioned, with the merges to apply (what :func:`kpilot.compute.rollups.answer`
        reads)."""

        from kpilot.compute.rollups import Rollups

        if entry.rollup is None:
            raise KpilotError(f"the lake has no rollup of project {entry.name!r}")
        out = Rollups(entry.id, entry.rollup.timezone)
        frame = self._rollup_rows(entry, first, last, events)
        for day, event, blob in [] if frame is None else frame.collect():
            out.add_stored(day, event, bytes(blob))
        for absorbed, survivor in self._merges(entry):
            out.record_merge(absorbed, survivor)
        return out

    def _rollup_rows(
        self, entry: LakeProject, first: date, last: date, events: set[str | None]
    ) -> DataFrame | None:
        """The rows of the wanted days and events: Spark pushes both conditions into the Parquet scan, which
        skips the row groups (sorted by day) whose ``day`` statistics lie outside the range."""
        from pyspark.sql import functions as F

        frame = self._rollup_frame(entry.id)
        named = sorted(e for e in events if e is not None)
        wanted = [F.col("event").isin(named)] if named else []
        if None in events:
            wanted.append(F.col("event").isNull())
        if frame is None or not wanted:
            return None
        which = wanted[0] if len(wanted) == 1 else wanted[0] | wanted[1]
        return frame.where(F.col("day").between(F.lit(first), F.lit(last)) & which)

    def _rollup_frame(self, project_id: int) -> DataFrame | None:
        """The project's ``rollup_persons`` files (None when it has none); cached with ``cache``."""
        if project_id in self._rollup_frames:
            return self._rollup_frames[project_id]
        frame = self._partition("rollup_persons", project_id, _ROLLUP_PERSONS_DDL)
        if self.cache and frame is not None:
            frame = frame.cache()
            self._rollup_frames[project_id] = frame
        return frame

    def _merges(self, entry: LakeProject) -> list[tuple[int, int]]:
        if entry.rows.get("rollup_merges", 1) == 0:  # the manifest counted none: spare the scan
            return []
        if entry.id in self._rollup_merges:
            return self._rollup_merges[entry.id]
        frame = self._partition("rollup_merges", entry.id, _ROLLUP_MERGES_DDL)
        merges = [] if frame is None else [(int(a), int(b)) for a, b in frame.collect()]
        if self.cache:
            self._rollup_merges[entry.id] = merges
        return merges

    def _partition(self, table: str, project_id: int, ddl: str) -> DataFrame | None:
        """The files of one project's partition of ``table``, or None when there are none."""
        try:
            return self.spark.read.schema(ddl).parquet(f"{self.lake}/{table}/project_id={project_id}")
        except Exception as exc:
            if _missing(exc):
                return None
            raise

    # ---- rollups: building -----------------------------------------------------------------------------
    def build_rollups(self, project: str | None = None, *, files: int = 1) -> LakeProject:
        """(Re)build the rollup of ``project`` (or the lake's only project) from the lake's raw events.

        Local days are in the project's timezone and persons are resolved through ``person_distinct_ids``,
        as every Spark query does, so the rollup needs no merges. The sorted person ids per (day, event)
        and per day are computed by Spark SQL; each set becomes a serialized roaring bitmap on the
        executors (``mapInArrow`` with pyroaring, so their Python needs pyroaring and pyarrow); the
        bitmaps are written as ``files`` Parquet files sorted by day and event. The manifest entry is
        cleared first and written last, so a failed build leaves the project answered from raw events.
        Returns the project's new manifest entry.
        """
        from pyspark.sql import functions as F

        manifest = self._read_manifest()  # fresh: another export may have changed other entries
        entry = manifest.project(project)
        self._set_manifest(manifest.with_project(replace(entry, rollup=None)))
        self._rollup_frames.pop(entry.id, None)
        self._rollup_merges.pop(entry.id, None)
        if getattr(self.spark, _OWNER, None) is not self._token:
            self._register_views()
        built_at = utc_text(datetime.now(UTC))
        sql = _ROLLUP_SETS_SQL.format(
            local=self.dialect.local_ts("e.timestamp", entry.timezone), project_id=int(entry.id)
        )
        with warnings.catch_warnings():
            # mapInArrow goes through pandas_udf, which checks (and warns about) the pandas version; the
            # function itself works on Arrow batches and never touches pandas
            warnings.filterwarnings("ignore", "PySpark does not yet fully support", FutureWarning)
            bitmaps = self.spark.sql(to_spark_sql(sql)).mapInArrow(_bitmap_builder(), _ROLLUP_PERSONS_DDL)
        try:
            (
                bitmaps.repartitionByRange(max(1, files), "day")
                .sortWithinPartitions("day", F.col("event").asc_nulls_first())
                .write.mode("overwrite")
                .option("parquet.block.size", str(ROLLUP_ROW_GROUP_BYTES))
                .parquet(self._partition_path("rollup_persons", entry.id))
            )
        except Exception as exc:  # the executors' error arrives wrapped in Py4J and Spark exceptions
            if _ID_RANGE not in str(exc):
                raise
            raise WorkspaceError(
                f"cannot build the rollup of project {entry.name!r}: its person ids do not all lie in "
                "0..4294967295, the range of a roaring bitmap"
            ) from exc
        # no merges: persons were resolved with today's ids (overwriting drops merges of an earlier rollup)
        self.spark.createDataFrame([], _ROLLUP_MERGES_DDL).coalesce(1).write.mode("overwrite").parquet(
            self._partition_path("rollup_merges", entry.id)
        )
        self.spark.sql(
            f"SELECT {spark_literal(entry.timezone)} AS timezone, "
            f"TIMESTAMP {spark_literal(built_at[:-1])} AS built_at"
        ).coalesce(1).write.mode("overwrite").parquet(self._partition_path("rollup_projects", entry.id))
        written = self.spark.read.parquet(self._partition_path("rollup_persons", entry.id)).count()
        rows = {**entry.rows, "rollup_projects": 1, "rollup_persons": int(written), "rollup_merges": 0}
        built = replace(entry, rows=rows, rollup=LakeRollup(entry.timezone, built_at, "spark"))
        self._set_manifest(self.manifest.with_project(built))
        return built

    def _partition_path(self, table: str, project_id: int) -> str:
        return f"{self.lake}/{table}/project_id={project_id}"

    def _set_manifest(self, manifest: LakeManifest) -> None:
        """Write ``manifest`` to the lake (a local file replaced atomically, or through Hadoop's FS)."""
        if "://" not in self.lake:
            write_manifest(Path(self.lake), manifest)
        else:
            jvm: Any = self.spark._jvm
            path = jvm.org.apache.hadoop.fs.Path(f"{self.lake}/{MANIFEST}")
            fs = path.getFileSystem(self.spark._jsc.hadoopConfiguration())  # type: ignore[attr-defined]
            out = fs.create(path, True)
            try:
                out.write(bytearray(manifest.to_json()))
            finally:
                out.close()
        self.manifest = manifest

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
            if _missing(exc):
                return self.spark.createDataFrame([], ddl)
            raise


_ID_RANGE = "does not fit a 32-bit roaring bitmap"


def _missing(exc: Exception) -> bool:
    return "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc)


def _bitmap_builder() -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function turning (day, event, sorted person ids) into (day, event, bitmap).

    It is defined inside this function so cloudpickle ships it by value: executors need pyroaring, numpy and
    pyarrow, not kpilot. Ids are dense non-negative integers below 2**32 (what a 32-bit roaring bitmap holds).
    """

    id_range = _ID_RANGE  # a local: the function must not refer to this module's globals

    def build(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import array

        import numpy as np
        import pyarrow as pa
        from pyroaring import BitMap

        for batch in batches:
            persons = batch.column("persons")
            offsets = persons.offsets.to_numpy()
            ids = persons.values.to_numpy(zero_copy_only=False)
            blobs = []
            for i in range(len(persons)):
                chunk = ids[offsets[i] : offsets[i + 1]]
                if len(chunk) and (chunk[0] < 0 or chunk[-1] > 0xFFFFFFFF):
                    bad = int(chunk[0] if chunk[0] < 0 else chunk[-1])
                    raise ValueError(f"person id {bad} {id_range}")
                arr = array.array("I")
                arr.frombytes(np.ascontiguousarray(chunk, dtype=np.uint32).tobytes())
                blobs.append(BitMap(arr).serialize())
            binary = pa.large_binary() if pa.types.is_large_list(persons.type) else pa.binary()
            yield pa.RecordBatch.from_arrays(
                [batch.column("day"), batch.column("event"), pa.array(blobs, binary)],
                names=["day", "event", "persons"],
            )

    return build


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
