SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, json_extract_string(e.properties, '$."path"') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00') s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 4
;

SELECT bd, date_trunc('day', ts) AS bucket, count(*) AS value
FROM (SELECT p.person_id, e.event, e.timestamp AS ts, CASE WHEN json_extract_string(e.properties, '$."path"') IS NULL THEN '$none' WHEN json_extract_string(e.properties, '$."path"') IN ('/home', '/50%_off', '/back\slash', '/docs') THEN json_extract_string(e.properties, '$."path"') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00') s
GROUP BY 1, 2
;
