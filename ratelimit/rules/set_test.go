package rules

import (
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
