SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, json_extract_string(e.properties, '$."$browser"') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
  AND e.event IN ('$pageview')) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 3
;

WITH per_interval AS (
  SELECT bd, person_id, date_trunc('day', ts) AS bucket, count(*) AS n
  FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, CASE WHEN json_extract_string(e.properties, '$."$browser"') IS NULL THEN '$none' WHEN json_extract_string(e.properties, '$."$browser"') IN ('Firefox', 'Safari', 'Chrome') THEN json_extract_string(e.properties, '$."$browser"') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
  AND e.event IN ('$pageview')) s
  GROUP BY 1, 2, 3
), per_person AS (
  SELECT bd, person_id, count(*) AS k FROM per_interval WHERE n >= 1 GROUP BY 1, 2
)
SELECT bd, k, count(*) AS persons FROM per_person GROUP BY 1, 2
;
