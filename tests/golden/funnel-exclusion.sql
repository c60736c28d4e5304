WITH ev AS (
SELECT person_id, bd, t, m0, m1, m2, x0 FROM (
SELECT p.person_id, e.event, e.timestamp AS ts, '' AS bd, CAST(round(epoch(e.timestamp) * 1000000) AS BIGINT) AS t, CASE WHEN e.event = 'signup' THEN 1 ELSE 0 END AS m0, CASE WHEN e.event = '$pageview' THEN 1 ELSE 0 END AS m1, CASE WHEN e.event = 'purchase' THEN 1 ELSE 0 END AS m2, CASE WHEN e.event = 'invite' THEN 1 ELSE 0 END AS x0
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 1
  AND e.timestamp >= TIMESTAMP '2024-03-01 00:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 00:00:00'
) src
WHERE (event >= '$pageview' AND event <= 'signup' AND CASE event WHEN '$pageview' THEN TRUE WHEN 'invite' THEN TRUE WHEN 'purchase' THEN TRUE WHEN 'signup' THEN TRUE ELSE FALSE END)
),
s0 AS (SELECT person_id, t AS s, min(bd) AS bd, t AS t0 FROM ev WHERE m0 = 1 GROUP BY person_id, t),
s1 AS (
SELECT person_id, s, bd, t0, CASE WHEN nx <= s + 1209600000000 THEN nx END AS t1 FROM (
  SELECT person_id, s, bd, t0, kind, min(te) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS nx
  FROM (SELECT person_id, s, bd, t0, t0 AS o, 1 AS kind, NULL AS te FROM s0 WHERE t0 IS NOT NULL
        UNION ALL SELECT person_id, NULL, NULL, NULL, t, 0, t FROM ev WHERE m1 = 1) u
) w WHERE kind = 1
UNION ALL SELECT person_id, s, bd, t0, NULL FROM s0 WHERE t0 IS NULL
),
s2 AS (
SELECT person_id, s, bd, t0, t1, CASE WHEN nx <= s + 1209600000000 THEN nx END AS t2 FROM (
  SELECT person_id, s, bd, t0, t1, kind, min(te) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS nx
  FROM (SELECT person_id, s, bd, t0, t1, t1 AS o, 1 AS kind, NULL AS te FROM s1 WHERE t1 IS NOT NULL
        UNION ALL SELECT person_id, NULL, NULL, NULL, NULL, t, 0, t FROM ev WHERE m2 = 1) u
) w WHERE kind = 1
UNION ALL SELECT person_id, s, bd, t0, t1, NULL FROM s1 WHERE t1 IS NULL
),
attempts AS (SELECT * FROM s2),
excluded AS (
SELECT a.person_id FROM attempts a JOIN ev x ON x.person_id = a.person_id AND x.x0 = 1
WHERE a.t0 IS NOT NULL AND x.t > a.t0
  AND ((a.t2 IS NOT NULL AND x.t < a.t2) OR (a.t2 IS NULL AND x.t <= a.s + 1209600000000))
),
best AS (SELECT * FROM (
  SELECT a.*, row_number() OVER (PARTITION BY person_id ORDER BY CASE WHEN t0 IS NULL THEN 0 ELSE 1 END + CASE WHEN t1 IS NULL THEN 0 ELSE 1 END + CASE WHEN t2 IS NULL THEN 0 ELSE 1 END DESC, s) AS rn
  FROM attempts a WHERE person_id NOT IN (SELECT person_id FROM excluded)) r WHERE rn = 1)
SELECT bd, level, count(*) AS persons, avg(d) AS avg_s, quantile_cont(d, 0.5) AS median_s
FROM (
SELECT bd, 0 AS level, CAST(NULL AS DOUBLE) AS d FROM best
UNION ALL SELECT bd, 1, (t1 - t0) / 1000000.0 FROM best WHERE t1 IS NOT NULL
UNION ALL SELECT bd, 2, (t2 - t1) / 1000000.0 FROM best WHERE t2 IS NOT NULL
) lv
GROUP BY bd, level
;
