package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func TestNewSet(t *testing.T) {
	s, err := NewSet(map[string][]byte{
		"b.yaml": []byte("domain: beta\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 2}\n"),
		"a.yaml": []byte("domain: alpha\n"),
	})
	if err != nil {
		t.Fatalf("NewSet() error: %v", err)
	}
	if diff := cmp.Diff([]string{"alpha", "beta"}, s.Domains()); diff != "" {
		t.Errorf("Domains() mismatch (-want +got):\n%s", diff)
	}
	if c := s.Domain("beta"); c == nil || c.File != "b.yaml" || c.Match(e("k", "v")) == nil {
		t.Errorf("Domain(%q) = %+v, want the Config of b.yaml with a limit for k", "beta", c)
	}
	if c := s.Domain("gamma"); c != nil {
		t.Errorf("Domain(%q) = %+v, want nil", "gamma", c)
	}
}

func TestNewSetErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string][]byte
		want  []string
	}{
		{"duplicate domain across files", map[string][]byte{
			"one.yaml": []byte("domain: test-domain\n"),
			"two.yaml": []byte("domain: test-domain\n"),
		}, []string{"two.yaml: duplicate domain 'test-domain' in config file (also in one.yaml)"}},
		{"problems of every file", map[string][]byte{
			"good.yaml": []byte("domain: ok\n"),
			"x.yaml":    []byte("domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: foo, requests_per_unit: 1}\n"),
			"y.yaml":    []byte("descriptors: []\n"),
		}, []string{
			"x.yaml:4: invalid rate limit unit 'foo'" + wantUnits,
			"y.yaml:1: config file cannot have empty domain",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSet(tt.files)
			if s != nil || err == nil {
				t.Fatalf("NewSet() = %v, %v, want nil and an error", s, err)
			}
			var got []string
			for _, pe := range parseErrors(err) {
				got = append(got, pe.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewSet() errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNilSet(t *testing.T) {
	var s *Set
	if c := s.Domain("x"); c != nil {
		t.Errorf("(*Set)(nil).Domain() = %v, want nil", c)
	}
	if got := s.Domains(); got != nil {
		t.Errorf("(*Set)(nil).Domains() = %v, want nil", got)
	}
	var zero Set
	if c := zero.Domain("x"); c != nil {
		t.Errorf("Set{}.Domain() = %v, want nil", c)
	}
}

func TestLoadFS(t *testing.T) {
	fsys := fstest.MapFS{
		"config/a.yaml":       {Data: []byte("domain: a\n")},
		"config/b.yml":        {Data: []byte("domain: b\n")},
		"config/.hidden.yaml": {Data: []byte("not: [valid\n")},
		"config/notes.txt":    {Data: []byte("ignored")},
		"config/sub/c.yaml":   {Data: []byte("domain: c\n")},
	}
	s, err := LoadFS(fsys, "config")
	if err != nil {
		t.Fatalf("LoadFS() error: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, s.Domains()); diff != "" {
		t.Errorf("LoadFS() domains mismatch (-want +got):\n%s", diff)
	}
	if got := s.Domain("a").File; got != "config/a.yaml" {
		t.Errorf("LoadFS() Domain(a).File = %q, want %q", got, "config/a.yaml")
	}

	fsys["config/bad.yaml"] = &fstest.MapFile{Data: []byte("domain: \n")}
	if _, err := LoadFS(fsys, "config"); err == nil || !strings.HasPrefix(err.Error(), "config/bad.yaml:1: ") {
		t.Errorf("LoadFS() with a bad file error = %v, want one naming config/bad.yaml:1", err)
	}
	if _, err := LoadFS(fsys, "missing"); err == nil {
		t.Errorf("LoadFS(missing dir) error = nil, want an error")
	}
}

// readFiles reads the named files under testdata/merge, keyed by base name.
func readFiles(t *testing.T, names ...string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join("testdata", "merge", n))
		if err != nil {
			t.Fatal(err)
		}
		files[n] = data
	}
	return files
}

func TestNewSetWithMergeDomains(t *testing.T) {
	s, err := NewSetWith(readFiles(t, "two.yaml", "one.yaml"), Options{MergeDomains: true})
	if err != nil {
		t.Fatalf("NewSetWith(merge) error: %v", err)
	}
	c := s.Domain("test-domain")
	if c == nil || c.File != "one.yaml" {
		t.Fatalf("Domain(test-domain) = %+v, want the merged Config named after one.yaml", c)
	}
	runMatch(t, c, []matchCase{
		{"first file", e("key1", "value1"), lim(10, Minute, "test-domain.key1_value1", e("key1", "value1"))},
		{"second file", e("key2", "value2"), lim(20, Minute, "test-domain.key2_value2", e("key2", "value2"))},
		{"first file's wildcard first", e("path", "/a/bc"),
			&Limit{RequestsPerUnit: 1, Unit: Minute, Name: "base", FullKey: "test-domain.path_/a/*", Counter: e("path", "/a/bc")}},
		{"second file's wildcard", e("path", "/b/c"), lim(3, Minute, "test-domain.path_/b/*", e("path", "/b/c"))},
	})
	got, err := Resolve(c, []Descriptor{d(e("path", "/a/x")), d(e("premium", "p"))})
	if err != nil || got[0] != nil || got[1] == nil {
		t.Errorf("Resolve(base, premium) = %v, %v; want base replaced by premium across the merged files", got, err)
	}
}

func TestNewSetWithErrors(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		opts  Options
		want  []string
	}{
		{"same domain, merge off", []string{"one.yaml", "two.yaml"}, Options{},
			[]string{"two.yaml: duplicate domain 'test-domain' in config file (also in one.yaml)"}},
		{"duplicate top-level key after merging", []string{"one.yaml", "dup.yaml"}, Options{MergeDomains: true},
			[]string{"one.yaml:3: duplicate descriptor composite key 'test-domain.key1_value1' (first in dup.yaml:5)"}},
		{"replaces names a limit of no file of the domain", []string{"one.yaml", "unknown_name.yaml"}, Options{MergeDomains: true},
			[]string{"unknown_name.yaml:7: replaces names 'nowhere', but no rate_limit in domain 'test-domain' has that name"}},
		{"replaces names a limit of another file, merge off", []string{"two.yaml"}, Options{},
			[]string{"two.yaml:18: replaces names 'base', but no rate_limit in domain 'test-domain' has that name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSetWith(readFiles(t, tt.files...), tt.opts)
			if s != nil || err == nil {
				t.Fatalf("NewSetWith() = %v, %v, want nil and an error", s, err)
			}
			var got []string
			for _, pe := range parseErrors(err) {
				got = append(got, pe.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewSetWith() errors mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// A merged file's wildcards keep their file order even when they share a
// line (flow style): the first in the file matches, on every load.
func TestNewSetWithMergeKeepsWildcardOrderOnOneLine(t *testing.T) {
	files := map[string][]byte{
		"a.yaml": []byte("domain: d\ndescriptors: [{key: x, value: \"z*\", rate_limit: {unit: minute, requests_per_unit: 9}}]\n"),
		"b.yaml": []byte("domain: d\ndescriptors: [{key: k, value: \"a*\", rate_limit: {unit: minute, requests_per_unit: 1}}, " +
			"{key: k, value: \"*b\", rate_limit: {unit: minute, requests_per_unit: 2}}, " +
			"{key: k, value: \"*\", rate_limit: {unit: minute, requests_per_unit: 3}}]\n"),
	}
	for range 20 { // map order changes between loads
		s, err := NewSetWith(files, Options{MergeDomains: true})
		if err != nil {
			t.Fatal(err)
		}
		runMatch(t, s.Domain("d"), []matchCase{
			{"first of the line", e("k", "ab"), lim(1, Minute, "d.k_a*", e("k", "ab"))},
			{"second of the line", e("k", "cb"), lim(2, Minute, "d.k_*b", e("k", "cb"))},
		})
	}
}
