WITH ranked AS (
  SELECT person_id, ts, bd, uts, t,
    ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY t, bd) AS pos
  FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, e.timestamp AS uts, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '1900-01-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00'
  AND e.event IN ('signup')) s
), first_signup AS (
  SELECT person_id, ts, bd, t FROM ranked WHERE pos = 1 AND uts >= TIMESTAMP '2024-02-19 00:00:00'
), reach AS (
  SELECT f.person_id, MIN(v.t) AS t
  FROM first_signup f JOIN (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-02-19 00:00:00'
  AND e.timestamp < TIMESTAMP '9999-01-01 00:00:00'
  AND e.event IN ('activate')) v ON v.person_id = f.person_id AND v.t >= f.t
  GROUP BY f.person_id
), per_person AS (
  SELECT f.bd, date_trunc('week', f.ts) AS cohort, reach.t - f.t AS secs
  FROM first_signup f LEFT JOIN reach ON reach.person_id = f.person_id
)
SELECT 'b' AS lvl, bd, cohort, count(*) AS persons, count(secs) AS reached,
  sum(CASE WHEN secs <= 604800 THEN 1 ELSE 0 END) AS within,
  quantile_cont(secs, 0.5) AS median_secs, quantile_cont(secs, 0.75) AS p75_secs
FROM per_person GROUP BY bd, cohort
UNION ALL
SELECT 't' AS lvl, bd, NULL AS cohort, count(*) AS persons, count(secs) AS reached,
  sum(CASE WHEN secs <= 604800 THEN 1 ELSE 0 END) AS within,
  quantile_cont(secs, 0.5) AS median_secs, quantile_cont(secs, 0.75) AS p75_secs
FROM per_person GROUP BY bd
;
