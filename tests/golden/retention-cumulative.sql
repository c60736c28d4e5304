WITH ev AS (
  SELECT bd, person_id, event, date_diff('day', TIMESTAMP '2024-03-25 00:00:00', date_trunc('day', ts)) AS idx FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-25 04:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 04:00:00'
  AND e.event IN ('$pageview')) src
),
starts AS (
  SELECT DISTINCT bd, person_id, idx AS cohort FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 0 AND 13
),
returns AS (
  SELECT DISTINCT person_id, idx FROM ev
  WHERE event = '$pageview' AND idx BETWEEN 1 AND 13
)
SELECT bd, cohort, 0 AS k, count(*) AS persons FROM starts GROUP BY 1, 2
UNION ALL
SELECT bd, cohort, k, count(*) AS persons FROM (
  SELECT s.bd, s.person_id, s.cohort, max(r.idx) - s.cohort AS k
  FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort
  GROUP BY 1, 2, 3
) latest GROUP BY 1, 2, 3
;
