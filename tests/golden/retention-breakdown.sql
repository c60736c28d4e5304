SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, json_extract_string(e.properties, '$."$browser"') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-04 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00'
  AND e.event IN ('$pageview')) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 3
;

WITH ev AS (
  SELECT bd, person_id, event, (date_diff('day', TIMESTAMP '2024-03-04 00:00:00', date_trunc('week', ts)) // 7) AS idx FROM (SELECT p.person_id, e.event, e.timestamp AS ts, CASE WHEN json_extract_string(e.properties, '$."$browser"') IS NULL THEN '$none' WHEN json_extract_string(e.properties, '$."$browser"') IN ('Chrome', 'Safari', 'Edge') THEN json_extract_string(e.properties, '$."$browser"') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-04 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00'
  AND e.event IN ('$pageview')) src
),
starts AS (
  SELECT DISTINCT bd, person_id, idx AS cohort FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 0 AND 4
),
returns AS (
  SELECT DISTINCT person_id, idx FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 1 AND 4
)
SELECT bd, cohort, 0 AS k, count(*) AS persons FROM starts GROUP BY 1, 2
UNION ALL
SELECT s.bd, s.cohort, r.idx - s.cohort AS k, count(*) AS persons
FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort
GROUP BY 1, 2, 3
;
