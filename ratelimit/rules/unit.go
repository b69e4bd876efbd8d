package rules

import (
	"strconv"
	"strings"
	"time"
)

// Unit is the time unit of a fixed-window limit. Its numeric values are those
// of envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit, so a Unit
// converts to and from that enum (and from envoy.type.v3.RateLimitUnit, which
// shares the values 0–6) with a plain conversion. The zero value is Unknown,
// which is not a valid unit.
type Unit int32

// The units envoyproxy/ratelimit accepts in rate_limit.unit (case-insensitive).
const (
	Unknown Unit = 0
	Second  Unit = 1
	Minute  Unit = 2
	Hour    Unit = 3
	Day     Unit = 4
	Month   Unit = 5
	Year    Unit = 6
	Week    Unit = 7
)

var unitNames = [...]string{
	Unknown: "UNKNOWN",
	Second:  "SECOND",
	Minute:  "MINUTE",
	Hour:    "HOUR",
	Day:     "DAY",
	Month:   "MONTH",
	Year:    "YEAR",
	Week:    "WEEK",
}

// unitSeconds holds each unit's window length. Like envoyproxy/ratelimit
// (utils.UnitToDivider), a week is 7 days, a month a fixed 30 days and a year a
// fixed 365 days; they are not calendar periods.
var unitSeconds = [...]int64{
	Second: 1,
	Minute: 60,
	Hour:   60 * 60,
	Day:    24 * 60 * 60,
	Month:  30 * 24 * 60 * 60,
	Year:   365 * 24 * 60 * 60,
	Week:   7 * 24 * 60 * 60,
}

// ParseUnit returns the unit named s, ignoring case ("second", "MINUTE",
// "Week", …). It reports false for "unknown" and for anything else that is not
// one of the seven units.
func ParseUnit(s string) (Unit, bool) {
	up := strings.ToUpper(s)
	for u := Second; u <= Week; u++ {
		if unitNames[u] == up {
			return u, true
		}
	}
	return Unknown, false
}

// Valid reports whether u is one of Second … Week.
func (u Unit) Valid() bool { return u >= Second && u <= Week }

// String returns the upper-case name used by the Envoy protos ("MINUTE"), or
// "Unit(n)" for a value outside the enum.
func (u Unit) String() string {
	if u >= 0 && int(u) < len(unitNames) {
		return unitNames[u]
	}
	return "Unit(" + strconv.Itoa(int(u)) + ")"
}

// Seconds returns the length of one window of u in seconds, or 0 when u is
// not Valid.
func (u Unit) Seconds() int64 {
	if !u.Valid() {
		return 0
	}
	return unitSeconds[u]
}

// Window returns the fixed window of u that contains now: it starts at the
// largest multiple of u.Seconds() since the Unix epoch that is ≤ now (whole
// seconds, as envoyproxy/ratelimit computes (now/divider)*divider) and ends
// u.Seconds() later, exclusive. Time until reset is end.Sub(now). For an
// invalid unit both results are the zero Time.
func (u Unit) Window(now time.Time) (start, end time.Time) {
	n := u.Seconds()
	if n == 0 {
		return time.Time{}, time.Time{}
	}
	sec := now.Unix()
	s := sec - mod(sec, n)
	return time.Unix(s, 0).In(now.Location()), time.Unix(s+n, 0).In(now.Location())
}

// mod is the floor modulus, so that instants before 1970 land in the window
// that contains them.
func mod(a, n int64) int64 {
	m := a % n
	if m < 0 {
		m += n
	}
	return m
}
