SELECT v, count(DISTINCT person_id) AS n FROM (SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'plan') AS v
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00'
  AND e.event IN ('$pageview')) s WHERE v IS NOT NULL GROUP BY v ORDER BY n DESC, v LIMIT 10
;

WITH ev AS (
SELECT person_id, bd, t, m0, m1 FROM (
SELECT p.person_id, e.event, e.timestamp AS ts, CASE WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'plan') IS NULL THEN '$none' WHEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'plan') IN ('free', 'pro', 'team') THEN (SELECT max(pp.value) FROM person_properties pp WHERE pp.project_id = 1 AND pp.person_id = p.person_id AND pp.key = 'plan') ELSE '$other' END AS bd, CAST(round(epoch(e.timestamp) * 1000000) AS BIGINT) AS t, CASE WHEN e.event = '$pageview' THEN 1 ELSE 0 END AS m0, CASE WHEN e.event = 'feature_x' THEN 1 ELSE 0 END AS m1
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00'
) src
),
tl AS (SELECT person_id, t, max(m0) AS m0, max(m1) AS m1, min(CASE WHEN m0 = 1 THEN bd END) AS bd FROM ev GROUP BY person_id, t),
seq AS (SELECT person_id, t AS s, bd, m0, lead(t, 1) OVER (PARTITION BY person_id ORDER BY t) AS l1, lead(m1, 1) OVER (PARTITION BY person_id ORDER BY t) AS f1 FROM tl),
attempts AS (SELECT person_id, s, bd, s AS t0, CASE WHEN f1 = 1 AND l1 <= s + 1209600000000 THEN l1 END AS t1 FROM seq WHERE m0 = 1),
best AS (SELECT * FROM (
  SELECT a.*, row_number() OVER (PARTITION BY person_id ORDER BY CASE WHEN t0 IS NULL THEN 0 ELSE 1 END + CASE WHEN t1 IS NULL THEN 0 ELSE 1 END DESC, s) AS rn
  FROM attempts a ) r WHERE rn = 1)
SELECT bd, level, count(*) AS persons, avg(d) AS avg_s, quantile_cont(d, 0.5) AS median_s
FROM (
SELECT bd, 0 AS level, CAST(NULL AS DOUBLE) AS d FROM best
UNION ALL SELECT bd, 1, (t1 - t0) / 1000000.0 FROM best WHERE t1 IS NOT NULL
) lv
GROUP BY bd, level
;
