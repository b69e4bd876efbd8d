package loadgen

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// Fields 3..: state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime …
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 250 70 9 9 20 0 12 0"
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr string
	}{
		{"plain", "42 (leaky)" + tail, 3200 * time.Millisecond, ""},
		{"name with spaces and parens", "42 (a b) (c))" + tail, 3200 * time.Millisecond, ""},
		{"no name", "42 leaky" + tail, 0, "no command name"},
		{"truncated", "42 (leaky) S 1 2 3", 0, "4 fields after the command name, want at least 13"},
		{"not a number", "42 (leaky)" + strings.Replace(tail, " 250 ", " x ", 1), 0, `bad cpu time "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseStat(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseStat(%q) = %v, %v, want %v, nil", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestProcessCPUOwnProcess burns CPU until /proc shows it: the reading must
// grow by at least one tick. The bound on the loop is a hang guard, not a
// speed assertion.
func TestProcessCPUOwnProcess(t *testing.T) {
	m := CPUMeter{PID: os.Getpid()}
	m.Start()
	stop := time.Now().Add(10 * time.Second)
	var sink uint64
	for time.Now().Before(stop) {
		for i := range 1_000_000 {
			sink += uint64(i) * 2654435761
		}
		d, err := m.Stop()
		if err != nil {
			t.Fatalf("CPUMeter.Stop() error = %v", err)
		}
		if d >= clockTick {
			if d%clockTick != 0 {
				t.Errorf("CPU %v is not a whole number of 10 ms ticks", d)
			}
			return
		}
	}
	t.Fatalf("own CPU time did not grow in 10 s of busy work (sink %d)", sink)
}

func TestProcessCPUErrors(t *testing.T) {
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1) error = nil, want one")
	}
	var m CPUMeter // PID 0: measures nothing
	m.Start()
	if d, err := m.Stop(); d != 0 || err != nil {
		t.Errorf("zero CPUMeter.Stop() = %v, %v, want 0, nil", d, err)
	}
}
