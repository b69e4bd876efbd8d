package policy

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// otherDomain is a minimal envoyproxy/ratelimit domain file; the loader
// only checks that it is YAML with a domain.
const otherDomain = "domain: messaging\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadEmbedded(t *testing.T) {
	s, err := Load("")
	if err != nil {
		t.Fatalf("Load(\"\") = %v", err)
	}
	if s.Source() != ExampleSource || s.Policy() == nil || s.Policy().DefaultTier != "free" || len(s.Others()) != 0 {
		t.Errorf("Load(\"\") = %+v, want the example policy alone", s)
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, string(Example()))
	s, err := Load(path)
	if err != nil {
		t.Fatalf("Load(file) = %v", err)
	}
	if s.Source() != path || s.Policy() == nil || len(s.Others()) != 0 {
		t.Errorf("Load(file) = %+v, want the policy", s)
	}
	// A file need not end in .yaml when named directly; it may be another
	// domain alone.
	other := filepath.Join(t.TempDir(), "messaging.conf")
	writeFile(t, other, otherDomain)
	if s, err := Load(other); err != nil || s.Policy() != nil || len(s.Others()) != 1 {
		t.Errorf("Load(other domain file) = %+v, %v; want no policy and one other file", s, err)
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.yaml"), string(Example()))
	writeFile(t, filepath.Join(dir, "messaging.yml"), otherDomain)
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "not: [yaml")
	writeFile(t, filepath.Join(dir, "README.md"), "not yaml at all: [")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(dir) = %v", err)
	}
	if s.Policy() == nil {
		t.Error("Load(dir) has no policy")
	}
	others := s.Others()
	if got, want := slices.Sorted(maps.Keys(others)), []string{filepath.Join(dir, "messaging.yml")}; !slices.Equal(got, want) {
		t.Errorf("Others() = %v, want %v", got, want)
	}
	others[filepath.Join(dir, "messaging.yml")][0] = 'X'
	if bytes.HasPrefix(s.Others()[filepath.Join(dir, "messaging.yml")], []byte("X")) {
		t.Error("Others() shares its bytes with the snapshot")
	}

	again, err := Load(dir)
	if err != nil || again.Digest() != s.Digest() {
		t.Errorf("reloading an unchanged directory: digest %x, %v; want %x", again.Digest(), err, s.Digest())
	}
	// Same size, different content: a different digest.
	writeFile(t, filepath.Join(dir, "messaging.yml"), strings.Replace(otherDomain, "second", "minute", 1)[:len(otherDomain)])
	if changed, err := Load(dir); err != nil || changed.Digest() == s.Digest() {
		t.Errorf("after an edit: digest %x, %v; want one different from %x", changed.Digest(), err, s.Digest())
	}
}

// A Kubernetes ConfigMap mount: each key is a symbolic link into ..data,
// itself a link to a timestamped directory that an update swaps.
func TestLoadConfigMapLayout(t *testing.T) {
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_01_01_00_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(ts, "policy.yaml"), string(Example()))
	writeFile(t, filepath.Join(ts, "messaging.yaml"), otherDomain)
	for _, link := range [][2]string{
		{filepath.Base(ts), "..data"},
		{"..data/policy.yaml", "policy.yaml"},
		{"..data/messaging.yaml", "messaging.yaml"},
	} {
		if err := os.Symlink(link[0], filepath.Join(dir, link[1])); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(ConfigMap) = %v", err)
	}
	if s.Policy() == nil || len(s.Others()) != 1 {
		t.Errorf("Load(ConfigMap) = %+v, want the policy and one other file", s)
	}
}

func TestLoadErrors(t *testing.T) {
	policyYAML := string(Example())
	tests := []struct {
		name  string
		files map[string]string // nil: the directory is empty
		want  []string
	}{
		{"empty directory", nil, []string{"no *.yaml or *.yml files"}},
		{"only other files", map[string]string{"notes.txt": "x"}, []string{"no *.yaml or *.yml files"}},
		{"two policies", map[string]string{"a.yaml": policyYAML, "b.yaml": policyYAML}, []string{"b.yaml: a second policy file for domain leaky-tokens (the first is ", "a.yaml)"}},
		{"broken yaml", map[string]string{"policy.yaml": policyYAML, "rl.yaml": "domain: [unclosed"}, []string{"rl.yaml: yaml: "}},
		{"no domain", map[string]string{"policy.yaml": policyYAML, "rl.yaml": "descriptors: []\n"}, []string{"rl.yaml: no top-level domain"}},
		{"empty file", map[string]string{"rl.yaml": ""}, []string{"rl.yaml: no top-level domain"}},
		{"bad policy", map[string]string{"policy.yaml": "domain: leaky-tokens\ntiers: {a: {}}\ndefault_tier: b\n"}, []string{"policy.yaml: default_tier \"b\""}},
		{"unrepresentable bucket", map[string]string{"policy.yaml": strings.Replace(policyYAML, "openai: {capacity: 4000,", "openai: {capacity: 4000000000000,", 1)},
			[]string{"policy.yaml: tiers.free.buckets.openai: capacity 4000000000000 at leak_rate 40 cannot be represented"}},
		{"every problem", map[string]string{"a.yaml": "domain: [", "b.yaml": "x: 1\n"}, []string{"a.yaml: yaml:", "b.yaml: no top-level domain"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, filepath.Join(dir, name), content)
			}
			_, err := Load(dir)
			if err == nil {
				t.Fatalf("Load = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load = %v, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadOversizeFile(t *testing.T) {
	dir := t.TempDir()
	big := "domain: big\n#" + strings.Repeat("x", MaxFileSize) + "\n"
	writeFile(t, filepath.Join(dir, "big.yaml"), big)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "big.yaml: larger than") {
		t.Errorf("Load(oversize) = %v, want an error naming big.yaml", err)
	}
	// Exactly the bound is accepted.
	exact := "domain: big\n#"
	exact += strings.Repeat("x", MaxFileSize-len(exact)-1) + "\n"
	writeFile(t, filepath.Join(dir, "big.yaml"), exact)
	if _, err := Load(dir); err != nil {
		t.Errorf("Load(a file of exactly %d bytes) = %v", MaxFileSize, err)
	}
}

func TestLoadDanglingLink(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.yaml"), string(Example()))
	if err := os.Symlink("..data/gone.yaml", filepath.Join(dir, "gone.yaml")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "gone.yaml") {
		t.Errorf("Load(dangling link) = %v, want an error naming it", err)
	}
}

func TestLoadMissingPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Load(missing) = %v, want an error naming %s", err, path)
	}
}

func TestFromContentsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string][]byte{"policy.yaml": Example(), "other.yaml": []byte(otherDomain)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, src := range []string{"", dir} {
		snap, err := Load(src)
		if err != nil {
			t.Fatal(err)
		}
		again, err := FromContents(snap.Source(), snap.Files())
		if err != nil {
			t.Fatalf("%q: FromContents(Files()): %v", src, err)
		}
		if again.Digest() != snap.Digest() || len(again.Others()) != len(snap.Others()) {
			t.Errorf("%q: the snapshot changed through Files/FromContents", src)
		}
		name, data := again.PolicyFile()
		if name == "" || !bytes.Equal(data, Example()) {
			t.Errorf("%q: PolicyFile() = %q, %d bytes; want the example", src, name, len(data))
		}
	}
	if _, err := FromContents("xds", nil); err == nil {
		t.Error("FromContents with no files: want an error")
	}
	if _, err := FromContents("xds", map[string][]byte{"p.yaml": []byte("domain: leaky-tokens\nbogus: 1\n")}); err == nil || !strings.Contains(err.Error(), "p.yaml") {
		t.Errorf("an invalid policy: %v, want an error naming p.yaml", err)
	}
}
