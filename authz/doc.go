// Package authz is the identity half of the Leaky Tokens request path: an
// Envoy ext_authz service, an OAuth2 server on ory/fosite, and the REST API
// for users, organisations and API keys, on PostgreSQL (authz/pgstore) or in
// memory (authz/store).
//
// # ext_authz (gRPC, default 127.0.0.1:9091)
//
// envoy.service.auth.v3.Authorization/Check takes the credential from
// X-Api-Key or from Authorization: Bearer — a JWT this service issued, or
// an API key (as OpenAI-style clients send it). On OK it sets
// x-leaky-user-id, x-leaky-tier (the policy's tier for the caller's roles),
// x-leaky-roles (comma-separated), x-leaky-org-id (only when x-leaky-org
// names an organisation the caller belongs to; otherwise 403),
// x-leaky-provider (the first path segment, or the third of /api/v1/<p>/…, or the
// body's "provider", when the policy lists it) and x-leaky-estimate (tokens,
// when Envoy forwarded the body; from content-length when the body is shorter
// than that, as when Envoy truncated it); the names are package
// internal/contract's. headers_to_remove carries every
// client-sent x-leaky-* (but x-leaky-org) and the credential header, X-Api-Key
// or Authorization, so neither our API keys nor our JWTs reach the upstream. A
// request carrying both X-Api-Key and Authorization is refused 401. Under the
// service's own API (/api/v1/auth/, /oauth2/, canonical paths only) the
// credentials stay, since the upstream is this service and authenticates the
// caller again (Authorization first, as the HTTP API does). Refusals are 401 with WWW-Authenticate, 403
// (forbidden_org, or forbidden_role on the admin paths), and 400 for an
// undecodable path, each with the JSON body {"error": code, "message": …}.
//
// Prefixes match at segment boundaries ("/api/v1/admin/" covers
// "/api/v1/admin" but not "/api/v1/administrators"). The admin prefixes are
// matched against the decoded and cleaned path, so no escape or dot-segment
// dodges them. A public prefix lets a request through without credentials
// only when the path as sent is canonical: decoding and cleaning leave it
// unchanged (no percent-escapes, dot-segments or "//") and it holds no ';'
// or backslash; any other path needs credentials. Envoy must still
// normalise what it forwards, so the upstream routes on the path Check saw:
// run the HTTP connection manager with normalize_path: true,
// merge_slashes: true and path_with_escaped_slashes_action: REJECT_REQUEST.
//
// A JWT is verified in memory only (RS256 pinned, iss, aud and exp
// required, kid looked up in the loaded key set). Revoking an access token
// therefore shows in introspection at once but in Check only at its expiry
// (TokenTTL, 15 minutes by default). An API key is verified through a cache
// keyed by its digest (APIKeyCacheTTL, 30 s): a revoked key stops working on
// the replica that revoked it at once and on the others within the TTL. A
// malformed key or bad checksum is refused without a lookup; refusals are
// cached apart from valid keys (a tenth of APIKeyCacheSize), so unknown keys
// never evict valid ones. Every store call made by Check has the
// CheckTimeout deadline (150 ms); when the store fails Check answers
// StoreFailure: 503 JSON ("deny") or gRPC UNAVAILABLE ("error").
//
// # HTTP (default 127.0.0.1:8081)
//
//	POST   /api/v1/auth/register               {username, email, password} → 201 {userId, username, email, roles, token, tokenType, expiresIn, refreshToken}; 409 taken
//	POST   /api/v1/auth/login                  {username, password} → 200 as above; 401 invalid_credentials
//	GET    /api/v1/auth/me
//	POST   /api/v1/auth/api-keys               {userId?, name?, expiresAt?} → 201 {id, userId, name, createdAt, expiresAt, apiKey}; self, or ADMIN for anyone
//	GET    /api/v1/auth/api-keys?userId=       → [{id, userId, name, createdAt, expiresAt}]
//	DELETE /api/v1/auth/api-keys/{id}          (also ?userId=&apiKeyId=) → 204; 404 when not the caller's
//	GET    /api/v1/auth/api-keys/validate      X-Api-Key, with the owner's (or an ADMIN's) Bearer token
//	POST   /api/v1/auth/users/{id}/roles       {role} (ADMIN)
//	DELETE /api/v1/auth/users/{id}/roles/{role} (ADMIN)
//	POST   /api/v1/auth/orgs                   {id, name?} → 201; the caller becomes its admin
//	GET    /api/v1/auth/orgs                   the caller's organisations
//	GET    /api/v1/auth/orgs/{org}/members     organisation admins or ADMIN
//	POST   /api/v1/auth/orgs/{org}/members     {userId, admin?}
//	DELETE /api/v1/auth/orgs/{org}/members/{user}
//	POST   /api/v1/auth/clients                {orgId?, roles?} → 201 {clientId, clientSecret}: a client_credentials client
//	POST   /oauth2/token                       client_credentials; refresh_token (client_id=leaky-cli for login tokens), rotating
//	POST   /oauth2/introspect, /oauth2/revoke
//	GET    /oauth2/jwks, /.well-known/jwks.json, /.well-known/oauth-authorization-server
//	GET    /livez, /readyz (store and keys), /metrics
//
// Every 4xx and 5xx of the REST API carries {"error": code, "message": …},
// unknown paths (404) and wrong methods (405, with Allow) included; the OAuth2
// endpoints answer in RFC 6749 form ({"error", "error_description"}). REST
// and OAuth2 handlers run under a 5 s deadline; login and registration answer
// 503 when no argon2 slot frees up before it.
//
// Role, API key and organisation management decide on the caller's current
// roles, read from the store at each request, not on the token's (which may
// be up to TokenTTL old), and organisation admin rights on the stored
// memberships. A client_credentials token carries the client's roles that
// its owner still holds (all of them while the owner is ADMIN) and, for an
// organisation's app, the organisation while the owner still administers
// it; otherwise the grant is refused (unauthorized_client). Client roles
// follow the role pattern, at most 16. Only confidential clients (HTTP Basic)
// may introspect. The discovery metadata's URLs start with PublicURL
// (default http://<http-addr>), never with the request's Host.
// To a caller who is not a member, another's organisation does not exist
// (404); another user's key cannot be listed (403), revoked (404) or
// validated (401).
//
// # Keys and secrets
//
// API keys are lt_<id>_<secret><check> (authz/apikey): 192 random bits, a
// CRC-32 checksum, shown once, stored as a SHA-256 digest and compared in
// constant time. Passwords are argon2id. JWT signing keys (RSA 2048) are
// stored sealed with AES-256-GCM under a key derived from SigningSecret,
// loaded at start, reloaded every KeyRefresh and rotated every KeyRotation
// by kid, so tokens survive restarts and are valid on every replica.
// Refresh tokens rotate on use; presenting a used one revokes its whole
// family and leaves a tombstone for it, so a token a concurrent rotation
// stores after the revocation is inactive too. The key set is swapped only
// when its kids change, so cached JWT verifications survive a reload.
//
// The bootstrap admin (AdminUsername) is created at start when no user has
// that name. An existing account is never changed: a user who registered the
// name gets no role, and a revoked ADMIN stays revoked across restarts. When
// the account cannot be created (its email is taken) the service warns and
// reports no password. No password, key, token, secret or database URL is
// ever logged.
package authz
