package policy

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leakytokens/leaky/ratelimit/gcra"
)

// Bounds of the policy's values.
const (
	// MaxLeakRate is the fastest leak rate, in tokens per second: one token
	// per microsecond, the resolution of the algorithm's clock.
	MaxLeakRate = 1e6
	// MaxRateError bounds how far the leak rate the algorithm runs may be
	// from the one written, as a fraction of it. The algorithm drains one
	// token every whole number of microseconds, so it runs 1e6/round(1e6/r)
	// tokens/s: within the bound for every rate up to 20,000 tokens/s, but
	// 700,000 would run as 1e6 (43 % more).
	MaxRateError = 0.01
	// MinReservationTTL and MaxReservationTTL bound reservation_ttl. A
	// reservation that expires before the provider answers is settled at
	// its estimate and the actual usage above it is never charged; one kept
	// for days only fills the ledger.
	MinReservationTTL = time.Second
	MaxReservationTTL = 24 * time.Hour
)

// tierName is what a tier may be called: it travels in the x-leaky-tier
// header and as a descriptor value, so it must be a plain header token.
var tierName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// providerName is what a provider may be called: authz matches it against
// the lower-cased first path segment (or /api/v1/<provider>/…) and sends it
// in x-leaky-provider, so anything else could never be matched.
var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// validate refuses every policy the services could not enforce as written:
// a refusal here is a message at load, where otherwise a request would find
// no rule and be answered OK with no limit (fail open). It fills each
// bucket's Limit.
func (p *Policy) validate() []error {
	var errs []error
	if p.Domain != Domain {
		errs = append(errs, fmt.Errorf("domain %q: must be %q", p.Domain, Domain))
	}
	switch p.FailureMode {
	case FailAllow, FailDeny, FailError:
	default:
		errs = append(errs, fmt.Errorf("failure_mode %q: must be allow, deny or error", p.FailureMode))
	}
	if len(p.Tiers) == 0 {
		errs = append(errs, errors.New("tiers: at least one tier is required"))
	}
	if _, ok := p.Tiers[p.DefaultTier]; !ok {
		errs = append(errs, fmt.Errorf("default_tier %q: not a tier", p.DefaultTier))
	}
	errs = append(errs, p.validateTiers()...)
	errs = append(errs, validateBuckets("organisations", p.Organisations)...)
	errs = append(errs, validateBuckets("providers", p.Providers)...)
	errs = append(errs, p.validateProvidersKnown()...)
	errs = append(errs, p.Gateway.validate(p.Providers)...)
	errs = append(errs, p.validateQuotas()...)
	switch ttl := time.Duration(p.ReservationTTL); {
	case ttl < MinReservationTTL:
		errs = append(errs, fmt.Errorf("reservation_ttl %s: must be at least %s, or a reservation expires before the provider answers and its usage above the estimate is never charged", ttl, MinReservationTTL))
	case ttl > MaxReservationTTL:
		errs = append(errs, fmt.Errorf("reservation_ttl %s: must be at most %s", ttl, MaxReservationTTL))
	}
	if p.MaxClientsPerUser < 1 || p.MaxClientsPerUser > MaxMaxClientsPerUser {
		errs = append(errs, fmt.Errorf("max_clients_per_user %d: must be 1 to %d (omit it for %d)", p.MaxClientsPerUser, MaxMaxClientsPerUser, DefaultMaxClientsPerUser))
	}
	return errs
}

func (p *Policy) validateTiers() []error {
	var errs []error
	roles := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(p.Tiers)) {
		t := p.Tiers[name]
		if !tierName.MatchString(name) {
			errs = append(errs, fmt.Errorf("tiers.%s: a tier name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (it travels in the x-leaky-tier header)", quoteIfOdd(name)))
		}
		for _, r := range t.Roles {
			if r == "" || strings.TrimSpace(r) != r {
				errs = append(errs, fmt.Errorf("tiers.%s.roles: role %q must be non-empty without surrounding spaces", name, r))
				continue
			}
			key := strings.ToUpper(r)
			if other, dup := roles[key]; dup && p.Tiers[other].Priority == t.Priority {
				errs = append(errs, fmt.Errorf("tier %q: role %q also maps to tier %q at the same priority", name, r, other))
			}
			roles[key] = name
		}
		errs = append(errs, validateBuckets("tiers."+name+".buckets", t.Buckets)...)
	}
	return errs
}

// validateBuckets checks each bucket of m, named where.<provider>, and
// fills its Limit.
func validateBuckets(where string, m map[string]Bucket) []error {
	var errs []error
	for _, prov := range slices.Sorted(maps.Keys(m)) {
		b := m[prov]
		field := where + "." + quoteIfOdd(prov)
		if prov != Wildcard && !providerName.MatchString(prov) {
			errs = append(errs, fmt.Errorf("%s: a provider name is \"*\" or 1 to 64 lower-case letters, digits, '.', '_' or '-' (authz matches it against the lower-cased request path)", field))
		}
		bad := false
		if b.Capacity < 1 {
			errs = append(errs, fmt.Errorf("%s.capacity %d: must be at least 1", field, b.Capacity))
			bad = true
		}
		if math.IsNaN(b.LeakRate) || b.LeakRate <= 0 || b.LeakRate > MaxLeakRate {
			errs = append(errs, fmt.Errorf("%s.leak_rate %v: must be above 0 and at most 1e6 tokens/s", field, b.LeakRate))
			bad = true
		}
		if bad {
			continue
		}
		lim, err := gcra.NewLimit(b.Capacity, b.LeakRate)
		if err != nil { // the span or the interval exceeds gcra.MaxSpan
			years := float64(b.Capacity) / b.LeakRate / (365.25 * 24 * 3600)
			errs = append(errs, fmt.Errorf("%s: capacity %d at leak_rate %v cannot be represented: a full bucket takes %.3g years to drain, more than the %d µs (about 35 years) a bucket can span; lower the capacity or raise the leak_rate",
				field, b.Capacity, b.LeakRate, years, gcra.MaxSpan))
			continue
		}
		if err := checkRate(field, b.LeakRate, lim); err != nil {
			errs = append(errs, err)
			continue
		}
		b.limit = lim
		m[prov] = b
	}
	return errs
}

// checkRate refuses a leak rate the algorithm would run more than
// MaxRateError away from rate, naming the representable rates beside it.
func checkRate(field string, rate float64, lim gcra.Limit) error {
	runs := lim.Rate()
	if math.Abs(runs-rate) <= MaxRateError*rate {
		return nil
	}
	per := 1e6 / rate // microseconds per token, as written
	slower, faster := 1e6/math.Ceil(per), 1e6/math.Floor(per)
	return fmt.Errorf("%s.leak_rate %s: would run as %s tokens/s (%+.1f%%), more than %g%% off: the bucket drains one token every whole number of microseconds, so a rate above 20000 must be close to 1000000/n for a whole n; the nearest are %s and %s",
		field, plain(rate), plain(runs), 100*(runs-rate)/rate, 100*MaxRateError, plain(slower), plain(faster))
}

// plain writes a rate without an exponent, to three decimals at most.
func plain(x float64) string {
	return strconv.FormatFloat(math.Round(x*1000)/1000, 'f', -1, 64)
}

// validateProvidersKnown refuses a policy that would limit nothing and a
// bucket that could never apply. authz names only providers listed under
// providers, other than "*", in x-leaky-provider; without that header the
// request carries no descriptor and is never limited. So the section must
// list at least one provider by name, a "*" provider pool would never
// apply, and neither would a tier or organisation bucket for an unlisted
// provider.
func (p *Policy) validateProvidersKnown() []error {
	var errs []error
	named := len(p.Providers)
	if _, ok := p.Providers[Wildcard]; ok {
		named--
		errs = append(errs, errors.New(`providers."*": authz names only the providers listed here by name, so a "*" pool would never apply; give each provider its own pool`))
	}
	if named == 0 {
		errs = append(errs, errors.New("providers: at least one provider must be listed by name: authz names only listed providers, and a request that names none is never limited, so this policy would limit nothing"))
	}
	check := func(where string, m map[string]Bucket) {
		for _, prov := range slices.Sorted(maps.Keys(m)) {
			if _, listed := p.Providers[prov]; prov != Wildcard && !listed {
				errs = append(errs, fmt.Errorf("%s.%s: provider %q is not listed under providers, so authz never names it and this bucket would never apply; add a providers.%s pool", where, quoteIfOdd(prov), prov, prov))
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Tiers)) {
		check("tiers."+quoteIfOdd(name)+".buckets", p.Tiers[name].Buckets)
	}
	check("organisations", p.Organisations)
	return errs
}

// quoteIfOdd quotes a map key for a field path when it is empty or holds
// anything but plain name characters.
func quoteIfOdd(s string) string {
	if s == Wildcard || tierName.MatchString(s) {
		return s
	}
	return fmt.Sprintf("%q", s)
}
