SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-10 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-14 04:00:00'
  AND e.event IN ('$pageview')
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 10
;

WITH ev AS (
  SELECT bd, person_id, event, (date_diff('day', TIMESTAMP '2024-03-10 00:00:00', (date_trunc('week', ts + INTERVAL 1 DAY) - INTERVAL 1 DAY)) // 7) AS idx FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IN ('team', 'pro') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-10 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-14 04:00:00'
  AND e.event IN ('$pageview')
  AND p.person_id NOT IN (SELECT person_id FROM person_properties WHERE project_id = 2 AND key = 'plan' AND value IN ('free'))) src
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
