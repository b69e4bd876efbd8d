package rules

import (
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

func TestParseUnit(t *testing.T) {
	tests := []struct {
		in     string
		want   Unit
		wantOK bool
	}{
		{"second", Second, true},
		{"MINUTE", Minute, true},
		{"Hour", Hour, true},
		{"day", Day, true},
		{"week", Week, true},
		{"month", Month, true},
		{"year", Year, true},
		{"unknown", Unknown, false},
		{"", Unknown, false},
		{"seconds", Unknown, false},
		{"fortnight", Unknown, false},
	}
	for _, tt := range tests {
		got, ok := ParseUnit(tt.in)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("ParseUnit(%q) = %v, %v, want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

// TestUnitMatchesEnvoyEnums pins the numeric values to the Envoy protos, so
// that the service converts with a plain conversion.
func TestUnitMatchesEnvoyEnums(t *testing.T) {
	for name, v := range rlsv3.RateLimitResponse_RateLimit_Unit_value {
		if got := Unit(v).String(); got != name {
			t.Errorf("Unit(%d).String() = %q, want %q", v, got, name)
		}
	}
	for name, v := range typev3.RateLimitUnit_value {
		if got := Unit(v).String(); got != name {
			t.Errorf("Unit(%d).String() = %q, want %q (envoy.type.v3)", v, got, name)
		}
	}
	if got := Unit(99).String(); got != "Unit(99)" {
		t.Errorf("Unit(99).String() = %q, want %q", got, "Unit(99)")
	}
}

func TestUnitSeconds(t *testing.T) {
	const day = 24 * 60 * 60
	tests := []struct {
		u    Unit
		want int64
	}{
		{Second, 1},
		{Minute, 60},
		{Hour, 3600},
		{Day, day},
		{Week, 7 * day},
		{Month, 30 * day},
		{Year, 365 * day},
		{Unknown, 0},
		{Unit(-1), 0},
		{Unit(8), 0},
	}
	for _, tt := range tests {
		if got := tt.u.Seconds(); got != tt.want {
			t.Errorf("%v.Seconds() = %d, want %d", tt.u, got, tt.want)
		}
	}
}

func TestUnitWindow(t *testing.T) {
	const day = 24 * 60 * 60
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name               string
		u                  Unit
		now                time.Time
		wantStart, wantEnd time.Time
	}{
		{"second drops the fraction", Second, utc("2026-11-26T10:30:45.9Z"), utc("2026-11-26T10:30:45Z"), utc("2026-11-26T10:30:46Z")},
		{"minute", Minute, utc("2026-11-26T10:30:45Z"), utc("2026-11-26T10:30:00Z"), utc("2026-11-26T10:31:00Z")},
		{"hour", Hour, utc("2026-11-26T10:30:45Z"), utc("2026-11-26T10:00:00Z"), utc("2026-11-26T11:00:00Z")},
		{"day is a UTC day", Day, utc("2026-11-26T23:59:59Z"), utc("2026-11-26T00:00:00Z"), utc("2026-11-27T00:00:00Z")},
		{"week counts from the epoch (a Thursday)", Week, time.Unix(14*day+100, 0), time.Unix(14*day, 0), time.Unix(21*day, 0)},
		{"month is 30 days from the epoch", Month, time.Unix(90*day+5, 0), time.Unix(90*day, 0), time.Unix(120*day, 0)},
		{"year is 365 days from the epoch", Year, time.Unix(365*day+1, 0), time.Unix(365*day, 0), time.Unix(730*day, 0)},
		{"on the boundary", Minute, time.Unix(120, 0), time.Unix(120, 0), time.Unix(180, 0)},
		{"before 1970", Minute, time.Unix(-1, 0), time.Unix(-60, 0), time.Unix(0, 0)},
		{"unknown unit", Unknown, time.Unix(5, 0), time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, end := tt.u.Window(tt.now)
			if !start.Equal(tt.wantStart) || !end.Equal(tt.wantEnd) {
				t.Errorf("%v.Window(%v) = %v, %v, want %v, %v", tt.u, tt.now, start, end, tt.wantStart, tt.wantEnd)
			}
		})
	}
	loc := time.FixedZone("UTC+3", 3*3600)
	start, _ := Minute.Window(time.Date(2026, 1, 1, 0, 0, 30, 0, loc))
	if start.Location() != loc {
		t.Errorf("Minute.Window(t in %v) start location = %v, want %v", loc, start.Location(), loc)
	}
}
