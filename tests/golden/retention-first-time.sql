WITH ev AS (
  SELECT bd, person_id, event, (date_diff('day', TIMESTAMP '2024-02-26 00:00:00', date_trunc('week', ts)) // 7) AS idx FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-02-26 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00') src
),
firsts AS (
  SELECT bd, person_id, ts, row_number() OVER (PARTITION BY person_id ORDER BY ts, bd) AS rn
  FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '0001-01-02 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-08 00:00:00'
  AND e.event IN ('signup')) h
), starts AS (
  SELECT bd, person_id, cohort FROM (
    SELECT bd, person_id, (date_diff('day', TIMESTAMP '2024-02-26 00:00:00', date_trunc('week', ts)) // 7) AS cohort FROM firsts WHERE rn = 1
  ) f WHERE cohort BETWEEN 0 AND 5
),
returns AS (
  SELECT DISTINCT person_id, idx FROM ev
  WHERE TRUE AND idx BETWEEN 1 AND 5
)
SELECT bd, cohort, 0 AS k, count(*) AS persons FROM starts GROUP BY 1, 2
UNION ALL
SELECT s.bd, s.cohort, r.idx - s.cohort AS k, count(*) AS persons
FROM starts s JOIN returns r ON r.person_id = s.person_id AND r.idx > s.cohort
GROUP BY 1, 2, 3
;
