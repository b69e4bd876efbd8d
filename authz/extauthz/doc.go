// Package extauthz is the Envoy ext_authz server:
// envoy.service.auth.v3.Authorization/Check takes the credential from
// X-Api-Key or from Authorization: Bearer — a JWT this service issued, or
// an API key (as OpenAI-style clients send it). On OK it sets
// x-leaky-user-id and x-leaky-tier for the account charged (the caller, or
// an OAuth2 client's owner at the owner's tier: store.Principal.Account),
// x-leaky-roles (the caller's own, comma-separated), x-leaky-org-id (when
// x-leaky-org names an organisation the caller belongs to, otherwise 403;
// always an organisation app's own), x-leaky-provider (the first path
// segment, or the third of /api/v1/<p>/…, or the body's "provider", when
// the policy lists it) and x-leaky-estimate (tokens, when Envoy forwarded
// the body, read as the path's API reads it; a body Envoy truncated is
// scaled to its content-length, and refused 411 without one: estimate.go);
// the names are package internal/contract's.
// The headers set overwrite the client's. headers_to_remove carries every
// other client-sent x-leaky-* (but x-leaky-org), also spelt with
// underscores (x_leaky_user_id), and the credential header,
// X-Api-Key or Authorization, so neither our API keys nor our JWTs reach
// the upstream; never a name it sets, since Envoy removes after it sets. A
// request carrying both X-Api-Key and Authorization is refused 401. Under
// the service's own API (/api/v1/auth/, /oauth2/, canonical paths only)
// the credentials stay, since the upstream is this service and
// authenticates the caller again (Authorization first, as the HTTP API
// does). Refusals are 401 with WWW-Authenticate, 403 (forbidden_org, or
// forbidden_role on the admin paths), and 400 for an undecodable path or
// one with a segment only some reading makes a dot-segment ("..;",
// "%2e%2e", "..%00", "..%2f"),
// each with the JSON body {"error": code, "message": …}.
//
// Paths are judged by one rule (judge), each side erring safe. A public
// prefix applies only when the path as sent is canonical: decoding and
// cleaning leave it unchanged (no percent-escapes, dot-segments or "//")
// and it holds no ';' or backslash; any other path needs credentials. A
// public path ignores credentials: none is verified, so an expired token
// cannot keep a client from logging in or refreshing, and no identity is
// set. An admin prefix applies when any reading of the path an upstream
// might make (readings: escapes decoded zero to four times, the query cut
// at a decoded '?' or not, "\" as "/", ";params" and trailing dots and
// blanks dropped or not, dot-segments resolved or not, case folded) lies
// under it. Prefixes match at
// segment boundaries ("/api/v1/admin/" covers "/api/v1/admin" but not
// "/api/v1/administrators"). Envoy must still normalise what it forwards,
// so the upstream routes on the path Check saw: run the HTTP connection
// manager with normalize_path: true, merge_slashes: true and
// path_with_escaped_slashes_action: REJECT_REQUEST.
//
// A JWT is verified in memory only (RS256 pinned, iss, aud and exp
// required, kid looked up in the loaded key set). Revoking an access token
// therefore shows in introspection at once but in Check only at its expiry
// (authz's TokenTTL, 15 minutes by default). A client's token must carry
// its owner (the account charged), else it is refused 401. An API key is verified
// through authz/keyauth's cache keyed by its digest (APIKeyCacheTTL, 30 s):
// a revoked key stops working on the replica that revoked it at once and on
// the others within the TTL. Every store call made by Check has the
// CheckTimeout deadline (150 ms); when the store fails Check answers
// Options.StoreFailure: 503 JSON ("deny") or gRPC UNAVAILABLE ("error").
// It also estimates the request's tokens from its body (estimate.go).
package extauthz
