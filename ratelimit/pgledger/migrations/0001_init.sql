-- The token service's durable record: settled usage and what it took from
-- each quota pool, purchase sagas and the tokens they credited, and the
-- transactional outbox of events for Kafka. Text bounds match package
-- ledger's (ids 128 bytes, names 64, idempotency keys 100).

CREATE TABLE usage (
    id         text PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 128),
    kind       text NOT NULL CHECK (kind IN ('consume', 'metered', 'expired')),
    user_id    text NOT NULL CHECK (octet_length(user_id) BETWEEN 1 AND 128),
    org_id     text CHECK (octet_length(org_id) BETWEEN 1 AND 128), -- NULL: no organisation charged
    provider   text NOT NULL CHECK (octet_length(provider) BETWEEN 1 AND 64),
    tier       text NOT NULL CHECK (octet_length(tier) <= 64),
    estimate   bigint NOT NULL,
    actual     bigint NOT NULL,
    settled_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE quota_charges (
    usage_id       text NOT NULL REFERENCES usage (id) ON DELETE CASCADE,
    scope          text NOT NULL CHECK (scope IN ('user', 'org')),
    subject        text NOT NULL CHECK (octet_length(subject) BETWEEN 1 AND 128),
    provider       text NOT NULL CHECK (octet_length(provider) BETWEEN 1 AND 64),
    window_start   timestamptz NOT NULL,
    from_window    bigint NOT NULL,
    from_purchased bigint NOT NULL,
    PRIMARY KEY (usage_id, scope, subject, provider, window_start)
);
-- QuotaState sums a pool's charges per window and over all windows.
CREATE INDEX quota_charges_pool_idx ON quota_charges (scope, subject, provider, window_start)
    INCLUDE (from_window, from_purchased);

CREATE TABLE sagas (
    id              uuid PRIMARY KEY,
    user_id         text NOT NULL CHECK (octet_length(user_id) BETWEEN 1 AND 128),
    scope           text NOT NULL CHECK (scope IN ('user', 'org')),
    subject         text NOT NULL CHECK (octet_length(subject) BETWEEN 1 AND 128),
    provider        text NOT NULL CHECK (octet_length(provider) BETWEEN 1 AND 64),
    tokens          bigint NOT NULL CHECK (tokens > 0),
    window_only     boolean NOT NULL,
    window_start    timestamptz, -- the window of a window-only purchase, else NULL
    idempotency_key text CHECK (octet_length(idempotency_key) BETWEEN 1 AND 100),
    status          text NOT NULL CHECK (status IN ('STARTED', 'PAYMENT_RESERVED', 'TOKENS_ALLOCATED', 'COMPLETED', 'FAILED')),
    reason          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK (window_only = (window_start IS NOT NULL))
);
CREATE UNIQUE INDEX sagas_idempotency_key ON sagas (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The recovery job's scan: sagas left in between, oldest first.
CREATE INDEX sagas_stale_idx ON sagas (updated_at, id) WHERE status IN ('STARTED', 'PAYMENT_RESERVED', 'TOKENS_ALLOCATED');

-- One credit per allocated saga, deleted when the saga is compensated.
CREATE TABLE credits (
    saga_id      uuid PRIMARY KEY REFERENCES sagas (id),
    scope        text NOT NULL,
    subject      text NOT NULL,
    provider     text NOT NULL,
    window_start timestamptz, -- NULL: the persistent purchased balance
    tokens       bigint NOT NULL CHECK (tokens > 0)
);
CREATE INDEX credits_pool_idx ON credits (scope, subject, provider, window_start) INCLUDE (tokens);

CREATE TABLE outbox (
    id           uuid PRIMARY KEY,
    seq          bigserial NOT NULL UNIQUE,
    type         text NOT NULL CHECK (octet_length(type) BETWEEN 1 AND 64),
    key          text NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 128),
    schema       integer NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz -- NULL until a relay published it
);
CREATE INDEX outbox_unpublished_idx ON outbox (seq) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
