SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00') s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 10
;

WITH pd AS (SELECT DISTINCT bd, person_id, CAST(ts AS DATE) AS day FROM (SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') IN ('team', 'free', 'pro') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 2 AND pp.person_id = p.person_id AND pp.key = 'plan') ELSE '$other' END AS bd
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-02-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00') s)
SELECT pd.bd, d.day, count(DISTINCT pd.person_id) AS value
FROM (VALUES (DATE '2024-03-01'), (DATE '2024-03-02'), (DATE '2024-03-03'), (DATE '2024-03-04'), (DATE '2024-03-05'), (DATE '2024-03-06'), (DATE '2024-03-07'), (DATE '2024-03-08'), (DATE '2024-03-09'), (DATE '2024-03-10'), (DATE '2024-03-11'), (DATE '2024-03-12'), (DATE '2024-03-13'), (DATE '2024-03-14'), (DATE '2024-03-15'), (DATE '2024-03-16'), (DATE '2024-03-17'), (DATE '2024-03-18'), (DATE '2024-03-19'), (DATE '2024-03-20'), (DATE '2024-03-21'), (DATE '2024-03-22'), (DATE '2024-03-23'), (DATE '2024-03-24'), (DATE '2024-03-25'), (DATE '2024-03-26'), (DATE '2024-03-27'), (DATE '2024-03-28'), (DATE '2024-03-29'), (DATE '2024-03-30'), (DATE '2024-03-31')) AS d(day) JOIN pd ON pd.day <= d.day AND pd.day >= (d.day + to_days(CAST(-29 AS INTEGER)))
GROUP BY 1, 2
;
