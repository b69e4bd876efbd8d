package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clockTick is the unit of /proc/PID/stat's CPU times: USER_HZ, which the
// Linux ABI fixes at 100 (sysconf(_SC_CLK_TCK)).
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the CPU time process pid has used so far, user plus
// system, summed over all its threads (not its children), read from
// /proc/<pid>/stat. Its resolution is one clock tick (10 ms), so measure
// runs of seconds. /proc/<pid>/schedstat is finer but counts only the main
// thread, which for a Go server is a small part of the work.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("process cpu: %w", err)
	}
	d, err := parseStat(b)
	if err != nil {
		return 0, fmt.Errorf("process cpu of pid %d: %w", pid, err)
	}
	return d, nil
}

// parseStat returns utime+stime of a /proc/PID/stat line. The command name,
// field 2, is in parentheses and may hold spaces and parentheses itself, so
// fields are counted from the last ')'.
func parseStat(b []byte) (time.Duration, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, fmt.Errorf("stat: no command name")
	}
	// After ")": field 3 (state) onwards; utime and stime are fields 14 and 15.
	f := bytes.Fields(b[end+1:])
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", len(f), stime+1)
	}
	var ticks int64
	for _, s := range [][]byte{f[utime], f[stime]} {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("stat: bad cpu time %q", s)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// CPUMeter measures the CPU a process uses between Start and Stop. A zero
// PID meter measures nothing and reports 0.
type CPUMeter struct {
	PID   int
	start time.Duration
	err   error
}

// Start reads the process's CPU time.
func (m *CPUMeter) Start() {
	if m.PID == 0 {
		return
	}
	m.start, m.err = ProcessCPU(m.PID)
}

// Stop returns the CPU time used since Start.
func (m *CPUMeter) Stop() (time.Duration, error) {
	if m.PID == 0 {
		return 0, nil
	}
	if m.err != nil {
		return 0, m.err
	}
	end, err := ProcessCPU(m.PID)
	if err != nil {
		return 0, err
	}
	return end - m.start, nil
}
