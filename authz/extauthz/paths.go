package extauthz

import (
	"net/url"
	pathpkg "path"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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

// forged lists, sorted, the client-sent x-leaky-* headers that set does
// not overwrite. Envoy's ext_authz filter applies headers_to_remove after
// the headers it sets, so a name in both would reach the rate-limit filter
// removed: only these are listed, and the ones authz sets replace the
// client's values. x-leaky-org is the client's to send and stays.
func forged(h map[string]string, set []*corev3.HeaderValueOption) []string {
	var out []string
	for k := range h {
		if !strings.HasPrefix(k, contract.HeaderPrefix) || k == contract.HeaderOrg {
			continue
		}
		if slices.ContainsFunc(set, func(o *corev3.HeaderValueOption) bool { return o.GetHeader().GetKey() == k }) {
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// credentialHeaders lists the credential headers h carries, X-Api-Key
// and Authorization, for removal.
func credentialHeaders(h map[string]string) []string {
	var out []string
	for _, k := range []string{contract.HeaderAPIKey, "authorization"} {
		if _, ok := h[k]; ok {
			out = append(out, k)
		}
	}
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

// route is how Check judges a request path. Both judgements come from one
// rule, each erring on its safe side: a path is public (or the service's
// own API) only when it is canonical and lies under a public prefix as
// sent, exactly; it is an admin path when any reasonable reading of it
// (loose) lies under an admin prefix, compared case-insensitively. A path
// that is both is judged admin.
type route struct {
	public bool // let through without credentials, which are ignored
	self   bool // the service's own API: the credentials stay
	admin  bool // only role ADMIN may pass
}

// judge classifies raw, the path as Envoy sent it, against the public and
// admin prefixes.
func judge(raw string, public, admin []string) route {
	var rt route
	rt.admin = underAnyFold(loose(raw), admin)
	if p, ok := canonical(raw); ok {
		rt.public = !rt.admin && underAny(p, public)
		rt.self = underAny(p, selfPaths)
	}
	return rt
}

// maxEscapeLayers bounds how many times loose decodes percent-escapes. A
// path still holding escapes after that many rounds is judged an admin
// path: no client needs so many layers, and an upstream might peel them.
const maxEscapeLayers = 4

// blanks are the characters some servers drop from the end of a segment.
const blanks = " \t\r\n\v\f\x00"

// loose is the widest reading of raw any upstream might make, lower-cased:
// percent-escapes decoded layer after layer ("%2561" is "a"), invalid ones
// kept; the query and fragment dropped, also where they appear once
// decoded; "\" read as "/"; each segment's ";parameters" dropped, and its
// trailing blanks (white space, NUL) and dots (Windows and some Java servers
// drop them); then dot-segments and repeated slashes resolved. It returns
// "" when the escapes nest deeper than maxEscapeLayers.
func loose(raw string) string {
	p := raw
	for i := 0; ; i++ {
		if j := strings.IndexAny(p, "?#"); j >= 0 {
			p = p[:j]
		}
		d := unescapeLenient(p)
		if d == p {
			break
		}
		if i == maxEscapeLayers {
			return ""
		}
		p = d
	}
	segs := strings.Split(strings.ReplaceAll(p, "\\", "/"), "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			s = s[:j]
		}
		s = strings.TrimRight(s, blanks)
		if s != "." && s != ".." {
			s = strings.TrimRight(s, "."+blanks)
		}
		segs[i] = s
	}
	return strings.ToLower(pathpkg.Clean("/" + strings.Join(segs, "/")))
}

// unescapeLenient decodes every valid %XX in s and keeps the rest as is.
func unescapeLenient(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
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

// underAnyFold is underAny comparing case-insensitively, for loose paths
// (lower case); "" (escapes nested too deep) is under every prefix.
func underAnyFold(path string, prefixes []string) bool {
	if path == "" {
		return len(prefixes) > 0
	}
	lower := make([]string, len(prefixes))
	for i, p := range prefixes {
		lower[i] = strings.ToLower(p)
	}
	return underAny(path, lower)
}
