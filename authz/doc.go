// Package authz is the identity half of the Leaky Tokens request path: an
// Envoy ext_authz service (authz/extauthz), an OAuth2 server on ory/fosite
// (authz/oauth), and the REST API for users, organisations and API keys,
// on the store.Store cmd/leaky hands it: PostgreSQL (authz/pgstore) or
// memory (authz/store). This package holds the Config, the Service that
// wires the sub-packages on the internal/serve runtime, the HTTP API
// (REST and the OAuth2 endpoints), password hashing, the bootstrap admin
// and policy reloading.
//
// # ext_authz (gRPC, default 127.0.0.1:9091)
//
// Check is package authz/extauthz's Server; its doc comment states what
// Check sets, removes and refuses. authz wires it to the key ring's JWTs
// (authz/keyring), the API key verifier (authz/keyauth) and the policy.
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
// 503 when no argon2 slot frees up before it, or at once when
// Config.PasswordHashQueue callers already wait. Config.PasswordHashers
// (default GOMAXPROCS-1, at least 1) bounds the hashes running at once, so a
// login flood leaves Check a core.
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
// constant time; authz/keyauth verifies and caches them. Passwords are
// argon2id. JWT signing keys (RSA 2048) are authz/keyring's: stored sealed
// with AES-256-GCM under a key derived from SigningSecret, loaded at start,
// reloaded every KeyRefresh and rotated every KeyRotation by kid, so tokens
// survive restarts and are valid on every replica. The OAuth2 server is
// authz/oauth, on fosite: refresh tokens rotate on use, and presenting a
// used one revokes its whole family.
//
// The bootstrap admin (AdminUsername) is created at start when no user has
// that name. An existing account is never changed: a user who registered the
// name gets no role, and a revoked ADMIN stays revoked across restarts. When
// the account cannot be created (its email is taken) the service warns and
// reports no password. No password, key, token, secret or database URL is
// ever logged.
package authz
