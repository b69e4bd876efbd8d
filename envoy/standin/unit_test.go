package standin

import (
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoregistry"
)

// Every field the allow-list names exists on its message, so a typo cannot
// silently allow nothing.
func TestAllowListNamesRealFields(t *testing.T) {
	for msg, fields := range newAllowList() {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(msg)
		if err != nil {
			t.Errorf("%s: %v", msg, err)
			continue
		}
		for f := range fields {
			if mt.Descriptor().Fields().ByName(f) == nil {
				t.Errorf("%s has no field %s", msg, f)
			}
		}
	}
}

func TestNormalizePath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "/a/b", want: "/a/b"},
		{in: "/a/./b/../c", want: "/a/c"},
		{in: "/../../a", want: "/a"},
		{in: "/a/..", want: "/"},
		{in: "/a/.", want: "/a/"},
		{in: "/a/%2e%2E/b", want: "/b"},
		{in: "/%7euser/%41", want: "/~user/A"},
		{in: "/a%3ab", want: "/a%3Ab"},
		{in: "/a%2fb", want: "/a%2Fb"},
		{in: "/a\\b", want: "/a/b"},
		{in: "/a b\"<>", want: "/a%20b%22%3C%3E"},
		{in: "/caf\xc3\xa9", want: "/caf%C3%A9"},
		{in: "/100%", want: "/100%"},
		{in: "/a\x01b", bad: true},
	} {
		got, err := normalizePath(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("normalizePath(%q) = %q, %v; want %q (bad %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestEscapedSlashAndMergeSlashes(t *testing.T) {
	for in, want := range map[string]bool{"/a%2Fb": true, "/a%2fb": true, "/a%5Cb": true, "/a%5cb": true, "/a%25b": false, "/a/b": false, "/%2": false} {
		if got := hasEscapedSlash(in); got != want {
			t.Errorf("hasEscapedSlash(%q) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]string{"//a///b/": "/a/b/", "/a/b": "/a/b", "///": "/"} {
		if got := mergeSlashes(in); got != want {
			t.Errorf("mergeSlashes(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u := newUpstream("c", t0)
	u.update(&clusterConfig{name: "c", outlier: &outlierConfig{consecutive5xx: 2, interval: 10 * time.Second, baseEject: 30 * time.Second, maxEjectPercent: 50},
		limits: breakerLimits{1, 1, 1, 1}}, []string{"a:1", "b:1", "c:1", "d:1"})
	a := u.hosts[0]
	if u.report(a, true, t0) || !u.report(a, true, t0) {
		t.Fatal("the second consecutive failure did not eject")
	}
	for range 8 {
		if h := u.pick(t0.Add(time.Second)); h == a {
			t.Fatal("an ejected host was picked")
		}
	}
	if !a.ejected(t0.Add(29*time.Second)) || a.ejected(t0.Add(30*time.Second)) {
		t.Error("the ejection did not last exactly base_ejection_time (on an interval tick)")
	}
	b, c := u.hosts[1], u.hosts[2]
	now := t0.Add(31 * time.Second)
	// A success resets the count.
	u.report(b, true, now)
	u.report(b, false, now)
	if u.report(b, true, now) {
		t.Error("one failure after a success ejected")
	}
	u.report(b, false, now)
	// 50% of 4 hosts: two may be out at once, a third may not.
	for _, h := range []*host{b, c} {
		u.report(h, true, now)
		if !u.report(h, true, now) {
			t.Errorf("host %s was not ejected within 50%%", h.addr)
		}
	}
	u.report(a, true, now)
	if u.report(a, true, now) {
		t.Error("a third host was ejected beyond max_ejection_percent")
	}
}

// A host ejected twice in a row stays out twice as long.
func TestOutlierEjectionGrows(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	u := newUpstream("c", t0)
	u.update(&clusterConfig{name: "c", outlier: &outlierConfig{consecutive5xx: 1, interval: 10 * time.Second, baseEject: 30 * time.Second, maxEjectPercent: 100},
		limits: breakerLimits{1, 1, 1, 1}}, []string{"a:1", "b:1"})
	a := u.hosts[0]
	u.report(a, true, t0)
	back := t0.Add(30 * time.Second)
	if a.ejected(back) {
		t.Fatal("still ejected after the first ejection")
	}
	u.report(a, true, back)
	if !a.ejected(back.Add(59*time.Second)) || a.ejected(back.Add(60*time.Second)) {
		t.Error("the second ejection did not last 2 × base_ejection_time")
	}
}

func TestValidUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"plain":            "plain",
		"caf\u00e9 \uFFFD": "caf\u00e9 \uFFFD",
		"a\xffb":           "a!b",
		"\xff\xfe":         "!!",
		"\xe2\x82":         "!!",   // a cut 3-byte sequence: one '!' per byte
		"\xed\xa0\x80":     "!!!",  // a surrogate
		"x\xc0\xafy":       "x!!y", // an overlong '/'
	} {
		if got := validUTF8(in); got != want {
			t.Errorf("validUTF8(%q) = %q, want %q", in, got, want)
		}
	}
}
