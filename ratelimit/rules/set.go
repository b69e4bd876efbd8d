package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// Set holds the rule files of a service, one Config per domain. It is
// immutable after NewSet and safe for concurrent use; the zero Set and a nil
// *Set hold no domains.
type Set struct {
	domains map[string]*Config
}

// NewSet parses every file (name → contents) and indexes the results by
// domain. Files are processed in name order. Two files with the same domain
// are an error (envoyproxy/ratelimit's default; its MERGE_DOMAIN_CONFIG is not
// supported), reported against the later name. All problems of all files are
// returned together (errors.Join of *ParseError), and then the Set is nil.
func NewSet(files map[string][]byte) (*Set, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	s := &Set{domains: make(map[string]*Config, len(files))}
	var errs []error
	for _, name := range names {
		c, err := Parse(name, files[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev := s.domains[c.Domain]; prev != nil {
			errs = append(errs, &ParseError{File: name,
				Msg: fmt.Sprintf("duplicate domain '%s' in config file (also in %s)", c.Domain, prev.File)})
			continue
		}
		s.domains[c.Domain] = c
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// LoadFS reads every regular file named *.yaml or *.yml directly in dir of
// fsys (not in subdirectories; names starting with "." are skipped) and
// returns NewSet of them, each named by its path in fsys. A directory without
// such files yields an empty Set.
func LoadFS(fsys fs.FS, dir string) (*Set, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read rule directory: %w", err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		name := e.Name()
		ext := path.Ext(name)
		if strings.HasPrefix(name, ".") || !e.Type().IsRegular() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		p := path.Join(dir, name)
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, fmt.Errorf("read rule file: %w", err)
		}
		files[p] = data
	}
	return NewSet(files)
}

// Domain returns the Config of the named domain, or nil when no file declares
// it. The nil *Config matches nothing, so its result can be passed to Resolve
// as is.
func (s *Set) Domain(name string) *Config {
	if s == nil {
		return nil
	}
	return s.domains[name]
}

// Domains returns the domain names in the Set, sorted.
func (s *Set) Domains() []string {
	if s == nil {
		return nil
	}
	names := make([]string, 0, len(s.domains))
	for name := range s.domains {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
