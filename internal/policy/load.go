package policy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds one configuration file, in bytes.
const MaxFileSize = 4 << 20

// ExampleSource is the name the embedded example policy is loaded under.
const ExampleSource = "embedded example policy"

// Snapshot is one loaded configuration: the leaky-tokens policy and every
// other domain file of a path, read and validated together. It is
// immutable once Load returns it and safe for concurrent use; a change on
// disk makes a new Snapshot.
type Snapshot struct {
	source     string
	policy     *Policy
	policyName string // the policy file's name in the snapshot
	policyData []byte // and its contents, as read
	others     map[string][]byte
	digest     [sha256.Size]byte
}

// Source is the path the snapshot was loaded from, or ExampleSource.
func (s *Snapshot) Source() string { return s.source }

// Policy is the leaky-tokens policy, or nil when no file of the snapshot
// has the top-level domain leaky-tokens. Callers must not modify it.
func (s *Snapshot) Policy() *Policy { return s.policy }

// Others returns a copy of every other file's contents by path: domains in
// envoyproxy/ratelimit's format, which the ratelimit service parses and
// validates itself. Each is valid YAML with a top-level domain.
func (s *Snapshot) Others() map[string][]byte {
	out := make(map[string][]byte, len(s.others))
	for k, v := range s.others {
		out[k] = bytes.Clone(v)
	}
	return out
}

// PolicyFile is the policy file's name and contents as read, for a control
// plane that passes the policy on as text (the example's name is
// ExampleSource); empty when the snapshot has no policy.
func (s *Snapshot) PolicyFile() (name string, data []byte) {
	return s.policyName, bytes.Clone(s.policyData)
}

// Files returns every file of the snapshot by name, the policy included:
// FromContents(s.Source(), s.Files()) is an equal snapshot.
func (s *Snapshot) Files() map[string][]byte {
	out := s.Others()
	if s.policyName != "" {
		out[s.policyName] = bytes.Clone(s.policyData)
	}
	return out
}

// Digest is a SHA-256 over the files' names and contents: equal digests
// mean the same configuration.
func (s *Snapshot) Digest() [sha256.Size]byte { return s.digest }

// Load reads and validates the configuration at path:
//   - "" is the embedded example policy;
//   - a file is the policy or one envoyproxy/ratelimit domain file;
//   - a directory is every *.yaml and *.yml file directly in it, sorted by
//     name; hidden files (".…") are skipped and symbolic links followed,
//     as in a Kubernetes ConfigMap mount (x.yaml -> ..data/x.yaml). A
//     directory without such files is an error.
//
// Each file is at most MaxFileSize bytes, valid YAML, with a top-level
// domain. The file whose domain is leaky-tokens is the policy, parsed and
// validated whole by Parse; a second one is an error. Every problem is
// reported, each prefixed with its file's path.
func Load(path string) (*Snapshot, error) {
	if path == "" {
		data := Example()
		p, err := Parse(ExampleSource, data)
		if err != nil {
			return nil, err
		}
		return &Snapshot{source: ExampleSource, policy: p, policyName: ExampleSource, policyData: data,
			others: map[string][]byte{}, digest: digest(map[string][]byte{ExampleSource: data})}, nil
	}
	contents, err := read(path)
	if err != nil {
		return nil, err
	}
	return parseFiles(path, contents)
}

// FromContents builds and validates a snapshot from files already in
// memory, by name, as Load does from disk: what a configuration received
// over xDS or read from Consul KV becomes. source names where they came from.
func FromContents(source string, contents map[string][]byte) (*Snapshot, error) {
	if len(contents) == 0 {
		return nil, fmt.Errorf("%s: no configuration files", source)
	}
	for name, data := range contents {
		if len(data) > MaxFileSize {
			return nil, fmt.Errorf("%s: %d bytes, more than the %d a configuration file may have", name, len(data), MaxFileSize)
		}
	}
	return parseFiles(source, contents)
}

// read returns the contents of path's configuration files by path.
func read(path string) (map[string][]byte, error) {
	files, err := list(path)
	if err != nil {
		return nil, err
	}
	contents := make(map[string][]byte, len(files))
	for _, f := range files {
		data, err := readBounded(f)
		if err != nil {
			return nil, err
		}
		contents[f] = data
	}
	return contents, nil
}

// list names the configuration files of path, sorted.
func list(path string) ([]string, error) {
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
		ext := filepath.Ext(e.Name())
		if strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		name := filepath.Join(path, e.Name())
		// Stat follows symbolic links; a dangling one is an error.
		fi, err := os.Stat(name)
		if err != nil {
			return nil, err
		}
		if fi.Mode().IsRegular() {
			files = append(files, name)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s: no *.yaml or *.yml files", path)
	}
	slices.Sort(files)
	return files, nil
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxFileSize)
	}
	return data, nil
}

// digest hashes names and contents, each length-prefixed so that no two
// different configurations hash alike.
func digest(contents map[string][]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(contents)) {
		data := contents[name]
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(data))
		h.Write(data)
	}
	var d [sha256.Size]byte
	copy(d[:], h.Sum(nil))
	return d
}

// parseFiles builds a snapshot from the contents read at source.
func parseFiles(source string, contents map[string][]byte) (*Snapshot, error) {
	s := &Snapshot{source: source, others: map[string][]byte{}, digest: digest(contents)}
	var errs []error
	var policyFile string
	for _, name := range slices.Sorted(maps.Keys(contents)) {
		data := contents[name]
		domain, err := domainOf(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if domain != Domain {
			s.others[name] = data
			continue
		}
		if policyFile != "" {
			errs = append(errs, fmt.Errorf("%s: a second policy file for domain %s (the first is %s)", name, Domain, policyFile))
			continue
		}
		policyFile = name
		p, err := Parse(name, data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.policy, s.policyName, s.policyData = p, name, data
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// domainOf reads the top-level domain of a YAML document.
func domainOf(data []byte) (string, error) {
	var head struct {
		Domain string `yaml:"domain"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return "", err
	}
	if head.Domain == "" {
		return "", errors.New("no top-level domain: every configuration file names its domain (leaky-tokens for the policy)")
	}
	return head.Domain, nil
}
