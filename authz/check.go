package authz

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	pathpkg "path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leakytokens/leaky/authz/keyauth"
	"github.com/leakytokens/leaky/authz/keyring"
	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// maxCredentialLen bounds the Authorization and X-Api-Key values.
const maxCredentialLen = 8 << 10

var orgIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)

// checkServer answers Envoy's ext_authz Check. A JWT is verified in memory;
// an API key through the keyauth.Verifier's cache, else the store under the
// Check deadline.
type checkServer struct {
	tokens  *keyring.Tokens
	keys    *keyauth.Verifier
	policy  *atomic.Pointer[policy.Policy]
	cfg     *Config
	metrics *metrics
	logger  *slog.Logger
	// storeLog limits store-failure warnings to one a second; the metric
	// counts them all.
	storeLog *serve.Throttle
}

var _ authv3.AuthorizationServer = (*checkServer)(nil)

// denial is a refused check: its HTTP status, stable error code and message.
type denial struct {
	status  typev3.StatusCode
	code    string
	message string
}

func (d *denial) Error() string { return d.code + ": " + d.message }

func unauthenticated(msg string) *denial {
	return &denial{typev3.StatusCode_Unauthorized, "unauthenticated", msg}
}

func forbidden(code, msg string) *denial {
	return &denial{typev3.StatusCode_Forbidden, code, msg}
}

// Check implements authv3.AuthorizationServer.
func (s *checkServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	h := requestHeaders(httpReq)
	remove := clientHeaders(h)
	cred, set, err := s.decide(ctx, httpReq, h, &remove)
	result := "ok"
	var resp *authv3.CheckResponse
	var d *denial
	switch {
	case err == nil:
		resp = okResponse(set, remove)
	case errors.As(err, &d):
		switch d.status {
		case typev3.StatusCode_Unauthorized:
			result = "unauthenticated"
		case typev3.StatusCode_Forbidden:
			result = "forbidden"
		default:
			result = "invalid"
		}
		resp = deniedResponse(d)
	default: // the store failed or was too slow
		result = "unavailable"
		s.metrics.storeErrors.Inc()
		if ok, skipped := s.storeLog.Allow(time.Now()); ok {
			s.logger.LogAttrs(ctx, slog.LevelWarn, "check: store unavailable",
				slog.String(serve.KeyError, err.Error()), slog.Int64(serve.KeySkipped, skipped))
		}
		if s.cfg.StoreFailure == "error" {
			s.metrics.checks.WithLabelValues(cred, result).Inc()
			s.metrics.checkSeconds.Observe(time.Since(start).Seconds())
			return nil, status.Error(codes.Unavailable, "authorization store unavailable")
		}
		resp = deniedResponse(&denial{typev3.StatusCode_ServiceUnavailable, "unavailable", "authorization store unavailable, retry later"})
	}
	s.metrics.checks.WithLabelValues(cred, result).Inc()
	s.metrics.checkSeconds.Observe(time.Since(start).Seconds())
	return resp, nil
}

// decide authenticates and authorises one request. It returns the kind of
// credential, the headers to set, and a *denial or a store error.
func (s *checkServer) decide(ctx context.Context, r *authv3.AttributeContext_HttpRequest, h map[string]string, remove *[]string) (string, []*corev3.HeaderValueOption, error) {
	path, ok := cleanPath(r.GetPath())
	if !ok {
		return "none", nil, &denial{typev3.StatusCode_BadRequest, "invalid_request", "malformed request path"}
	}
	pol := s.policy.Load()
	p, cred, err := s.authenticate(ctx, h, under(r.GetPath(), selfPaths), remove)
	if err != nil {
		if cred == "none" && under(r.GetPath(), s.cfg.PublicPaths) {
			return cred, nil, nil
		}
		return cred, nil, err
	}
	if underAny(path, s.cfg.AdminPaths) && !p.IsAdmin() {
		return cred, nil, forbidden("forbidden_role", "this path requires role ADMIN")
	}
	set := []*corev3.HeaderValueOption{
		header(contract.HeaderUserID, p.UserID),
		header(contract.HeaderTier, pol.TierFor(p.Roles)),
		header(contract.HeaderRoles, strings.Join(p.Roles, ",")),
	}
	if org := strings.TrimSpace(h[contract.HeaderOrg]); org != "" {
		if !orgIDPattern.MatchString(org) || !slices.Contains(p.Orgs, org) {
			return cred, nil, forbidden("forbidden_org", "the caller is not a member of the organisation named in "+contract.HeaderOrg)
		}
		set = append(set, header(contract.HeaderOrgID, org))
	}
	body := r.GetRawBody()
	if len(body) == 0 {
		body = []byte(r.GetBody())
	}
	n, bodyProvider, ok := estimateRequest(body, h, s.cfg.DefaultMaxTokens)
	if ok {
		set = append(set, header(contract.HeaderEstimate, strconv.FormatInt(n, 10)))
	}
	if prov := providerOf(pol, path, bodyProvider); prov != "" {
		set = append(set, header(contract.HeaderProvider, prov))
	}
	return cred, set, nil
}

// selfPaths are served by this service's own HTTP API, which
// authenticates its callers again and needs their credentials (GET
// /api/v1/auth/api-keys/validate takes a Bearer token and an X-Api-Key).
var selfPaths = []string{"/api/v1/auth/", "/oauth2/"}

// authenticate finds and verifies the credential: X-Api-Key, or
// Authorization: Bearer carrying a JWT or an API key (as OpenAI-style
// clients send it). Elsewhere than under selfPaths a request with both is
// refused rather than guessing which one counts, and the credential header
// is added to remove: neither our API keys nor our JWTs reach the upstream.
// Under selfPaths the credentials stay, and Authorization wins, as in the
// HTTP API.
func (s *checkServer) authenticate(ctx context.Context, h map[string]string, self bool, remove *[]string) (store.Principal, string, error) {
	raw, isKey := "", false
	k, hasKey := h[contract.HeaderAPIKey]
	a, hasAuth := h["authorization"]
	switch {
	case hasKey && hasAuth && !self:
		return store.Principal{}, "none", unauthenticated("send one credential: X-Api-Key or Authorization, not both")
	case hasKey && !hasAuth:
		if !self {
			*remove = append(*remove, contract.HeaderAPIKey)
		}
		raw, isKey = strings.TrimSpace(k), true
	case hasAuth:
		scheme, tok, found := strings.Cut(strings.TrimSpace(a), " ")
		tok = strings.TrimSpace(tok)
		if !found || !strings.EqualFold(scheme, "bearer") || tok == "" || strings.ContainsAny(tok, " ,") {
			return store.Principal{}, "none", unauthenticated("authorization must be a single Bearer token")
		}
		if !self {
			*remove = append(*remove, "authorization")
		}
		raw, isKey = tok, strings.HasPrefix(tok, "lt_")
	default:
		return store.Principal{}, "none", unauthenticated("credentials required: Authorization: Bearer <token> or X-Api-Key")
	}
	if len(raw) > maxCredentialLen {
		return store.Principal{}, "none", unauthenticated("credential too long")
	}
	if isKey {
		p, how, err := s.keys.Verify(ctx, raw)
		s.metrics.keyCache.WithLabelValues(how).Inc()
		switch {
		case errors.Is(err, keyauth.ErrInvalid):
			return store.Principal{}, "api_key", unauthenticated("invalid api key")
		case errors.Is(err, keyauth.ErrExpired):
			return store.Principal{}, "api_key", unauthenticated("api key expired")
		case err != nil:
			return store.Principal{}, "api_key", err
		}
		return p, "api_key", nil
	}
	c, err := s.tokens.Verify(raw)
	if err != nil {
		return store.Principal{}, "jwt", unauthenticated("invalid or expired token")
	}
	return c.Principal(), "jwt", nil
}

// requestHeaders returns the request's headers by lower-case name, from
// header_map when Envoy sent raw headers, joining repeated ones with ",".
func requestHeaders(r *authv3.AttributeContext_HttpRequest) map[string]string {
	if hm := r.GetHeaderMap(); hm != nil && len(hm.GetHeaders()) > 0 {
		out := make(map[string]string, len(hm.GetHeaders()))
		for _, hv := range hm.GetHeaders() {
			k := strings.ToLower(hv.GetKey())
			v := hv.GetValue()
			if v == "" {
				v = string(hv.GetRawValue())
			}
			if old, ok := out[k]; ok {
				v = old + "," + v
			}
			out[k] = v
		}
		return out
	}
	hs := r.GetHeaders()
	for k := range hs {
		if strings.ToLower(k) != k {
			out := make(map[string]string, len(hs))
			for k, v := range hs {
				out[strings.ToLower(k)] = v
			}
			return out
		}
	}
	return hs // Envoy sends lower-case names: no copy needed
}

// clientHeaders lists the client-sent x-leaky-* headers, sorted: they are
// removed from the upstream request so no client can forge them. x-leaky-org
// is the client's to send and stays.
func clientHeaders(h map[string]string) []string {
	var out []string
	for k := range h {
		if strings.HasPrefix(k, contract.HeaderPrefix) && k != contract.HeaderOrg {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// providerOf names the provider from the first path segment (or the third
// of /api/v1/<provider>/…) when the policy lists it, else from the body's
// "provider" field when the policy lists that.
func providerOf(pol *policy.Policy, path, fromBody string) string {
	known := func(p string) bool {
		_, ok := pol.Providers[p]
		return ok && p != policy.Wildcard
	}
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(segs) > 0 && known(strings.ToLower(segs[0])) {
		return strings.ToLower(segs[0])
	}
	if len(segs) > 2 && segs[0] == "api" && known(strings.ToLower(segs[2])) {
		return strings.ToLower(segs[2])
	}
	if p := strings.ToLower(fromBody); known(p) {
		return p
	}
	return ""
}

// cleanPath drops the query, decodes percent-escapes and resolves "." and
// ".." segments and repeated slashes, so that neither a public nor an admin
// prefix can be dodged ("/oauth2/../openai/…", "//api/v1/admin/…",
// "/api/v1/%61dmin/…"). ok is false for an undecodable path.
func cleanPath(p string) (string, bool) {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	u, err := url.PathUnescape(p)
	if err != nil {
		return "", false
	}
	c := pathpkg.Clean("/" + u)
	if strings.HasSuffix(u, "/") && c != "/" {
		c += "/"
	}
	return c, true
}

// canonical reports whether raw, the path as Envoy sent it (query
// dropped), is canonical: decoding and cleaning leave it unchanged (so no
// percent-escape, dot-segment or repeated slash) and it holds no ';' or
// backslash. Only a canonical path may take a public prefix or keep the
// credentials for this service's own API: anything else may mean a
// different path to the upstream than to this check
// ("/openai/%2e%2e/oauth2/token", "/x;/../oauth2/y").
func canonical(raw string) (string, bool) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if strings.ContainsAny(raw, ";\\%") {
		return raw, false
	}
	c, ok := cleanPath(raw)
	return raw, ok && c == raw
}

// under reports whether the path as sent is canonical and lies under one
// of the prefixes.
func under(raw string, prefixes []string) bool {
	p, ok := canonical(raw)
	return ok && underAny(p, prefixes)
}

// underAny reports whether path is one of the prefixes or lies below one,
// at a segment boundary: "/api/v1/admin/" covers "/api/v1/admin" and
// "/api/v1/admin/x" but not "/api/v1/administrators"; "/api/v1/auth/login"
// covers "/api/v1/auth/login/" but not "/api/v1/auth/login-x".
func underAny(path string, prefixes []string) bool {
	for _, p := range prefixes {
		p = strings.TrimSuffix(p, "/")
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

func header(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

func okResponse(set []*corev3.HeaderValueOption, remove []string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: set, HeadersToRemove: remove,
		}},
	}
}

// deniedResponse is the one place a refusal becomes a wire answer: the
// status, a JSON error envelope and, for 401, WWW-Authenticate.
func deniedResponse(d *denial) *authv3.CheckResponse {
	body, _ := json.Marshal(errorBody{Error: d.code, Message: d.message})
	hdrs := []*corev3.HeaderValueOption{header("content-type", "application/json")}
	code := codes.PermissionDenied
	switch d.status {
	case typev3.StatusCode_Unauthorized:
		code = codes.Unauthenticated
		hdrs = append(hdrs, header("www-authenticate", `Bearer realm="leaky-tokens", error="invalid_token"`))
	case typev3.StatusCode_ServiceUnavailable:
		code = codes.Unavailable
		hdrs = append(hdrs, header("retry-after", "1"))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: d.code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: d.status}, Headers: hdrs, Body: string(body),
		}},
	}
}

// errorBody is the JSON error envelope of every 4xx and 5xx.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}
