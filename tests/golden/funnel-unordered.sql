WITH ev AS (
SELECT person_id, bd, t, g0, g1, g2 FROM (
SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, CAST(round(epoch(e.timestamp) * 1000000) AS BIGINT) AS t, CASE WHEN e.event = 'feature_x' THEN 1 ELSE 0 END AS g0, CASE WHEN e.event = '$pageview' THEN 1 ELSE 0 END AS g1, CASE WHEN e.event = 'purchase' THEN 1 ELSE 0 END AS g2
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
) src
WHERE (event >= '$pageview' AND event <= 'purchase' AND CASE event WHEN '$pageview' THEN TRUE WHEN 'feature_x' THEN TRUE WHEN 'purchase' THEN TRUE ELSE FALSE END)
),
u0 AS (SELECT person_id, t AS s, min(bd) AS bd FROM ev WHERE g0 = 1 OR g1 = 1 OR g2 = 1 GROUP BY person_id, t),
q0 AS (SELECT person_id, t, lead(t, 0) OVER (PARTITION BY person_id ORDER BY t) AS r1 FROM (SELECT DISTINCT person_id, t FROM ev WHERE g0 = 1) d),
u1 AS (
SELECT person_id, s, bd, CASE WHEN n1 <= s + 1209600000000 THEN n1 END AS c0_1 FROM (
  SELECT person_id, s, bd, kind, min(r1) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS n1
  FROM (SELECT person_id, s, bd, s AS o, 0 AS kind, NULL AS r1 FROM u0
        UNION ALL SELECT person_id, NULL, NULL, t, 1, r1 FROM q0) u
) w WHERE kind = 0
),
q1 AS (SELECT person_id, t, lead(t, 0) OVER (PARTITION BY person_id ORDER BY t) AS r1, lead(t, 1) OVER (PARTITION BY person_id ORDER BY t) AS r2 FROM (SELECT DISTINCT person_id, t FROM ev WHERE g1 = 1) d),
u2 AS (
SELECT person_id, s, bd, c0_1, CASE WHEN n1 <= s + 1209600000000 THEN n1 END AS c1_1, CASE WHEN n2 <= s + 1209600000000 THEN n2 END AS c1_2 FROM (
  SELECT person_id, s, bd, c0_1, kind, min(r1) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS n1, min(r2) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS n2
  FROM (SELECT person_id, s, bd, c0_1, s AS o, 0 AS kind, NULL AS r1, NULL AS r2 FROM u1
        UNION ALL SELECT person_id, NULL, NULL, NULL, t, 1, r1, r2 FROM q1) u
) w WHERE kind = 0
),
q2 AS (SELECT person_id, t, lead(t, 0) OVER (PARTITION BY person_id ORDER BY t) AS r1 FROM (SELECT DISTINCT person_id, t FROM ev WHERE g2 = 1) d),
u3 AS (
SELECT person_id, s, bd, c0_1, c1_1, c1_2, CASE WHEN n1 <= s + 1209600000000 THEN n1 END AS c2_1 FROM (
  SELECT person_id, s, bd, c0_1, c1_1, c1_2, kind, min(r1) OVER (PARTITION BY person_id ORDER BY o, kind ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS n1
  FROM (SELECT person_id, s, bd, c0_1, c1_1, c1_2, s AS o, 0 AS kind, NULL AS r1 FROM u2
        UNION ALL SELECT person_id, NULL, NULL, NULL, NULL, NULL, t, 1, r1 FROM q2) u
) w WHERE kind = 0
),
attempts AS (SELECT * FROM u3),
best AS (SELECT * FROM (
  SELECT a.*, row_number() OVER (PARTITION BY person_id ORDER BY CASE WHEN c0_1 IS NULL THEN 0 ELSE 1 END + CASE WHEN c1_1 IS NULL THEN 0 ELSE 1 END + CASE WHEN c1_2 IS NULL THEN 0 ELSE 1 END + CASE WHEN c2_1 IS NULL THEN 0 ELSE 1 END DESC, s) AS rn
  FROM attempts a ) r WHERE rn = 1)
SELECT bd, level, count(*) AS persons, avg(d) AS avg_s, quantile_cont(d, 0.5) AS median_s
FROM (SELECT bd, row_number() OVER (PARTITION BY person_id ORDER BY tt) - 1 AS level, (tt - lag(tt) OVER (PARTITION BY person_id ORDER BY tt)) / 1000000.0 AS d
      FROM (
  SELECT person_id, bd, c0_1 AS tt FROM best WHERE c0_1 IS NOT NULL
  UNION ALL SELECT person_id, bd, c1_1 AS tt FROM best WHERE c1_1 IS NOT NULL
  UNION ALL SELECT person_id, bd, c1_2 AS tt FROM best WHERE c1_2 IS NOT NULL
  UNION ALL SELECT person_id, bd, c2_1 AS tt FROM best WHERE c2_1 IS NOT NULL
) reached) lv
GROUP BY bd, level
;
