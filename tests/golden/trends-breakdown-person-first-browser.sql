SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'first_browser') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00') s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 2
;

SELECT bd, date_trunc('day', ts) AS bucket, count(*) AS value
FROM (SELECT p.person_id, e.event, e.timestamp AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'first_browser') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'first_browser') IN ('Chrome', 'Safari') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'first_browser') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00') s
GROUP BY 1, 2
;
