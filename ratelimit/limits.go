package ratelimit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/rules"
)

// maxConfigFile bounds one configuration file's size.
const maxConfigFile = 4 << 20

// limits is one loaded, valid configuration. It is immutable: a reload
// builds a new one and swaps it in.
type limits struct {
	policy *policy.Policy // domain leaky-tokens; nil when no policy file is configured
	rules  *rules.Set     // every other domain; nil when none
	digest [sha256.Size]byte
}

// configFiles lists the files of path: the file itself, or the *.yaml and
// *.yml files directly inside a directory, sorted.
func configFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		name := filepath.Join(path, e.Name())
		ext := filepath.Ext(e.Name())
		if strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		// Stat follows symbolic links, as in a Kubernetes ConfigMap mount
		// (x.yaml -> ..data/x.yaml).
		if fi, err := os.Stat(name); err == nil && fi.Mode().IsRegular() {
			files = append(files, name)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml or *.yml files", path)
	}
	slices.Sort(files)
	return files, nil
}

// readConfig reads the files of path with a digest of their names and
// contents, so a reload can tell whether anything changed.
func readConfig(path string) (map[string][]byte, [sha256.Size]byte, error) {
	var digest [sha256.Size]byte
	files, err := configFiles(path)
	if err != nil {
		return nil, digest, err
	}
	h := sha256.New()
	contents := make(map[string][]byte, len(files))
	for _, f := range files {
		data, err := readBounded(f)
		if err != nil {
			return nil, digest, err
		}
		contents[f] = data
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	copy(digest[:], h.Sum(nil))
	return contents, digest, nil
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxConfigFile)
	}
	return data, nil
}

// parseLimits builds a configuration from file contents. A file whose
// top-level domain is leaky-tokens is the policy; every other file is an
// envoyproxy/ratelimit domain file. Every problem is reported, each naming
// its file.
func parseLimits(contents map[string][]byte) (*limits, error) {
	l := &limits{}
	other := map[string][]byte{}
	var errs []error
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range contents {
			if !yield(k) {
				return
			}
		}
	}) {
		data := contents[name]
		if !isPolicy(data) {
			other[name] = data
			continue
		}
		if l.policy != nil {
			errs = append(errs, fmt.Errorf("%s: a second policy file for domain %s", name, policy.Domain))
			continue
		}
		p, err := policy.Parse(name, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.policy = p
	}
	if len(other) > 0 {
		set, err := rules.NewSet(other)
		if err != nil {
			errs = append(errs, err)
		}
		l.rules = set
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// isPolicy reports whether a YAML document's top-level domain is
// leaky-tokens.
func isPolicy(data []byte) bool {
	var head struct {
		Domain string `yaml:"domain"`
	}
	_ = yaml.Unmarshal(data, &head)
	return head.Domain == policy.Domain
}

// loadLimits reads and parses path; an empty path is the embedded example
// policy.
func loadLimits(path string) (*limits, error) {
	if path == "" {
		p, err := policy.Parse("embedded example policy", policy.Example())
		if err != nil {
			return nil, err
		}
		return &limits{policy: p}, nil
	}
	contents, digest, err := readConfig(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	l, err := parseLimits(contents)
	if err != nil {
		return nil, err
	}
	l.digest = digest
	return l, nil
}
