-- What each tenant used per UTC day: requests, Asks, model calls, tokens,
-- cost and the rows and bytes returned. Charged with increments (one upsert
-- per Ask or SQL statement); the budgets read a tenant's day and month.
CREATE TABLE quarry.usage_daily (
    tenant            text NOT NULL,
    day               date NOT NULL,
    requests          bigint NOT NULL DEFAULT 0,
    asks              bigint NOT NULL DEFAULT 0,
    model_calls       bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost_usd          numeric NOT NULL DEFAULT 0,
    rows              bigint NOT NULL DEFAULT 0,
    bytes             bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);
COMMENT ON TABLE quarry.usage_daily IS 'per tenant and UTC day: requests (Asks and executed SQL statements), Asks, model calls, tokens, cost in USD (model calls with a configured price) and rows and bytes returned by SQL';
