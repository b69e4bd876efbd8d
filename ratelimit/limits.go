package ratelimit

import (
	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/ratelimit/rules"
)

// limits is one loaded, valid configuration. It is immutable: a reload
// builds a new one and swaps it in.
type limits struct {
	policy *policy.Policy   // domain leaky-tokens; nil when no policy file is configured
	rules  *rules.Set       // every other domain; nil when none
	snap   *policy.Snapshot // what both were built from
}

// newLimits parses the snapshot's envoyproxy/ratelimit domain files with
// opts (the policy is already parsed and validated by the loader). Every
// problem is reported, each naming its file.
func newLimits(snap *policy.Snapshot, opts rules.Options) (*limits, error) {
	l := &limits{policy: snap.Policy(), snap: snap}
	if other := snap.Others(); len(other) > 0 {
		set, err := rules.NewSetWith(other, opts)
		if err != nil {
			return nil, err
		}
		l.rules = set
	}
	return l, nil
}

// loadLimits loads path with the policy loader (policy.Load: "" is the
// embedded example policy, else a file or a directory of files) and its
// rule files with opts.
func loadLimits(path string, opts rules.Options) (*limits, error) {
	snap, err := policy.Load(path)
	if err != nil {
		return nil, err
	}
	return newLimits(snap, opts)
}
