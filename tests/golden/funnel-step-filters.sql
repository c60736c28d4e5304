WITH ev AS (
SELECT person_id, bd, t, m0, m1 FROM (
SELECT p.person_id, e.event, timezone('America/New_York', e.timestamp AT TIME ZONE 'UTC') AS ts, '' AS bd, CAST(round(epoch(e.timestamp) * 1000000) AS BIGINT) AS t, CASE WHEN e.event = '$pageview' AND json_extract_string(e.properties, '$."path"') IN ('/pricing') THEN 1 ELSE 0 END AS m0, CASE WHEN e.event = 'purchase' AND TRY_CAST(json_extract_string(e.properties, '$."price"') AS DOUBLE) > 5 THEN 1 ELSE 0 END AS m1
FROM events e JOIN person_distinct_ids p ON p.project_id = e.project_id AND p.distinct_id = e.distinct_id
WHERE e.project_id = 2
  AND e.timestamp >= TIMESTAMP '2024-03-01 05:00:00'
  AND e.timestamp < TIMESTAMP '2024-04-01 04:00:00'
) src
WHERE (event >= '$pageview' AND event <= 'purchase' AND CASE event WHEN '$pageview' THEN TRUE WHEN 'purchase' THEN TRUE ELSE FALSE END)
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
attempts AS (SELECT * FROM s1),
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
