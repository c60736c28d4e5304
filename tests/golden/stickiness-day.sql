WITH per_interval AS (
  SELECT bd, person_id, date_trunc('day', ts) AS bucket, count(*) AS n
  FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00') s
  GROUP BY 1, 2, 3
), per_person AS (
  SELECT bd, person_id, count(*) AS k FROM per_interval WHERE n >= 1 GROUP BY 1, 2
)
SELECT bd, k, count(*) AS persons FROM per_person GROUP BY 1, 2
;
