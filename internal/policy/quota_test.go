package policy

import (
	"strings"
	"testing"
	"time"
)

const quotaBase = "default_tier: free\ntiers: {free: {}, pro: {}}\nproviders: {openai: {capacity: 1, leak_rate: 1}, gemini: {capacity: 1, leak_rate: 1}}\n"

func parseQuotas(t *testing.T, section string) *Policy {
	t.Helper()
	p, err := Parse("q.yaml", []byte(quotaBase+section))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestQuotaLookup(t *testing.T) {
	p := parseQuotas(t, `quotas:
  tiers:
    free: {"*": {allowance: 100, window: day}, openai: {allowance: 7, window: 90m}}
  organisations: {gemini: {allowance: 9, window: month, time_zone: Asia/Tokyo}}
`)
	if p.Quotas.TimeZone != "UTC" {
		t.Errorf("time_zone = %q, want the default UTC", p.Quotas.TimeZone)
	}
	tests := []struct {
		name      string
		q         found
		ok        bool
		allowance int64
	}{
		{"free/openai", got(p.UserQuota("free", "openai")), true, 7},
		{"free/gemini", got(p.UserQuota("free", "gemini")), true, 100},
		{"pro/openai", got(p.UserQuota("pro", "openai")), false, 0},
		{"unknown tier", got(p.UserQuota("nope", "openai")), false, 0},
		{"org/gemini", got(p.OrgQuota("gemini")), true, 9},
		{"org/openai", got(p.OrgQuota("openai")), false, 0},
	}
	for _, tt := range tests {
		if tt.q.ok != tt.ok || tt.q.q.Allowance != tt.allowance {
			t.Errorf("%s = %+v %v, want allowance %d %v", tt.name, tt.q.q, tt.q.ok, tt.allowance, tt.ok)
		}
	}
	if q, _ := p.UserQuota("free", "openai"); !q.Rolling() {
		t.Error("90m window is not rolling")
	}
	none := parseQuotas(t, "")
	if _, ok := none.UserQuota("free", "openai"); ok {
		t.Error("a policy without quotas has a user quota")
	}
	if _, ok := none.OrgQuota("openai"); ok {
		t.Error("a policy without quotas has an org quota")
	}
}

type found struct {
	q  Quota
	ok bool
}

func got(q Quota, ok bool) found { return found{q, ok} }

func TestQuotaErrors(t *testing.T) {
	tests := []struct {
		section string
		want    []string
	}{
		{"quotas: {tiers: {gold: {\"*\": {allowance: 1, window: day}}}}", []string{"quotas.tiers.gold: not a tier"}},
		{"quotas: {tiers: {free: {\"*\": {allowance: 0, window: day}}}}", []string{`quotas.tiers.free.*.allowance 0`}},
		{"quotas: {organisations: {\"*\": {allowance: 1000000000000001, window: day}}}", []string{"quotas.organisations.*.allowance 1000000000000001"}},
		{"quotas: {organisations: {\"*\": {allowance: 1, window: week}}}", []string{`quotas.organisations.*.window "week"`}},
		{"quotas: {organisations: {\"*\": {allowance: 1, window: 59s}}}", []string{"quotas.organisations.*.window 59s: a rolling window must be at least 1m0s"}},
		{"quotas: {organisations: {\"*\": {allowance: 1}}}", []string{"quotas.organisations.*.window: required"}},
		{"quotas: {organisations: {\"*\": {allowance: 1, window: 1h, time_zone: UTC}}}", []string{"only calendar windows"}},
		{"quotas: {organisations: {mistral: {allowance: 1, window: day}}}", []string{"quotas.organisations.mistral: provider \"mistral\" is not listed"}},
		{"quotas: {time_zone: Mars/Olympus, organisations: {\"*\": {allowance: 1, window: day}}}", []string{`quotas.time_zone "Mars/Olympus": unknown time zone`}},
		{"quotas: {time_zone: Local}", []string{`quotas.time_zone "Local"`}},
		{"quotas: {organisations: {\"*\": {allowance: 1, window: day, time_zone: Nowhere}}}", []string{`quotas.organisations.*.time_zone "Nowhere"`}},
		// Every problem is reported, each naming its field.
		{"quotas: {tiers: {gold: {\"*\": {allowance: -1, window: 1s}}}, organisations: {\"*\": {allowance: 0, window: x}}}", []string{
			"quotas.tiers.gold: not a tier", "quotas.tiers.gold.*.allowance -1", "quotas.tiers.gold.*.window 1s",
			"quotas.organisations.*.allowance 0", `quotas.organisations.*.window "x"`}},
	}
	for _, tt := range tests {
		_, err := Parse("q.yaml", []byte(quotaBase+tt.section))
		if err == nil {
			t.Errorf("%s: Parse succeeded, want errors %q", tt.section, tt.want)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tt.section, err, w)
			}
		}
	}
}

func quota(t *testing.T, window, zone string) Quota {
	t.Helper()
	p := parseQuotas(t, "quotas: {time_zone: "+zone+", organisations: {\"*\": {allowance: 1, window: "+window+"}}}")
	q, _ := p.OrgQuota("openai")
	return q
}

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestQuotaWindow(t *testing.T) {
	tests := []struct {
		name, window, zone, now, start, end string
	}{
		{"utc day", "day", "UTC", "2026-05-10T13:00:00Z", "2026-05-10T00:00:00Z", "2026-05-11T00:00:00Z"},
		{"utc day at midnight", "day", "UTC", "2026-05-10T00:00:00Z", "2026-05-10T00:00:00Z", "2026-05-11T00:00:00Z"},
		{"utc day just before midnight", "day", "UTC", "2026-05-10T23:59:59.999999999Z", "2026-05-10T00:00:00Z", "2026-05-11T00:00:00Z"},
		{"berlin day (summer, UTC+2)", "day", "Europe/Berlin", "2026-07-01T21:59:59Z", "2026-06-30T22:00:00Z", "2026-07-01T22:00:00Z"},
		{"berlin day turns at local midnight", "day", "Europe/Berlin", "2026-07-01T22:00:00Z", "2026-07-01T22:00:00Z", "2026-07-02T22:00:00Z"},
		{"tokyo day, other side of UTC", "day", "Asia/Tokyo", "2026-01-01T14:59:00Z", "2025-12-31T15:00:00Z", "2026-01-01T15:00:00Z"},
		// Spring forward: 2026-03-29 has 23 hours in Berlin.
		{"berlin spring forward", "day", "Europe/Berlin", "2026-03-29T12:00:00Z", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"},
		// Fall back: 2026-10-25 has 25 hours in Berlin.
		{"berlin fall back", "day", "Europe/Berlin", "2026-10-25T12:00:00Z", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"},
		{"berlin fall back, repeated hour", "day", "Europe/Berlin", "2026-10-25T00:30:00Z", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"},
		{"new york spring forward", "day", "America/New_York", "2026-03-08T12:00:00Z", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"},
		{"new york fall back", "day", "America/New_York", "2026-11-01T12:00:00Z", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"},
		// Santiago springs forward at 24:00: 2026-09-06 has no midnight
		// and starts at 01:00 local (04:00Z, UTC-3).
		{"santiago, no midnight", "day", "America/Santiago", "2026-09-06T12:00:00Z", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"},
		{"santiago, the day before", "day", "America/Santiago", "2026-09-06T03:59:59Z", "2026-09-05T04:00:00Z", "2026-09-06T04:00:00Z"},
		{"utc month", "month", "UTC", "2026-02-14T00:00:00Z", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"},
		{"leap february", "month", "UTC", "2028-02-29T23:00:00Z", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"leap day", "day", "UTC", "2028-02-29T23:00:00Z", "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"},
		{"december to january", "month", "UTC", "2026-12-31T23:59:59Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"berlin month across spring forward", "month", "Europe/Berlin", "2026-03-31T21:59:59Z", "2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z"},
		{"berlin month turns at local midnight", "month", "Europe/Berlin", "2026-03-31T22:00:00Z", "2026-03-31T22:00:00Z", "2026-04-30T22:00:00Z"},
		{"new york month of 31 days", "month", "America/New_York", "2026-01-31T23:00:00Z", "2026-01-01T05:00:00Z", "2026-02-01T05:00:00Z"},
		{"rolling 6h from the epoch", "6h", "UTC", "2026-05-10T13:00:00Z", "2026-05-10T12:00:00Z", "2026-05-10T18:00:00Z"},
		{"rolling 7m, zone ignored", "7m", "Europe/Berlin", "1970-01-01T00:15:00Z", "1970-01-01T00:14:00Z", "1970-01-01T00:21:00Z"},
		{"rolling before the epoch", "1h", "UTC", "1969-12-31T23:30:00Z", "1969-12-31T23:00:00Z", "1970-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := quota(t, tt.window, tt.zone)
			start, end := q.Window(at(t, tt.now))
			if !start.Equal(at(t, tt.start)) || !end.Equal(at(t, tt.end)) {
				t.Errorf("Window(%s) = [%s, %s), want [%s, %s)", tt.now, start, end, tt.start, tt.end)
			}
			if start.Location() != time.UTC || end.Location() != time.UTC {
				t.Errorf("Window(%s) not in UTC: %v %v", tt.now, start.Location(), end.Location())
			}
		})
	}
}

// Consecutive windows tile time: each ends where the next starts, across a
// whole year in two zones with DST.
func TestQuotaWindowsTile(t *testing.T) {
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "America/Santiago"} {
		for _, window := range []string{"day", "month"} {
			q := quota(t, window, zone)
			now := at(t, "2026-01-01T12:00:00Z")
			var days int
			for now.Year() < 2027 {
				start, end := q.Window(now)
				if now.Before(start) || !now.Before(end) {
					t.Fatalf("%s %s: Window(%s) = [%s, %s) does not hold it", zone, window, now, start, end)
				}
				if h := end.Sub(start).Hours(); window == "day" && h != 23 && h != 24 && h != 25 {
					t.Errorf("%s: day [%s, %s) is %v hours", zone, start, end, h)
				}
				if next, _ := q.Window(end); !next.Equal(end) {
					t.Fatalf("%s %s: the window after [%s, %s) starts at %s", zone, window, start, end, next)
				}
				now = end
				days++
			}
			if want := map[string]int{"day": 365, "month": 12}[window]; days != want+1 && days != want {
				t.Errorf("%s %s: %d windows in 2026", zone, window, days)
			}
		}
	}
}
