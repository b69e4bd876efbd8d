package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
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

// Options changes how NewSetWith builds a Set. The zero value is NewSet's
// behaviour.
type Options struct {
	// MergeDomains merges files that declare the same domain
	// (envoyproxy/ratelimit's MERGE_DOMAIN_CONFIG): the top-level
	// descriptors of each later file, in name order, join those of the
	// first; a top-level key and value already present is an error
	// ("duplicate descriptor composite key", reported against the later
	// file), nested lists are never merged, and wildcards are tried in
	// file-name order, then line order. Without it a second file of a
	// domain is an error.
	MergeDomains bool
}

// NewSet is NewSetWith(files, Options{}): two files with the same domain
// are an error.
func NewSet(files map[string][]byte) (*Set, error) {
	return NewSetWith(files, Options{})
}

// NewSetWith parses every file (name → contents; a name only labels
// messages, so a control plane can pass resources by name) and indexes the
// results by domain. Files are processed in name order. Two files with the
// same domain are an error reported against the later name
// (envoyproxy/ratelimit's default) unless opts.MergeDomains merges them.
// The names a replaces entry refers to must exist in the entry's domain,
// across all of its files. All problems of all files are returned together
// (errors.Join of *ParseError), and then the Set is nil.
func NewSetWith(files map[string][]byte, opts Options) (*Set, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	s := &Set{domains: make(map[string]*Config, len(files))}
	refs := map[string][]nameRef{} // by domain
	var errs []error
	for _, name := range names {
		c, crefs, perrs := parseFile(name, files[name])
		if len(perrs) > 0 {
			perrs = append(perrs, c.unknownNames(crefs)...)
			errs = append(errs, joinByLine(perrs))
			continue
		}
		prev := s.domains[c.Domain]
		switch {
		case prev == nil:
			s.domains[c.Domain] = c
		case !opts.MergeDomains:
			errs = append(errs, &ParseError{File: name,
				Msg: fmt.Sprintf("duplicate domain '%s' in config file (also in %s)", c.Domain, prev.File)})
			continue
		default:
			if err := joinByLine(prev.merge(c)); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		refs[c.Domain] = append(refs[c.Domain], crefs...)
	}
	for _, domain := range slices.Sorted(maps.Keys(refs)) {
		if err := joinByLine(s.domains[domain].unknownNames(refs[domain])); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// merge adds the top-level rules of later, a file of the same domain, to c
// in later's load order (so its wildcards follow c's, in their file's
// order, even several on one line), and returns a problem for each rule
// whose key and value c already has (that rule is left out). c must not be
// in use yet.
func (c *Config) merge(later *Config) []*ParseError {
	var errs []*ParseError
	for _, r := range later.root.order {
		if prev := c.root.add(r); prev != nil {
			final := r.key
			if r.value != "" {
				final += "_" + r.value
			}
			errs = append(errs, &ParseError{File: later.File, Line: r.line,
				Msg: fmt.Sprintf("duplicate descriptor composite key '%s.%s' (first in %s:%d)", c.Domain, final, prev.file, prev.line)})
		}
	}
	for name := range later.names {
		c.names[name] = true
	}
	return errs
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
