package main

import (
	"go/build"
	"io/fs"
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
// sharedPure lists the sub-packages of a service that are pure code other
// parts of the module build on (internal/policy sizes buckets with gcra; the
// control plane reads envoyproxy/ratelimit rule files' metadata with rules
// when it translates them into RateLimitConfig resources), so the other
// service may reach them.
var sharedPure = []string{module + "/ratelimit/gcra/...", module + "/ratelimit/rules"}

// forbiddenImport reports whether path matches one of forbidden and is not
// shared pure code.
func forbiddenImport(path string, forbidden []string) bool {
	for _, p := range sharedPure {
		if matches(path, p) {
			return false
		}
	}
	for _, f := range forbidden {
		if matches(path, f) {
			return true
		}
	}
	return false
}

func matches(path, pattern string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return path == base || strings.HasPrefix(path, base+"/")
	}
	return path == pattern
}

// The services take their stores through interfaces they declare; the
// adapters (and their client libraries) are chosen here, in cmd/leaky. No
// service package, nor any package of the module it builds on, may import
// one, nor any package of the other service (but the pure code in
// sharedPure). cmd/leaky itself is the control: it must reach both adapters,
// or the walk proves nothing.
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
		{"ratelimit", append([]string{module + "/authz/..."}, adapters...), nil},
		{"authz", append([]string{module + "/ratelimit/..."}, adapters...), nil},
		// The control plane declares Catalog and KV; cmd/leaky wires
		// controlplane/consul to them.
		{"controlplane", append([]string{module + "/authz/...", module + "/ratelimit/...",
			module + "/controlplane/consul/...", "github.com/hashicorp/consul/..."}, adapters...), nil},
		{"cmd/leaky", nil, []string{module + "/ratelimit/redisstore", module + "/authz/pgstore", module + "/controlplane/consul"}},
	}
	// Every sub-package of authz but its adapter is held to authz's rule,
	// and imports nothing of the root package: authz wires them, not the
	// other way round.
	subs := authzSubpackages(t)
	for _, want := range []string{"authz/extauthz", "authz/keyauth", "authz/keyring", "authz/oauth", "authz/store"} {
		if !slices.Contains(subs, want) {
			t.Errorf("authz sub-packages %v lack %s; the listing is broken or the package moved", subs, want)
		}
	}
	for _, sub := range subs {
		tests = append(tests, struct {
			pkg       string
			forbidden []string
			reached   []string
		}{sub, append([]string{module + "/ratelimit/...", module + "/authz"}, adapters...), nil})
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			chains := importChains(t, tt.pkg)
			for path, chain := range chains {
				if forbiddenImport(path, tt.forbidden) {
					t.Errorf("%s imports %s: %s", tt.pkg, path, strings.Join(chain, " → "))
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

// authzSubpackages lists the Go packages below authz (relative to the
// module root), but authz/pgstore, the adapter itself.
func authzSubpackages(t *testing.T) []string {
	t.Helper()
	var out []string
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(filepath.Join(root, "authz"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == "authz/pgstore" {
			return fs.SkipDir
		}
		if _, err := build.Default.ImportDir(path, 0); err == nil && rel != "authz" {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
