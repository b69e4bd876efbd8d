-- Users, roles, API keys, organisations, OAuth2 clients and tokens, and the
-- sealed JWT signing keys of the authz service.

CREATE TABLE users (
    id            text PRIMARY KEY,
    username      text NOT NULL CHECK (length(username) BETWEEN 1 AND 50),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 100),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL
);
-- Usernames and emails are unique regardless of case.
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE user_roles (
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role    text NOT NULL CHECK (role = upper(role)),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE api_keys (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       text NOT NULL DEFAULT '',
    digest     bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at timestamptz NOT NULL,
    expires_at timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

CREATE TABLE orgs (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE org_members (
    org_id  text NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    admin   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user_idx ON org_members (user_id);

CREATE TABLE oauth_clients (
    id            text PRIMARY KEY,
    secret_digest bytea NOT NULL,
    owner_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id        text REFERENCES orgs (id) ON DELETE CASCADE,
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL
);

CREATE TABLE signing_keys (
    kid        text PRIMARY KEY,
    sealed     bytea NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE oauth_tokens (
    kind       text NOT NULL CHECK (kind IN ('access', 'refresh')),
    signature  text NOT NULL,
    request_id text NOT NULL,
    active     boolean NOT NULL,
    data       bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (kind, signature)
);
CREATE INDEX oauth_tokens_family_idx ON oauth_tokens (kind, request_id);
