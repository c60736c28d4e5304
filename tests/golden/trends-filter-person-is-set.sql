SELECT bd, date_trunc('day', ts) AS bucket, count(DISTINCT person_id) AS value
FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
  AND p.person_id IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'first_browser' AND value IS NOT NULL)) s
GROUP BY 1, 2
;
