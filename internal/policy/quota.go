package policy

import (
	"fmt"
	"maps"
	"slices"
	"time"

	// Calendar windows name IANA zones: the database Go embeds answers them
	// on a machine without /usr/share/zoneinfo.
	_ "time/tzdata"
)

// Bounds of a quota.
const (
	MaxAllowance    = 1_000_000_000_000_000 // 1e15 tokens: exact in the store's doubles
	MinQuotaWindow  = time.Minute
	DefaultTimeZone = "UTC"
)

// Window kinds of a quota.
const (
	WindowDay   = "day"   // calendar day in the quota's time zone
	WindowMonth = "month" // calendar month in the quota's time zone
)

// Quotas is the policy's optional quotas section: an allowance of tokens
// per window for each tier's users and for organisations, per provider
// ("*" for any provider without an entry of its own). A policy without it
// has no quotas: only the buckets limit.
type Quotas struct {
	// TimeZone is the IANA zone of calendar windows whose quota names none;
	// Parse sets it to UTC when the file leaves it out.
	TimeZone string `yaml:"time_zone"`
	// Tiers is each tier's per-user quota, per provider. A tier left out
	// has no quota.
	Tiers map[string]map[string]Quota `yaml:"tiers"`
	// Organisations is every organisation's quota, per provider.
	Organisations map[string]Quota `yaml:"organisations"`
}

// Quota is one allowance: Allowance tokens per window. Period is "day" or
// "month" (calendar windows in TimeZone, reset at local midnight and on
// the 1st, so a DST day is 23 or 25 hours long) or a Go duration of at
// least a minute (rolling: consecutive windows of that length from the
// Unix epoch). Parse fills the unexported fields; a Quota made by hand
// has the zero window, which Window reports as one minute from the epoch.
type Quota struct {
	Allowance int64  `yaml:"allowance"`
	Period    string `yaml:"window"`    // the window: day, month or a duration
	TimeZone  string `yaml:"time_zone"` // "" = the section's

	every time.Duration  // rolling windows; 0 for calendar ones
	loc   *time.Location // calendar windows
}

// Rolling reports whether q's windows are a fixed length from the epoch.
func (q Quota) Rolling() bool { return q.loc == nil }

// Window returns the window holding now: [start, end), both in UTC. A
// calendar day starts at local midnight, or at the first instant of the
// local day where midnight does not exist (a DST change at 00:00); a
// calendar month on the 1st's start.
func (q Quota) Window(now time.Time) (start, end time.Time) {
	if q.loc == nil {
		every := q.every
		if every <= 0 {
			every = MinQuotaWindow
		}
		ns := now.UnixNano()
		r := ns % int64(every)
		if r < 0 {
			r += int64(every)
		}
		start = time.Unix(0, ns-r).UTC()
		return start, start.Add(every)
	}
	y, m, d := now.In(q.loc).Date()
	if q.Period == WindowMonth {
		return dayStart(y, m, 1, q.loc), dayStart(y, m+1, 1, q.loc)
	}
	start, end = dayStart(y, m, d, q.loc), dayStart(y, m, d+1, q.loc)
	if now.Before(start) { // a fall-back that crosses midnight: the day began again
		start, end = dayStart(y, m, d-1, q.loc), start
	}
	return start, end
}

// dayStart is the first instant, in UTC, whose local date in loc is the
// day y-m-d (normalised as time.Date does).
func dayStart(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // the normalised date
	before := func(x time.Time) bool {
		ly, lm, ld := x.In(loc).Date()
		return time.Date(ly, lm, ld, 0, 0, 0, 0, time.UTC).Before(want)
	}
	if !before(t) && t.In(loc).Hour() == 0 && t.In(loc).Minute() == 0 && t.In(loc).Second() == 0 && before(t.Add(-time.Second)) {
		return t.UTC()
	}
	// Midnight does not exist or repeats: search the transition, whole
	// seconds within a few hours of it (zone changes are whole seconds).
	lo, hi := t.Add(-4*time.Hour).Unix(), t.Add(4*time.Hour).Unix()
	for lo+1 < hi {
		mid := lo + (hi-lo)/2
		if before(time.Unix(mid, 0)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return time.Unix(hi, 0).UTC()
}

// UserQuota is a tier's per-user quota for a provider; false when the
// policy sets none.
func (p *Policy) UserQuota(tier, provider string) (Quota, bool) {
	if p.Quotas == nil {
		return Quota{}, false
	}
	return lookupQuota(p.Quotas.Tiers[tier], provider)
}

// OrgQuota is an organisation's quota for a provider; false when the
// policy sets none.
func (p *Policy) OrgQuota(provider string) (Quota, bool) {
	if p.Quotas == nil {
		return Quota{}, false
	}
	return lookupQuota(p.Quotas.Organisations, provider)
}

func lookupQuota(m map[string]Quota, provider string) (Quota, bool) {
	if q, ok := m[provider]; ok {
		return q, true
	}
	q, ok := m[Wildcard]
	return q, ok
}

// validateQuotas checks the quotas section, naming each problem's field,
// and fills each quota's window and zone.
func (p *Policy) validateQuotas() []error {
	qs := p.Quotas
	if qs == nil {
		return nil
	}
	var errs []error
	if qs.TimeZone == "" {
		qs.TimeZone = DefaultTimeZone
	}
	if _, err := loadZone(qs.TimeZone); err != nil {
		errs = append(errs, fmt.Errorf("quotas.time_zone %q: %w", qs.TimeZone, err))
	}
	for _, tier := range slices.Sorted(maps.Keys(qs.Tiers)) {
		if _, ok := p.Tiers[tier]; !ok {
			errs = append(errs, fmt.Errorf("quotas.tiers.%s: not a tier (the tiers section names them)", quoteIfOdd(tier)))
		}
		errs = append(errs, p.validateQuotaMap("quotas.tiers."+quoteIfOdd(tier), qs.Tiers[tier])...)
	}
	errs = append(errs, p.validateQuotaMap("quotas.organisations", qs.Organisations)...)
	return errs
}

func (p *Policy) validateQuotaMap(where string, m map[string]Quota) []error {
	var errs []error
	for _, prov := range slices.Sorted(maps.Keys(m)) {
		field := where + "." + quoteIfOdd(prov)
		if _, listed := p.Providers[prov]; prov != Wildcard && !listed {
			errs = append(errs, fmt.Errorf("%s: provider %q is not listed under providers, so this quota would never apply", field, prov))
		}
		q, qerrs := p.buildQuota(field, m[prov])
		errs = append(errs, qerrs...)
		m[prov] = q
	}
	return errs
}

// buildQuota validates q, named field, and fills its window and zone.
func (p *Policy) buildQuota(field string, q Quota) (Quota, []error) {
	var errs []error
	if q.Allowance < 1 || q.Allowance > MaxAllowance {
		errs = append(errs, fmt.Errorf("%s.allowance %d: must be 1 to %d tokens", field, q.Allowance, int64(MaxAllowance)))
	}
	zone := q.TimeZone
	if zone == "" {
		zone = p.Quotas.TimeZone
	}
	switch q.Period {
	case WindowDay, WindowMonth:
		loc, err := loadZone(zone)
		if err != nil {
			if q.TimeZone != "" { // the section's zone was reported already
				errs = append(errs, fmt.Errorf("%s.time_zone %q: %w", field, q.TimeZone, err))
			}
			loc = time.UTC
		}
		q.loc = loc
	case "":
		errs = append(errs, fmt.Errorf("%s.window: required: day, month or a duration of at least %s", field, MinQuotaWindow))
	default:
		d, err := time.ParseDuration(q.Period)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.window %q: must be day, month or a duration such as 6h", field, q.Period))
		case d < MinQuotaWindow:
			errs = append(errs, fmt.Errorf("%s.window %s: a rolling window must be at least %s", field, d, MinQuotaWindow))
		default:
			q.every = d
		}
		if q.TimeZone != "" {
			errs = append(errs, fmt.Errorf("%s.time_zone %q: only calendar windows (day, month) have a time zone", field, q.TimeZone))
		}
	}
	return q, errs
}

// loadZone loads an IANA zone; "Local" is refused (the machine's zone is
// not part of a policy).
func loadZone(name string) (*time.Location, error) {
	if name == "Local" {
		return nil, fmt.Errorf("name an IANA zone such as Europe/Berlin, not the machine's")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone (an IANA name such as UTC or Europe/Berlin)")
	}
	return loc, nil
}
