SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-02-19 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 04:00:00'
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 10
;

WITH per_person AS (
  SELECT bd, (date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL 1 DAY) AS bucket, person_id,
    MAX(CASE WHEN event = 'feature_x' THEN 1 ELSE 0 END) AS used,
    MAX(CASE WHEN TRUE THEN 1 ELSE 0 END) AS active
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IN ('team', 'pro') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-02-19 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 04:00:00'
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) s
  GROUP BY 1, 2, 3
)
SELECT bd, bucket, SUM(used * active) AS adopters, SUM(active) AS active
FROM per_person GROUP BY bd, bucket HAVING SUM(active) > 0
;
