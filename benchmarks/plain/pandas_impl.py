"""The workload written plainly in pandas: one DataFrame of events in memory, groupby / merge per metric."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks.plain.common import Range, identity_map, parse_anon, py, week_no

__all__ = ["PandasImpl"]

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


class PandasImpl:
    name = "pandas"

    def __init__(self) -> None:
        self.df = pd.DataFrame()

    def load(self, parquet: list[str], timezone: str) -> None:
        ident = pq.read_table(
            parquet, columns=["distinct_id", "properties"], filters=[("event", "==", "$identify")]
        ).to_pandas()
        mapping = identity_map(
            (parse_anon(p), d) for d, p in zip(ident["distinct_id"], ident["properties"], strict=True)
        )
        df = pd.read_parquet(parquet, columns=["event", "distinct_id", "timestamp"])
        key = df["distinct_id"].map(mapping).fillna(df["distinct_id"])
        ts = df["timestamp"]
        local = (
            ts if timezone == "UTC" else ts.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)
        )
        self.df = pd.DataFrame(
            {
                "person": pd.factorize(key)[0],
                "event": df["event"].astype("category"),
                "t": ts.to_numpy().astype("datetime64[us]").astype(np.int64),
                "day": local.to_numpy().astype("datetime64[D]").astype(np.int64),
            }
        )

    def run(self, name: str, spec: dict[str, Any]) -> Any:
        kind = name.split(":")[0]
        if kind in ("dau", "wau", "mau", "dau_mau"):
            return self._trends(spec)
        return getattr(self, "_" + kind)(spec)

    # ---- helpers --------------------------------------------------------------------------------------
    def _between(self, first: int, last: int) -> pd.DataFrame:
        df = self.df
        return df[(df["day"] >= first) & (df["day"] <= last)]

    def _rolling(self, r: Range, window: int) -> list[int]:
        pairs = self._between(r.first - window + 1, r.last)[["person", "day"]].drop_duplicates()
        out = []
        for d in r.days():
            inside = pairs[(pairs["day"] > d - window) & (pairs["day"] <= d)]
            out.append(int(inside["person"].nunique()))
        return out

    # ---- queries --------------------------------------------------------------------------------------
    def _trends(self, spec: dict[str, Any]) -> list[Any]:
        r = Range.of(spec)
        math = spec["math"]
        if math == "wau":
            return self._rolling(r, 7)
        if math == "mau":
            return self._rolling(r, 30)
        dau_s = self._between(r.first, r.last).groupby("day")["person"].nunique()
        dau = [int(dau_s.get(d, 0)) for d in r.days()]
        if math == "dau":
            return dau
        mau = self._rolling(r, 30)
        return [a / m if m else 0.0 for a, m in zip(dau, mau, strict=True)]

    def _stickiness(self, spec: dict[str, Any]) -> list[int]:
        r = Range.of(spec)
        active_days = self._between(r.first, r.last).groupby("person")["day"].nunique()
        counts = active_days.value_counts()
        return [int(counts.get(k, 0)) for k in range(1, len(r.days()) + 1)]

    def _retention(self, spec: dict[str, Any]) -> list[list[int]]:
        n = int(spec["intervals"])
        last = week_no(Range.of(spec).last)
        first = last - 7 * (n - 1)
        ev = self._between(first, first + 7 * n - 1)
        pw = pd.DataFrame({"person": ev["person"], "idx": (ev["day"] - first) // 7}).drop_duplicates()
        sizes = pw.groupby("idx").size()
        pairs = pw.merge(pw, on="person", suffixes=("", "_r"))
        pairs = pairs[pairs["idx_r"] > pairs["idx"]]
        back = pairs.groupby(["idx", pairs["idx_r"] - pairs["idx"]]).size()
        table = [[0] * n for _ in range(n)]
        for c in range(n):
            table[c][0] = int(sizes.get(c, 0))
        for (c, k), v in back.items():
            table[int(c)][int(k)] = int(v)
        return table

    def _funnel(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        steps = list(spec["steps"])
        window = spec["window"]["value"] * _UNIT_SECONDS[spec["window"]["unit"]] * 1_000_000
        ev = self._between(r.first, r.last)
        ev = ev[ev["event"].isin(steps)]
        attempts = ev[ev["event"] == steps[0]][["person", "t"]].drop_duplicates()
        attempts = attempts.rename(columns={"t": "s"}).astype({"s": "float64"})
        attempts["t0"] = attempts["s"]
        for k in range(1, len(steps)):
            prev = f"t{k - 1}"
            nxt = ev[ev["event"] == steps[k]][["person", "t"]].astype({"t": "float64"}).sort_values("t")
            alive = attempts[attempts[prev].notna()].sort_values(prev)
            dead = attempts[attempts[prev].isna()].assign(**{f"t{k}": np.nan})
            found = pd.merge_asof(
                alive,
                nxt.rename(columns={"t": f"t{k}"}),
                left_on=prev,
                right_on=f"t{k}",
                by="person",
                direction="forward",
                allow_exact_matches=False,
            )
            found.loc[found[f"t{k}"] > found["s"] + window, f"t{k}"] = np.nan
            attempts = pd.concat([found, dead], ignore_index=True)
        times = [f"t{k}" for k in range(len(steps))]
        attempts["reached"] = attempts[times].notna().sum(axis=1)
        best = attempts.sort_values(["person", "reached", "s"], ascending=[True, False, True])
        best = best.drop_duplicates("person")
        out: list[list[Any]] = [[len(best), None, None]]
        for k in range(1, len(steps)):
            done = best[best[f"t{k}"].notna()]
            d = (done[f"t{k}"] - done[f"t{k - 1}"]) / 1e6
            out.append([len(done), py(d.mean()) if len(d) else None, py(d.median()) if len(d) else None])
        return out

    def _sessions(self, spec: dict[str, Any]) -> list[list[Any]]:
        r = Range.of(spec)
        gap = int(spec.get("inactivity_minutes", 30)) * 60 * 1_000_000
        cap = int(spec.get("max_hours", 24)) * 3600 * 1_000_000
        engaged_s = float(spec.get("engaged_seconds", 10))
        pageview = set(spec.get("pageview_events", ["$pageview", "$screen"]))
        ev = self._between(r.first, r.last).sort_values(["person", "t"], kind="stable")
        person, t = ev["person"].to_numpy(), ev["t"].to_numpy()
        new = np.ones(len(ev), dtype=bool)
        new[1:] = (person[1:] != person[:-1]) | (t[1:] - t[:-1] > gap)
        s = pd.DataFrame({"person": person, "t": t, "day": ev["day"].to_numpy(), "run": np.cumsum(new)})
        s["pv"] = ev["event"].isin(pageview).to_numpy()
        s["start"] = s.groupby("run")["t"].transform("min")
        while True:  # the max_hours cap: cut every over-long session at its first event past the cap
            length = s.groupby(["run", "start"])["t"].transform("max") - s["start"]
            long = length > cap
            if not long.any():
                break
            past = s["t"].where(long & (s["t"] > s["start"] + cap))
            cut = past.groupby([s["run"], s["start"]]).transform("min")
            s.loc[cut.notna() & (s["t"] >= cut), "start"] = cut
        g = s.groupby(["run", "start"])
        sess = pd.DataFrame(
            {
                "person": g["person"].first(),
                "day": g["day"].first(),
                "duration": (g["t"].max() - g["t"].min()) / 1e6,
                "pv": g["pv"].sum(),
            }
        )
        sess["engaged"] = (sess["duration"] > engaged_s) | (sess["pv"] >= 2)

        def summary(part: pd.DataFrame) -> list[Any]:
            if part.empty:
                return [0, 0, None, None, 0]
            return [
                len(part),
                int(part["person"].nunique()),
                py(part["duration"].mean()),
                py(part["duration"].median()),
                int(part["engaged"].sum()),
            ]

        by_day = dict(iter(sess.groupby("day")))
        empty = sess.iloc[0:0]
        return [summary(by_day.get(d, empty)) for d in r.days()] + [summary(sess)]

    def _adoption(self, spec: dict[str, Any]) -> list[list[int]]:
        r = Range.of(spec)
        ev = self._between(r.first, r.last)
        week = ev["day"] - (ev["day"] + 3) % 7
        active = pd.DataFrame({"week": week, "person": ev["person"]}).drop_duplicates()
        feature = ev["event"] == spec["event"]
        adopters = pd.DataFrame({"week": week[feature], "person": ev["person"][feature]}).drop_duplicates()
        n_active = active.groupby("week").size()
        n_adopt = adopters.groupby("week").size()
        return [[int(n_adopt.get(w, 0)), int(n_active.get(w, 0))] for w in r.weeks()]
