package main

import (
	"go/build"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/leakytokens/leaky"

// importChains walks the non-test imports of the module's package pkg (a
// path relative to the module root) and its module-local dependencies, and
// returns, for every import path reached, one chain of packages leading to
// it from pkg.
func importChains(t *testing.T, pkg string) map[string][]string {
	t.Helper()
	root := filepath.Join("..", "..")
	start := module + "/" + pkg
	chains := map[string][]string{start: {start}}
	queue := []string{start}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		p, err := build.Default.ImportDir(filepath.Join(root, strings.TrimPrefix(path, module)), 0)
		if err != nil {
			t.Fatalf("read package %s: %v", path, err)
		}
		for _, imp := range p.Imports {
			if _, seen := chains[imp]; seen {
				continue
			}
			chains[imp] = append(slices.Clone(chains[path]), imp)
			if imp == module || strings.HasPrefix(imp, module+"/") {
				queue = append(queue, imp)
			}
		}
	}
	return chains
}

// matches reports whether path matches pattern: an import path, or a tree
// of them when it ends in "/..." (as the go command reads patterns).
func matches(path, pattern string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// The services take their stores through interfaces they declare; the
// adapters (and their client libraries) are chosen here, in cmd/leaky. No
// service package, nor any package of the module it builds on, may import
// one, nor the other service's package. (Sub-packages of pure code such as
// ratelimit/gcra, which internal/policy uses, are not services.) cmd/leaky itself is the control: it must
// reach both adapters, or the walk proves nothing.
func TestServicesImportNoAdapter(t *testing.T) {
	adapters := []string{
		module + "/ratelimit/redisstore/...", "github.com/redis/go-redis/...",
		module + "/authz/pgstore/...", "github.com/jackc/pgx/...",
	}
	tests := []struct {
		pkg       string
		forbidden []string
		reached   []string
	}{
		{"ratelimit", append([]string{module + "/authz"}, adapters...), nil},
		{"authz", append([]string{module + "/ratelimit"}, adapters...), nil},
		{"cmd/leaky", nil, []string{module + "/ratelimit/redisstore", module + "/authz/pgstore"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			chains := importChains(t, tt.pkg)
			for path, chain := range chains {
				for _, f := range tt.forbidden {
					if matches(path, f) {
						t.Errorf("%s imports %s: %s", tt.pkg, path, strings.Join(chain, " → "))
					}
				}
			}
			for _, want := range tt.reached {
				if _, ok := chains[want]; !ok {
					t.Errorf("%s does not reach %s; the walk is broken or the adapter moved", tt.pkg, want)
				}
			}
		})
	}
}
