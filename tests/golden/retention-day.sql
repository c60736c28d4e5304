WITH ev AS (
  SELECT bd, person_id, event, date_diff('day', TIMESTAMP '2024-03-29 00:00:00', date_trunc('day', ts)) AS idx FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-29 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00'
  AND e.event IN ('$pageview')) src
),
starts AS (
  SELECT DISTINCT bd, person_id, idx AS cohort FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 0 AND 9
),
returns AS (
  SELECT DISTINCT person_id, idx FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 1 AND 9
)
SELECT bd, cohort, 0 AS k, count(*) AS persons FROM starts GROUP BY 1, 2
UNION ALL
SELECT s.bd, s.cohort, r.idx - s.cohort AS k, count(*) AS persons
FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort
GROUP BY 1, 2, 3
;
