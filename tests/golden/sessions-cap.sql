WITH gapped AS (
  SELECT person_id, event, ts, bd, t,
    CASE WHEN t - LAG(t) OVER (PARTITION BY person_id ORDER BY t) <= 2700 THEN 0 ELSE 1 END AS brk
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-08 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-03-13 04:00:00') s
), runs AS (
  SELECT person_id, event, ts, bd, t,
    SUM(brk) OVER (PARTITION BY person_id ORDER BY t
                   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run_no
  FROM gapped
), sess AS (
  SELECT person_id, MIN(bd) AS bd, arg_min(ts, t) AS start_ts,
    MAX(t) - MIN(t) AS duration,
    SUM(CASE WHEN event IN ('$pageview', '$screen') THEN 1 ELSE 0 END) AS pageviews,
    SUM(CASE WHEN FALSE THEN 1 ELSE 0 END) AS key_hits
  FROM runs GROUP BY person_id, run_no
), scored AS (
  SELECT person_id, bd, date_trunc('day', start_ts) AS bucket, duration, CASE WHEN duration > 10 OR key_hits > 0 OR pageviews >= 2 THEN 1 ELSE 0 END AS engaged
  FROM sess
)
SELECT 'b' AS lvl, bd, bucket, count(*) AS sessions, count(DISTINCT person_id) AS persons, avg(duration) AS avg_duration,
  quantile_cont(duration, 0.5) AS median_duration, sum(engaged) AS engaged
FROM scored GROUP BY bd, bucket
UNION ALL
SELECT 't' AS lvl, bd, NULL AS bucket, count(*) AS sessions, count(DISTINCT person_id) AS persons, avg(duration) AS avg_duration,
  quantile_cont(duration, 0.5) AS median_duration, sum(engaged) AS engaged
FROM scored GROUP BY bd
UNION ALL
SELECT 'x' AS lvl, NULL AS bd, NULL AS bucket,
  coalesce(max(floor(duration / 7200)), 0) AS sessions, 0 AS persons,
  NULL AS avg_duration, NULL AS median_duration, 0 AS engaged
FROM sess WHERE duration > 7200
;

WITH gapped AS (
  SELECT person_id, event, ts, bd, t,
    CASE WHEN t - LAG(t) OVER (PARTITION BY person_id ORDER BY t) <= 2700 THEN 0 ELSE 1 END AS brk
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-08 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-03-13 04:00:00') s
), runs AS (
  SELECT person_id, event, ts, bd, t,
    SUM(brk) OVER (PARTITION BY person_id ORDER BY t
                   RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run_no
  FROM gapped
), seg0 AS (
  SELECT person_id, event, ts, bd, t, run_no,
    MIN(t) OVER (PARTITION BY person_id, run_no) AS seg_start,
    MAX(t) OVER (PARTITION BY person_id, run_no) AS run_end
  FROM runs
)
, long0 AS (SELECT person_id, event, ts, bd, t, run_no, seg_start FROM seg0 WHERE run_end - seg_start > 7200)
, long1 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long0) x
)
, long2 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long1) x
)
, long3 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long2) x
)
, long4 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long3) x
)
, long5 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long4) x
)
, long6 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long5) x
)
, long7 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long6) x
)
, long8 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long7) x
)
, long9 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long8) x
)
, long10 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long9) x
)
, long11 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long10) x
)
, long12 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long11) x
)
, long13 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long12) x
)
, long14 AS (
  SELECT person_id, event, ts, bd, t, run_no, CASE WHEN t >= nxt THEN nxt ELSE seg_start END AS seg_start
  FROM (SELECT person_id, event, ts, bd, t, run_no, seg_start,
          MIN(CASE WHEN t > seg_start + 7200 THEN t END)
            OVER (PARTITION BY person_id, run_no, seg_start) AS nxt
        FROM long13) x
)
, cut AS (
  SELECT person_id, event, ts, bd, t, run_no, seg_start FROM seg0 WHERE run_end - seg_start <= 7200
  UNION ALL SELECT person_id, event, ts, bd, t, run_no, seg_start FROM long14
), marked AS (
  SELECT person_id, event, ts, bd, t, run_no, seg_start,
    ROW_NUMBER() OVER (PARTITION BY person_id, run_no, seg_start ORDER BY t, bd) AS pos
  FROM cut
), sess AS (
  SELECT person_id,
    MAX(CASE WHEN pos = 1 THEN bd END) AS bd,
    MAX(CASE WHEN pos = 1 THEN ts END) AS start_ts,
    MAX(t) - MIN(t) AS duration,
    SUM(CASE WHEN event IN ('$pageview', '$screen') THEN 1 ELSE 0 END) AS pageviews,
    SUM(CASE WHEN FALSE THEN 1 ELSE 0 END) AS key_hits
  FROM marked GROUP BY person_id, run_no, seg_start
), scored AS (
  SELECT person_id, bd, date_trunc('day', start_ts) AS bucket, duration, CASE WHEN duration > 10 OR key_hits > 0 OR pageviews >= 2 THEN 1 ELSE 0 END AS engaged
  FROM sess
)
SELECT 'b' AS lvl, bd, bucket, count(*) AS sessions, count(DISTINCT person_id) AS persons, avg(duration) AS avg_duration,
  quantile_cont(duration, 0.5) AS median_duration, sum(engaged) AS engaged
FROM scored GROUP BY bd, bucket
UNION ALL
SELECT 't' AS lvl, bd, NULL AS bucket, count(*) AS sessions, count(DISTINCT person_id) AS persons, avg(duration) AS avg_duration,
  quantile_cont(duration, 0.5) AS median_duration, sum(engaged) AS engaged
FROM scored GROUP BY bd
;
