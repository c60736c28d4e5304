"""The workload written as straightforward DuckDB SQL over an in-memory table of the events."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.plain.common import Range, identity_map, parse_anon, py, week_no

__all__ = ["DuckDBImpl"]

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBImpl:
    name = "duckdb_sql"

    def __init__(self) -> None:
        self.con = duckdb.connect()

    def load(self, parquet: list[str], timezone: str) -> None:
        files = "[" + ", ".join(_q(p) for p in parquet) + "]"
        ident = self.con.execute(
            f"SELECT distinct_id, properties FROM read_parquet({files}) WHERE event = '$identify'"
        ).fetchall()
        mapping = identity_map((parse_anon(p), d) for d, p in ident)
        links = pa.table(
            {
                "distinct_id": pa.array(list(mapping), pa.string()),
                "key": pa.array(list(mapping.values()), pa.string()),
            }
        )
        self.con.register("links", links)
        local = (
            "timestamp" if timezone == "UTC" else f"timezone({_q(timezone)}, timestamp AT TIME ZONE 'UTC')"
        )
        self.con.execute(
            f"""CREATE OR REPLACE TABLE ev AS
                SELECT dense_rank() OVER (ORDER BY coalesce(l.key, e.distinct_id)) AS person,
                       e.event, epoch_us(e.timestamp) AS t, CAST(CAST({local} AS DATE) - DATE '1970-01-01' AS INTEGER) AS day
                FROM read_parquet({files}) e LEFT JOIN links l USING (distinct_id)"""
        )
        self.con.unregister("links")

    def run(self, name: str, spec: dict[str, Any]) -> Any:
        kind = name.split(":")[0]
        if kind in ("dau", "wau", "mau", "dau_mau"):
            return self._trends(spec)
        return getattr(self, "_" + kind)(spec)

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.execute(sql).fetchall()

    @staticmethod
    def _day(n: int) -> str:
        return str(int(n))

    def _between(self, first: int, last: int) -> str:
        return f"SELECT * FROM ev WHERE day BETWEEN {self._day(first)} AND {self._day(last)}"

    def _rolling(self, r: Range, window: int) -> list[int]:
        got = dict(
            self._rows(
                f"""WITH pd AS (SELECT DISTINCT person, day FROM ({self._between(r.first - window + 1, r.last)}))
                    SELECT d.day, count(DISTINCT pd.person)
                    FROM (SELECT {self._day(r.first)} + i AS day FROM range({r.last - r.first + 1}) t(i)) d
                    JOIN pd ON pd.day BETWEEN d.day - {window - 1} AND d.day
                    GROUP BY d.day"""
            )
        )
        return [int(got.get(d, 0)) for d in r.days()]

    def _trends(self, spec: dict[str, Any]) -> list[Any]:
        r = Range.of(spec)
        math = spec["math"]
        if math == "wau":
            return self._rolling(r, 7)
        if math == "mau":
            return self._rolling(r, 30)
        got = dict(
            self._rows(
                f"SELECT day, count(DISTINCT person) FROM ({self._between(r.first, r.last)}) GROUP BY day"
            )
        )
        dau = [int(got.get(d, 0)) for d in r.days()]
        if math == "dau":
            return dau
        mau = self._rolling(r, 30)
        return [a / m if m else 0.0 for a, m in zip(dau, mau, strict=True)]

    def _stickiness(self, spec: dict[str, Any]) -> list[int]:
        r = Range.of(spec)
        got = dict(
            self._rows(
                f"""SELECT k, count(*) FROM (
                      SELECT person, count(DISTINCT day) AS k FROM ({self._between(r.first, r.last)}) GROUP BY person
                    ) GROUP BY k"""
            )
        )
        return [int(got.get(k, 0)) for k in range(1, len(r.days()) + 1)]

    def _retention(self, spec: dict[str, Any]) -> list[list[int]]:
        n = int(spec["intervals"])
        first = week_no(Range.of(spec).last) - 7 * (n - 1)
        rows = self._rows(
            f"""WITH pw AS (
                  SELECT DISTINCT person, (day - {self._day(first)}) // 7 AS idx
                  FROM ({self._between(first, first + 7 * n - 1)})
                )
                SELECT idx, 0, count(*) FROM pw GROUP BY idx
                UNION ALL
                SELECT a.idx, b.idx - a.idx, count(*) FROM pw a JOIN pw b ON a.person = b.person AND b.idx > a.idx
                GROUP BY a.idx, b.idx - a.idx"""
        )
        table = [[0] * n for _ in range(n)]
        for c, k, v in rows:
            table[int(c)][int(k)] = int(v)
        return table

    def _funnel(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        steps = list(spec["steps"])
        window = spec["window"]["value"] * _UNIT_SECONDS[spec["window"]["unit"]] * 1_000_000
        names = ", ".join(_q(s) for s in steps)
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE fev AS SELECT person, event, t FROM ({self._between(r.first, r.last)}) "
            f"WHERE event IN ({names})"
        )
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE a0 AS SELECT DISTINCT person, t AS s, t AS t0 FROM fev WHERE event = {_q(steps[0])}"
        )
        for k in range(1, len(steps)):
            prev = ", ".join(f"a.t{j}" for j in range(k))
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE a{k} AS
                    SELECT a.person, a.s, {prev},
                           (SELECT min(f.t) FROM fev f WHERE f.person = a.person AND f.event = {_q(steps[k])}
                              AND f.t > a.t{k - 1} AND f.t <= a.s + {window}) AS t{k}
                    FROM a{k - 1} a"""
            )
        last = len(steps) - 1
        reached = " + ".join(f"(t{k} IS NOT NULL)::INT" for k in range(len(steps)))
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE best AS
                SELECT * FROM a{last} QUALIFY row_number() OVER (PARTITION BY person ORDER BY {reached} DESC, s) = 1"""
        )
        out: list[list[Any]] = [[int(self._rows("SELECT count(*) FROM best")[0][0]), None, None]]
        for k in range(1, len(steps)):
            n, avg, median = self._rows(
                f"SELECT count(*), avg(d), median(d) FROM (SELECT (t{k} - t{k - 1}) / 1e6 AS d FROM best WHERE t{k} IS NOT NULL)"
            )[0]
            out.append([int(n), py(avg), py(median)])
        for k in range(len(steps)):
            self.con.execute(f"DROP TABLE a{k}")
        self.con.execute("DROP TABLE best; DROP TABLE fev")
        return out

    def _sessions(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        gap = int(spec.get("inactivity_minutes", 30)) * 60 * 1_000_000
        cap = int(spec.get("max_hours", 24)) * 3600 * 1_000_000
        engaged_s = float(spec.get("engaged_seconds", 10))
        pageview = ", ".join(_q(e) for e in spec.get("pageview_events", ["$pageview", "$screen"]))
        # a new run after a gap over the limit; the RANGE frame gives events at the same instant one run
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE s AS
                SELECT person, event, t, day,
                       sum(new) OVER (PARTITION BY person ORDER BY t RANGE UNBOUNDED PRECEDING) AS run
                FROM (SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY person ORDER BY t) <= {gap}
                                     THEN 0 ELSE 1 END AS new
                      FROM ({self._between(r.first, r.last)}))"""
        )
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE s2 AS SELECT *, min(t) OVER (PARTITION BY person, run) AS start FROM s"
        )
        while True:  # the max_hours cap: cut every over-long session at its first event past the cap
            long = self._rows(
                f"SELECT count(*) FROM (SELECT run, start FROM s2 GROUP BY person, run, start HAVING max(t) - start > {cap})"
            )[0][0]
            if not long:
                break
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE s2 AS
                    SELECT * EXCLUDE (cut, start), CASE WHEN t >= cut THEN cut ELSE start END AS start
                    FROM (SELECT *, min(CASE WHEN t > start + {cap} THEN t END) OVER (PARTITION BY person, run, start) AS cut
                          FROM s2)"""
            )
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE sess AS
                SELECT person, arg_min(day, t) AS day, (max(t) - min(t)) / 1e6 AS duration,
                       (max(t) - min(t)) / 1e6 > {engaged_s} OR count(*) FILTER (WHERE event IN ({pageview})) >= 2
                         AS engaged
                FROM s2 GROUP BY person, run, start"""
        )
        agg = "count(*), count(DISTINCT person), avg(duration), median(duration), count(*) FILTER (WHERE engaged)"
        per_day = {
            row[0]: [py(v) for v in row[1:]]
            for row in self._rows(f"SELECT day, {agg} FROM sess GROUP BY day")
        }
        total = [py(v) for v in self._rows(f"SELECT {agg} FROM sess")[0]]
        self.con.execute("DROP TABLE s; DROP TABLE s2; DROP TABLE sess")
        if not total[0]:
            total = [0, 0, None, None, 0]
        return [per_day.get(d, [0, 0, None, None, 0]) for d in r.days()] + [total]

    def _adoption(self, spec: dict[str, Any]) -> list[list[int]]:
        r = Range.of(spec)
        rows = self._rows(
            f"""SELECT week, count(*) FILTER (WHERE used), count(*) FROM (
                  SELECT day - (day + 3) % 7 AS week, person, bool_or(event = {_q(spec["event"])}) AS used
                  FROM ({self._between(r.first, r.last)}) GROUP BY ALL
                ) GROUP BY week"""
        )
        got = {row[0]: [int(row[1]), int(row[2])] for row in rows}
        return [got.get(w, [0, 0]) for w in r.weeks()]
