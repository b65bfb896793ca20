-- Limits that hold across replicas (issue 15): the request rate per tenant
-- and the budget spend of Asks in flight, shared by every Quarry process on
-- this database.

-- GCRA (the generic cell rate algorithm, ITU-T I.371 annex A, virtual
-- scheduling form): one theoretical arrival time per bucket (tenant and
-- service), advanced atomically by one upsert per admitted request
-- (quarry_db::rate_limit). UNLOGGED: the state is rebuilt by traffic, so a
-- crash that empties it only hands every bucket a full burst.
CREATE UNLOGGED TABLE quarry.rate_limits (
    bucket text PRIMARY KEY,
    tat    timestamptz NOT NULL
);
COMMENT ON TABLE quarry.rate_limits IS 'GCRA theoretical arrival time per rate-limit bucket (tenant and service), shared by all replicas';

-- The spend of each Ask in flight, not yet charged to usage_daily, plus a
-- reservation for its next model call: visible to every replica's budget
-- check. Deleted when the Ask is charged; a hold past expires_at (its
-- replica died) no longer counts.
CREATE TABLE quarry.budget_holds (
    hold_id    uuid PRIMARY KEY,
    tenant     text NOT NULL,
    tokens     bigint NOT NULL DEFAULT 0,
    usd        float8 NOT NULL DEFAULT 0,
    expires_at timestamptz NOT NULL
);
CREATE INDEX budget_holds_tenant ON quarry.budget_holds (tenant);
COMMENT ON TABLE quarry.budget_holds IS 'tokens and USD held by Asks in flight (spent but not charged, plus the reservation of the next model call), per tenant';

-- One tenant's spend today and this month (UTC): charged plus held by live
-- holds other than p_hold, plus p_hold's own. Read under the tenant's
-- advisory transaction lock by quarry.budget_admit.
CREATE FUNCTION quarry.budget_spent(p_tenant text, p_hold uuid,
    OUT day_tokens bigint, OUT day_usd float8, OUT month_tokens bigint, OUT month_usd float8)
LANGUAGE sql STABLE AS $$
    WITH today AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d),
    charged AS (
        SELECT
          coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE day = today.d), 0)::bigint AS dt,
          coalesce(sum(cost_usd) FILTER (WHERE day = today.d), 0)::float8 AS du,
          coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint AS mt,
          coalesce(sum(cost_usd), 0)::float8 AS mu
        FROM today LEFT JOIN quarry.usage_daily u
          ON u.tenant = p_tenant AND u.day >= date_trunc('month', today.d)::date
    ),
    held AS (
        SELECT coalesce(sum(tokens), 0)::bigint AS t, coalesce(sum(usd), 0)::float8 AS u
        FROM quarry.budget_holds
        WHERE tenant = p_tenant AND (expires_at > now() OR hold_id = p_hold)
    )
    SELECT dt + t, du + u, mt + t, mu + u FROM charged, held
$$;

-- Admits the next model call of the Ask holding p_hold, atomically across
-- replicas: under the tenant's advisory transaction lock, reads the spend
-- (quarry.budget_spent) and, when no limit (0 = none) is reached, sets the
-- hold to what the Ask has spent so far plus a reservation for this call
-- (the tenant's mean tokens per model call today; the mean USD likewise),
-- so that concurrent Asks on any replica see it. Returns whether the call
-- is admitted and the spend it was judged on (before the reservation).
CREATE FUNCTION quarry.budget_admit(p_tenant text, p_hold uuid,
    p_spent_tokens bigint, p_spent_usd float8, p_ttl_secs float8,
    p_day_tokens bigint, p_month_tokens bigint, p_day_usd float8, p_month_usd float8,
    OUT admitted boolean, OUT day_tokens bigint, OUT day_usd float8,
    OUT month_tokens bigint, OUT month_usd float8)
LANGUAGE plpgsql AS $$
DECLARE
    mean_tokens bigint;
    mean_usd float8;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('quarry.budget:' || p_tenant, 0));
    DELETE FROM quarry.budget_holds WHERE tenant = p_tenant AND expires_at <= now() AND hold_id <> p_hold;
    -- this Ask's own hold counts as what it has spent so far
    INSERT INTO quarry.budget_holds (hold_id, tenant, tokens, usd, expires_at)
    VALUES (p_hold, p_tenant, p_spent_tokens, p_spent_usd, now() + make_interval(secs => p_ttl_secs))
    ON CONFLICT (hold_id) DO UPDATE SET tokens = EXCLUDED.tokens, usd = EXCLUDED.usd,
        expires_at = EXCLUDED.expires_at;
    SELECT s.day_tokens, s.day_usd, s.month_tokens, s.month_usd
      INTO day_tokens, day_usd, month_tokens, month_usd
      FROM quarry.budget_spent(p_tenant, p_hold) s;
    admitted := NOT ((p_day_tokens > 0 AND day_tokens >= p_day_tokens)
        OR (p_month_tokens > 0 AND month_tokens >= p_month_tokens)
        OR (p_day_usd > 0 AND day_usd >= p_day_usd)
        OR (p_month_usd > 0 AND month_usd >= p_month_usd));
    IF admitted THEN
        SELECT coalesce((sum(prompt_tokens + completion_tokens) / nullif(sum(model_calls), 0))::bigint, 0),
               coalesce((sum(cost_usd) / nullif(sum(model_calls), 0))::float8, 0)
          INTO mean_tokens, mean_usd
          FROM quarry.usage_daily
         WHERE tenant = p_tenant AND day = (now() AT TIME ZONE 'UTC')::date;
        UPDATE quarry.budget_holds SET tokens = p_spent_tokens + mean_tokens,
            usd = p_spent_usd + mean_usd WHERE hold_id = p_hold;
    END IF;
END
$$;
