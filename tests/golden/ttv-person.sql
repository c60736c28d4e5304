SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-02-19 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 04:00:00'
  AND e.event IN ('signup')
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 10
;

WITH ranked AS (
  SELECT person_id, ts, bd, uts, t,
    ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY t, bd) AS pos
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IN ('team', 'pro') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') ELSE '$other' END AS bd, e.timestamp AS uts, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '1900-01-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 04:00:00'
  AND e.event IN ('signup')
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) s
), first_signup AS (
  SELECT person_id, ts, bd, t FROM ranked WHERE pos = 1 AND uts >= TIMESTAMP '2024-02-19 05:00:00'
), reach AS (
  SELECT f.person_id, MIN(v.t) AS t
  FROM first_signup f JOIN (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, epoch(e.timestamp) AS t
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-02-19 05:00:00'
  AND e.timestamp < TIMESTAMP '9999-01-01 05:00:00'
  AND e.event IN ('purchase')
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) v ON v.person_id = f.person_id AND v.t >= f.t
  GROUP BY f.person_id
), per_person AS (
  SELECT f.bd, (date_trunc('week', f.ts + INTERVAL 1 DAY) - INTERVAL 1 DAY) AS cohort, reach.t - f.t AS secs
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
