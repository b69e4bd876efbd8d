package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse checks that no input makes Parse or matching panic, that every
// problem names the file, and that a match is consistent with its request.
// Run it locally: go test -run '^$' -fuzz FuzzParse -fuzztime 30s ./ratelimit/rules/
func FuzzParse(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	bad, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range append(paths, bad...) {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "key1", "value1", "subkey1", "x")
	}
	f.Add([]byte("domain: d\ndescriptors:\n  - key: k\n    value: v*\n    share_threshold: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n"), "k", "vv", "", "")
	f.Fuzz(func(t *testing.T, data []byte, k1, v1, k2, v2 string) {
		const name = "fuzz.yaml"
		c, err := Parse(name, data)
		if err != nil {
			if c != nil {
				t.Fatalf("Parse() = %v with error %v, want nil", c, err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, name+":") {
					t.Fatalf("Parse() error line %q does not name the file", line)
				}
			}
			return
		}
		for _, entries := range [][]Entry{{{k1, v1}}, {{k1, v1}, {k2, v2}}, {{k2, v2}, {k1, v1}}} {
			l := c.Match(entries)
			if l == nil {
				continue
			}
			if len(l.Counter) != len(entries) || !strings.HasPrefix(l.FullKey, c.Domain+".") {
				t.Fatalf("Match(%v) = %+v: counter or key inconsistent with the request", entries, l)
			}
			if !l.Unlimited && !l.Unit.Valid() {
				t.Fatalf("Match(%v) = %+v: limited with an invalid unit", entries, l)
			}
		}
		if _, err := Resolve(c, []Descriptor{{Entries: []Entry{{k1, v1}}}, {Entries: []Entry{{k2, v2}}}}); err != nil {
			t.Fatalf("Resolve() error: %v", err)
		}
	})
}
