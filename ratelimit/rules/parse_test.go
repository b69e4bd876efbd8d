package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const (
	wantUnits = " (want second, minute, hour, day, week, month or year)"
	descKeys  = " (a descriptor takes key, value, rate_limit, descriptors, shadow_mode, detailed_metric, value_to_metric, share_threshold, quota_mode, metadata)"
	rlKeys    = " (rate_limit takes unit, requests_per_unit, unlimited, name, replaces)"
)

// problem is one expected ParseError of a file under testdata/bad.
type problem struct {
	line int
	msg  string
}

// badFiles lists every negative fixture and every problem Parse must report
// for it, in order.
var badFiles = map[string][]problem{
	"bad_yaml.yaml":        {{0, "error loading config file: yaml: line 2: found unexpected end of stream"}},
	"two_documents.yaml":   {{2, "error loading config file: a rule file holds one YAML document, found a second"}},
	"empty_file.yaml":      {{0, "config file cannot have empty domain"}},
	"empty_domain.yaml":    {{1, "config file cannot have empty domain"}},
	"no_domain.yaml":       {{1, "config file cannot have empty domain"}},
	"root_not_map.yaml":    {{1, "config error, a rule file is a mapping with domain and descriptors, found a list"}},
	"misspelled_key.yaml":  {{4, "config error, unknown key 'ratelimit'" + descKeys}},
	"misspelled_key2.yaml": {{5, "requests_per_unit is required unless unlimited is true"}, {6, "config error, unknown key 'requestsperunit'" + rlKeys}},
	"misplaced_key.yaml": {
		{4, "config error, unknown key 'unit'" + descKeys},
		{8, "config error, unknown key 'shadow_mode'" + rlKeys},
	},
	"unit_multiplier.yaml":      {{7, "config error, unknown key 'unit_multiplier'" + rlKeys}},
	"non_string_key.yaml":       {{4, "config error, key is not of type string: 0.25"}},
	"non_map_list.yaml":         {{3, "config error, yaml file contains list of type other than map: a"}},
	"descriptors_not_list.yaml": {{3, "config error, descriptors must be a list of descriptors, found a mapping"}},
	"rate_limit_not_map.yaml":   {{4, "config error, rate_limit must be a mapping, found 5"}},
	"duplicate_key.yaml": {
		{6, "duplicate descriptor composite key 'test-domain.key1_value1' (first at line 3)"},
		{12, "duplicate descriptor composite key 'test-domain.key2.sub' (first at line 11)"},
	},
	"duplicate_yaml_key.yaml":        {{4, "duplicate key 'key' in a descriptor (first at line 3)"}},
	"empty_key.yaml":                 {{3, "descriptor has empty key"}},
	"bad_limit_unit.yaml":            {{5, "invalid rate limit unit 'foo'" + wantUnits}},
	"missing_unit.yaml":              {{5, "invalid rate limit unit ''" + wantUnits}},
	"missing_requests_per_unit.yaml": {{5, "requests_per_unit is required unless unlimited is true"}},
	"bad_requests_per_unit.yaml": {
		{4, "config error, requests_per_unit must be an integer from 0 to 4294967295, found -1"},
		{6, "config error, requests_per_unit must be an integer from 0 to 4294967295, found 1.5"},
		{8, `config error, requests_per_unit must be an integer from 0 to 4294967295, found "10"`},
		{10, "config error, requests_per_unit must be an integer from 0 to 4294967295, found 4294967296"},
	},
	"unlimited_with_unit.yaml":     {{6, "should not specify rate limit unit when unlimited"}},
	"unlimited_with_requests.yaml": {{6, "should not specify requests_per_unit when unlimited"}},
	"replaces_self.yaml":           {{9, "replaces should not contain name of same descriptor"}},
	"replaces_empty.yaml":          {{8, "should not have an empty replaces entry"}},
	"replaces_unknown.yaml":        {{13, "replaces names 'limit2', but no rate_limit in domain 'test-domain' has that name"}},
	"share_threshold_no_wildcard.yaml": {
		{5, "share_threshold can only be used with wildcard values (containing '*'), but found key 'files_files/a'"},
	},
	"bad_bool.yaml": {
		{4, `config error, shadow_mode must be true or false, found "true"`},
		{5, "config error, quota_mode must be true or false, found maybe"},
		{7, "config error, unlimited must be true or false, found a list"},
	},
	"bad_metadata.yaml": {
		{4, "error parsing metadata: metadata must be a mapping, found a list"},
		{7, "error parsing metadata: a key must be a scalar, found a list"},
		{12, "error parsing metadata: duplicate key 'x' (first at line 11)"},
	},
	"merge_not_mapping.yaml": {{4, "a merge key (<<) must refer to a mapping or a list of mappings"}},
	"alias_bomb.yaml":        {{5, "config too large or too deeply nested (aliases included)"}},
	"many_problems.yaml": {
		{3, "descriptor has empty key"},
		{4, "invalid rate limit unit 'fortnight'" + wantUnits},
		{4, "requests_per_unit is required unless unlimited is true"},
		{7, "duplicate descriptor composite key 'test-domain.ok' (first at line 5)"},
	},
}

func TestParseRejects(t *testing.T) {
	onDisk, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range onDisk {
		if _, ok := badFiles[filepath.Base(path)]; !ok {
			t.Errorf("fixture %s has no case in badFiles", path)
		}
	}
	for name, want := range badFiles {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", "bad", name)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(path, data)
			if c != nil || err == nil {
				t.Fatalf("Parse(%s) = %v, %v, want nil and an error", path, c, err)
			}
			var got []problem
			for _, e := range parseErrors(err) {
				if e.File != path {
					t.Errorf("Parse(%s): error %q names file %q, want %q", path, e, e.File, path)
				}
				got = append(got, problem{e.Line, e.Msg})
			}
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(problem{})); diff != "" {
				t.Errorf("Parse(%s) problems mismatch (-want +got):\n%s", path, diff)
			}
			// The text names the file (and the line) before each problem.
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, path+":") {
					t.Errorf("Parse(%s) error line %q does not start with %q", path, line, path+":")
				}
			}
		})
	}
}

// parseErrors flattens an error returned by Parse or NewSet.
func parseErrors(err error) []*ParseError {
	var out []*ParseError
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var pe *ParseError
		if errors.As(err, &pe) {
			out = append(out, pe)
		}
	}
	walk(err)
	return out
}

func TestParseErrorString(t *testing.T) {
	tests := []struct {
		in   ParseError
		want string
	}{
		{ParseError{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad"},
		{ParseError{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
	}
	for _, tt := range tests {
		if got := tt.in.Error(); got != tt.want {
			t.Errorf("%#v.Error() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name, yaml string
		wantDomain string
	}{
		{"domain only", "domain: d\n", "d"},
		{"null descriptors", "domain: d\ndescriptors:\n", "d"},
		{"empty descriptors", "domain: d\ndescriptors: []\n", "d"},
		{"null rate_limit is no limit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n", "d"},
		{"zero requests_per_unit blocks", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 0}\n", "d"},
		{"numeric domain is its text", "domain: 42\n", "42"},
		{"comments and document marker", "# rules\n---\ndomain: d # inline\n", "d"},
		{"unlimited false needs a unit", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: false, unit: hour, requests_per_unit: 1}\n", "d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("in.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.yaml, err)
			}
			if c.Domain != tt.wantDomain || c.File != "in.yaml" {
				t.Errorf("Parse(%q) = domain %q file %q, want %q and %q", tt.yaml, c.Domain, c.File, tt.wantDomain, "in.yaml")
			}
		})
	}
}
