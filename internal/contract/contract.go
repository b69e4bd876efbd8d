// Package contract is the one home of the wire contract between Envoy, authz
// and ratelimit (DESIGN §3, README "The wire contract"): the rate-limit
// domain, the x-leaky-* headers authz sets, the descriptor keys Envoy builds
// from them, the scopes of the buckets and the bucket-key scheme. Every
// service, tool and test reads the names from here, so renaming one is a
// change to this package (and its test, which pins the wire values).
//
// The flow it describes: authz answers an OK Check with the identity
// headers; Envoy's rate-limit actions turn them into descriptors (see
// Request.Descriptors) with the estimate as hits_addend; ratelimit parses
// each descriptor (Parser) into the bucket it charges (Descriptor.Key).
// Code that holds a plain request instead of Envoy protos (the token REST
// API, metering) builds a Request and goes through the same steps.
package contract

// Domain is the rate-limit domain of the leaky-tokens buckets.
const Domain = "leaky-tokens"

// Headers authz sets on an OK Check (Envoy overwrites any the client sent).
const (
	// HeaderPrefix is reserved: Envoy and authz strip every client-sent
	// header with it, except HeaderOrg.
	HeaderPrefix = "x-leaky-"
	// HeaderUserID is the caller's user id.
	HeaderUserID = "x-leaky-user-id"
	// HeaderOrgID is the organisation charged, set only when the caller is
	// a member of the one named in HeaderOrg.
	HeaderOrgID = "x-leaky-org-id"
	// HeaderTier is the policy's tier for the caller's roles.
	HeaderTier = "x-leaky-tier"
	// HeaderProvider is the provider the request goes to, when the policy
	// lists it.
	HeaderProvider = "x-leaky-provider"
	// HeaderEstimate is the request's token estimate, a decimal integer.
	HeaderEstimate = "x-leaky-estimate"
	// HeaderRoles is the caller's roles, comma-separated.
	HeaderRoles = "x-leaky-roles"
)

// HeaderOrg is the request header a client sends to name the organisation
// to charge; it is the one x-leaky-* header a client may send.
const HeaderOrg = "x-leaky-org"

// HeaderAPIKey is the request header a client may send an API key in
// (besides "Authorization: Bearer"). authz removes it from the request
// before Envoy forwards it: no key of ours reaches a provider.
const HeaderAPIKey = "x-api-key"

// Descriptor entry keys of the leaky-tokens domain.
const (
	KeyProvider = "provider"
	KeyTier     = "tier"
	KeyUser     = "user"
	KeyOrg      = "org"
	// KeyRequestID is the one entry of a descriptor of its own,
	// (request_id, <x-request-id>), that names a request's reservation so
	// the metering (ext_proc) can settle it. It is no bucket.
	KeyRequestID = "request_id"
)

// HeaderRequestID is the request id Envoy sets (a fresh UUID for every
// request from outside) and hands to the rate-limit descriptors and to the
// metering.
const HeaderRequestID = "x-request-id"

// Scope names a kind of bucket. It is the name in a descriptor status and
// the "scope" of an OVER_LIMIT body.
type Scope string

// The scopes of the leaky-tokens buckets.
const (
	// ScopeUser is a user's own bucket, sized by the tier's entry for the
	// provider: descriptor (provider,P)(tier,T)(user,U).
	ScopeUser Scope = "user"
	// ScopeOrg is an organisation's shared pool for a provider:
	// descriptor (provider,P)(org,O).
	ScopeOrg Scope = "org"
	// ScopeProvider is a provider's global pool: descriptor (provider,P).
	ScopeProvider Scope = "provider"
)

// Entry is one key/value entry of a descriptor.
type Entry struct {
	Key, Value string
}
