WITH per_person AS (
  SELECT bd, date_trunc('day', ts) AS bucket, person_id,
    MAX(CASE WHEN event = 'feature_x' THEN 1 ELSE 0 END) AS used,
    MAX(CASE WHEN event = '$pageview' THEN 1 ELSE 0 END) AS active
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
  AND e.event IN ('$pageview', 'feature_x')) s
  GROUP BY 1, 2, 3
)
SELECT bd, bucket, SUM(used * active) AS adopters, SUM(active) AS active
FROM per_person GROUP BY bd, bucket HAVING SUM(active) > 0
;
