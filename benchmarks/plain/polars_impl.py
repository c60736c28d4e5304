"""The workload written plainly in Polars: one DataFrame of events in memory, expressions per metric."""

from __future__ import annotations

from typing import Any

import polars as pl

from benchmarks.plain.common import Range, identity_map, parse_anon, py, week_no

__all__ = ["PolarsImpl"]

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


class PolarsImpl:
    name = "polars"

    def __init__(self) -> None:
        self.df = pl.DataFrame()

    def load(self, parquet: list[str], timezone: str) -> None:
        ident = (
            pl.scan_parquet(parquet)
            .filter(pl.col("event") == "$identify")
            .select("distinct_id", "properties")
            .collect()
        )
        mapping = identity_map((parse_anon(p), d) for d, p in ident.iter_rows())
        links = pl.DataFrame(
            {"distinct_id": list(mapping), "key": list(mapping.values())},
            schema={"distinct_id": pl.String, "key": pl.String},
        )
        ts = pl.col("timestamp")
        local = ts if timezone == "UTC" else ts.dt.replace_time_zone("UTC").dt.convert_time_zone(timezone)
        self.df = (
            pl.scan_parquet(parquet)
            .select("event", "distinct_id", "timestamp")
            .join(links.lazy(), on="distinct_id", how="left")
            .select(
                person=pl.coalesce("key", "distinct_id").cast(pl.Categorical).to_physical(),
                event=pl.col("event").cast(pl.Categorical),
                t=ts.dt.cast_time_unit("us").cast(pl.Int64),
                day=local.dt.date().cast(pl.Int32),
            )
            .collect()
        )

    def run(self, name: str, spec: dict[str, Any]) -> Any:
        kind = name.split(":")[0]
        if kind in ("dau", "wau", "mau", "dau_mau"):
            return self._trends(spec)
        return getattr(self, "_" + kind)(spec)

    # ---- helpers --------------------------------------------------------------------------------------
    def _between(self, first: int, last: int) -> pl.DataFrame:
        return self.df.filter(pl.col("day").is_between(first, last))

    def _rolling(self, r: Range, window: int) -> list[int]:
        pairs = self._between(r.first - window + 1, r.last).select("person", "day").unique()
        return [
            int(pairs.filter(pl.col("day").is_between(d - window + 1, d))["person"].n_unique())
            for d in r.days()
        ]

    # ---- queries --------------------------------------------------------------------------------------
    def _trends(self, spec: dict[str, Any]) -> list[Any]:
        r = Range.of(spec)
        math = spec["math"]
        if math == "wau":
            return self._rolling(r, 7)
        if math == "mau":
            return self._rolling(r, 30)
        per_day = self._between(r.first, r.last).group_by("day").agg(pl.col("person").n_unique())
        got = dict(per_day.iter_rows())
        dau = [int(got.get(d, 0)) for d in r.days()]
        if math == "dau":
            return dau
        mau = self._rolling(r, 30)
        return [a / m if m else 0.0 for a, m in zip(dau, mau, strict=True)]

    def _stickiness(self, spec: dict[str, Any]) -> list[int]:
        r = Range.of(spec)
        per_person = self._between(r.first, r.last).group_by("person").agg(k=pl.col("day").n_unique())
        got = dict(per_person.group_by("k").len().iter_rows())
        return [int(got.get(k, 0)) for k in range(1, len(r.days()) + 1)]

    def _retention(self, spec: dict[str, Any]) -> list[list[int]]:
        n = int(spec["intervals"])
        first = week_no(Range.of(spec).last) - 7 * (n - 1)
        pw = (
            self._between(first, first + 7 * n - 1)
            .select("person", idx=(pl.col("day") - first) // 7)
            .unique()
        )
        table = [[0] * n for _ in range(n)]
        for c, size in pw.group_by("idx").len().iter_rows():
            table[int(c)][0] = int(size)
        back = (
            pw.join(pw, on="person", suffix="_r")
            .filter(pl.col("idx_r") > pl.col("idx"))
            .group_by("idx", k=pl.col("idx_r") - pl.col("idx"))
            .len()
        )
        for c, k, v in back.iter_rows():
            table[int(c)][int(k)] = int(v)
        return table

    def _funnel(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        steps = list(spec["steps"])
        window = spec["window"]["value"] * _UNIT_SECONDS[spec["window"]["unit"]] * 1_000_000
        ev = self._between(r.first, r.last).filter(pl.col("event").is_in(steps))
        step = pl.col("event")
        attempts = ev.filter(step == steps[0]).select("person", s="t").unique().with_columns(t0=pl.col("s"))
        for k in range(1, len(steps)):
            prev, cur = f"t{k - 1}", f"t{k}"
            nxt = ev.filter(step == steps[k]).select("person", pl.col("t").alias(cur)).sort(cur)
            alive = attempts.filter(pl.col(prev).is_not_null()).sort(prev)
            dead = attempts.filter(pl.col(prev).is_null()).with_columns(pl.lit(None, pl.Int64).alias(cur))
            found = alive.join_asof(
                nxt,
                left_on=prev,
                right_on=cur,
                by="person",
                strategy="forward",
                allow_exact_matches=False,
                check_sortedness=False,
            ).with_columns(
                pl.when(pl.col(cur) <= pl.col("s") + window).then(pl.col(cur)).otherwise(None).alias(cur)
            )
            attempts = pl.concat([found, dead.select(found.columns)])
        times = [f"t{k}" for k in range(len(steps))]
        best = (
            attempts.with_columns(reached=pl.sum_horizontal([pl.col(c).is_not_null() for c in times]))
            .sort(["person", "reached", "s"], descending=[False, True, False])
            .unique("person", keep="first", maintain_order=True)
        )
        out: list[list[Any]] = [[best.height, None, None]]
        for k in range(1, len(steps)):
            d = best.filter(pl.col(f"t{k}").is_not_null()).select(
                d=(pl.col(f"t{k}") - pl.col(f"t{k - 1}")) / 1e6
            )["d"]
            out.append([len(d), py(d.mean()) if len(d) else None, py(d.median()) if len(d) else None])
        return out

    def _sessions(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        gap = int(spec.get("inactivity_minutes", 30)) * 60 * 1_000_000
        cap = int(spec.get("max_hours", 24)) * 3600 * 1_000_000
        engaged_s = float(spec.get("engaged_seconds", 10))
        pageview = list(spec.get("pageview_events", ["$pageview", "$screen"]))
        s = (
            self._between(r.first, r.last)
            .sort("person", "t", maintain_order=True)
            .with_columns(
                new=(pl.col("person") != pl.col("person").shift(1)).fill_null(True)
                | ((pl.col("t") - pl.col("t").shift(1)) > gap).fill_null(True),
                pv=pl.col("event").is_in(pageview),
            )
            .with_columns(run=pl.col("new").cum_sum())
            .with_columns(start=pl.col("t").min().over("run"))
        )
        while True:  # the max_hours cap: cut every over-long session at its first event past the cap
            s = s.with_columns(long=(pl.col("t").max().over("run", "start") - pl.col("start")) > cap)
            if not s["long"].any():
                break
            cut = (
                pl.when(pl.col("long") & (pl.col("t") > pl.col("start") + cap))
                .then(pl.col("t"))
                .min()
                .over("run", "start")
            )
            s = s.with_columns(cut=cut).with_columns(
                start=pl.when(pl.col("cut").is_not_null() & (pl.col("t") >= pl.col("cut")))
                .then(pl.col("cut"))
                .otherwise(pl.col("start"))
            )
        sess = (
            s.group_by("run", "start", maintain_order=True)
            .agg(
                pl.col("person").first(),
                pl.col("day").first(),
                duration=(pl.col("t").max() - pl.col("t").min()) / 1e6,
                pv=pl.col("pv").sum(),
            )
            .with_columns(engaged=(pl.col("duration") > engaged_s) | (pl.col("pv") >= 2))
        )
        aggs = [
            pl.len().alias("n"),
            pl.col("person").n_unique().alias("persons"),
            pl.col("duration").mean().alias("avg"),
            pl.col("duration").median().alias("median"),
            pl.col("engaged").sum().alias("engaged"),
        ]
        per_day = {row[0]: list(row[1:]) for row in sess.group_by("day").agg(aggs).iter_rows()}
        totals = sess.select(aggs).row(0) if sess.height else (0, 0, None, None, 0)
        out = [[py(v) for v in per_day.get(d, [0, 0, None, None, 0])] for d in r.days()]
        return [*out, [py(v) for v in totals]]

    def _adoption(self, spec: dict[str, Any]) -> list[list[int]]:
        r = Range.of(spec)
        weeks = self._between(r.first, r.last).select(
            "person",
            used=pl.col("event") == spec["event"],
            week=pl.col("day") - (pl.col("day") + 3) % 7,
        )
        per = weeks.group_by("week", "person").agg(pl.col("used").any())
        got = {
            w: (int(a), int(n))
            for w, a, n in per.group_by("week").agg(pl.col("used").sum(), pl.len()).iter_rows()
        }
        return [list(got.get(w, (0, 0))) for w in r.weeks()]
