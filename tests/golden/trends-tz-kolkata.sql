SELECT bd, date_trunc('day', ts) AS bucket, count(DISTINCT person_id) AS value
FROM (SELECT p.person_id, e.event, timezone('Asia/Kolkata', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-02-29 18:30:00'
  AND e.timestamp < TIMESTAMP '2024-03-31 18:30:00') s
GROUP BY 1, 2
;
