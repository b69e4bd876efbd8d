package extauthz

import (
	"net/url"
	pathpkg "path"
	"slices"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/leakytokens/leaky/internal/contract"
	"github.com/leakytokens/leaky/internal/policy"
)

// selfPaths are served by this service's own HTTP API, which
// authenticates its callers again and needs their credentials (GET
// /api/v1/auth/api-keys/validate takes a Bearer token and an X-Api-Key).
var selfPaths = []string{"/api/v1/auth/", "/oauth2/"}

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
