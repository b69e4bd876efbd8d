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
// client's values. x-leaky-org is the client's to send and stays. Names
// spelling the prefix with underscores (x_leaky_user_id, X_Leaky-Tier)
// are listed too, since an upstream might fold them into ours; they never
// equal a name authz sets.
func forged(h map[string]string, set []*corev3.HeaderValueOption) []string {
	var out []string
	for k := range h {
		folded := strings.ReplaceAll(k, "_", "-")
		if !strings.HasPrefix(folded, contract.HeaderPrefix) || k == contract.HeaderOrg {
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
// sent, exactly; it is an admin path when any reading of it an upstream
// might make (readings) lies under an admin prefix, compared
// case-insensitively. A path that is both is judged admin.
type route struct {
	public bool // let through without credentials, which are ignored
	self   bool // the service's own API: the credentials stay
	admin  bool // only role ADMIN may pass
}

// judge classifies raw, the path as Envoy sent it, against the public and
// admin prefixes. ok is false when a segment hides a dot-segment
// (hidesDotSegment): no judgement of such a path holds for every upstream.
func judge(raw string, public, admin []string) (rt route, ok bool) {
	if plain := cutQuery(raw); strings.HasPrefix(plain, "/") && !strings.Contains(plain, "//") && !strings.ContainsAny(plain, ambiguous) {
		// Nothing any reading would change: the path is its only reading
		// (the common case, spared the readings' allocations).
		rt.admin = underAnyFold(strings.ToLower(plain), admin)
	} else {
		if hidesDotSegment(raw) {
			return route{}, false
		}
		rt.admin = slices.ContainsFunc(readings(raw), func(r string) bool { return underAnyFold(r, admin) })
	}
	if p, ok := canonical(raw); ok {
		rt.public = !rt.admin && underAny(p, public)
		rt.self = underAny(p, selfPaths)
	}
	return rt, true
}

// maxEscapeLayers bounds how many times a path's percent-escapes are
// decoded. A path still holding escapes after that many rounds is judged
// an admin path: no client needs so many layers, and an upstream might
// peel them.
const maxEscapeLayers = 4

// blanks are the characters some servers drop from the end of a segment.
const blanks = " \t\r\n\v\f\x00"

// ambiguous are the characters of a path (before its query) that make one
// reading differ from another: escapes, separators some servers read as
// '/', segment parameters, dots, and blanks.
const ambiguous = "%\\;." + blanks

// cutQuery drops what follows the first '?' or '#'.
func cutQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// layers returns raw without its query, then each successive decoding of
// its valid percent-escapes ("%2561" gives "%61", then "a"), invalid ones
// kept; nil when the escapes nest deeper than maxEscapeLayers.
func layers(raw string) []string {
	out := []string{cutQuery(raw)}
	for {
		p := out[len(out)-1]
		d := unescapeLenient(p)
		if d == p {
			return out
		}
		if len(out) > maxEscapeLayers {
			return nil
		}
		out = append(out, d)
	}
}

// readings are the paths, lower-cased, that some upstream might route raw
// to: decoded zero to maxEscapeLayers times; once decoded, the query cut
// where an escape turned into '?' or '#', or kept as path; "\" read as
// "/"; each segment kept whole, or with its ";parameters" and trailing
// blanks (white space, NUL) and dots dropped (Tomcat, Windows and some Java
// servers); dot-segments resolved or kept as names; repeated slashes
// merged. The widest single reading alone is not enough: stripping can
// turn a segment into "..", and cutting at a decoded '?' can hide what a
// server that does not cut there reads. readings is [""] when the escapes
// nest too deep (underAnyFold counts "" under every prefix).
func readings(raw string) []string {
	ls := layers(raw)
	if ls == nil {
		return []string{""}
	}
	var out []string
	for i, l := range ls {
		for _, cut := range []bool{false, true} {
			if cut && i == 0 {
				continue // layers already dropped the query as sent
			}
			p := l
			if cut {
				p = cutQuery(p)
			}
			for _, strip := range []bool{false, true} {
				segs := segments(p, strip)
				out = append(out, strings.ToLower(pathpkg.Clean("/"+strings.Join(segs, "/"))),
					strings.ToLower("/"+strings.Join(slices.DeleteFunc(segs, func(s string) bool { return s == "" }), "/")))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// segments splits p at "/" and "\"; with strip, each segment loses its
// ";parameters" and trailing blanks, and then its trailing dots unless it
// is "." or "..".
func segments(p string, strip bool) []string {
	segs := strings.Split(strings.ReplaceAll(p, "\\", "/"), "/")
	if !strip {
		return segs
	}
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
	return segs
}

// hidesDotSegment reports whether some segment of raw (query dropped) is
// not "." or ".." as sent but some reading makes it one: decoded
// ("%2e%2e", "%252e."), split at an escaped or back slash ("..%2f",
// "..\\"), cut at its ";parameters" or at a decoded '?' or '#' ("..;",
// "..%3bx", "..%3f"), or with its blanks dropped ("..%20", "..%00"), or
// any mix. Envoy's normalize_path resolves only plain dot-segments, so such
// a segment reaches the upstream as sent; one that climbs out of an admin
// prefix for one server and not for another cannot be judged, and is
// refused. A segment of three or more dots counts too: trimming trailing
// dots makes it "" or "." for some servers.
func hidesDotSegment(raw string) bool {
	for _, seg := range strings.Split(cutQuery(raw), "/") {
		if seg == "." || seg == ".." {
			continue
		}
		for i, p := 0, seg; i <= maxEscapeLayers; i++ {
			for _, piece := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
				if dotty(piece) {
					return true
				}
			}
			d := unescapeLenient(p)
			if d == p {
				break
			}
			p = d
		}
	}
	return false
}

// dotty reports whether piece, whole or cut at its first ';', or at its
// first '?' or '#', or at the first of all three, is nothing but dots once
// its blanks are dropped.
func dotty(piece string) bool {
	for _, cuts := range []string{"", ";", "?#", ";?#"} {
		p := piece
		if i := strings.IndexAny(p, cuts); cuts != "" && i >= 0 {
			p = p[:i]
		}
		p = strings.Map(func(r rune) rune {
			if strings.ContainsRune(blanks, r) {
				return -1
			}
			return r
		}, p)
		if p != "" && strings.Trim(p, ".") == "" {
			return true
		}
	}
	return false
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

// underAnyFold is underAny comparing case-insensitively, for readings
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
