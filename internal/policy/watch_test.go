package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is the service side of a Watcher: it keeps what apply installed
// and may refuse.
type recorder struct {
	mu      sync.Mutex
	applied []*Snapshot
	refuse  error
}

func (r *recorder) apply(s *Snapshot) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		return r.refuse
	}
	r.applied = append(r.applied, s)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.applied)
}

func (r *recorder) last() *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied[len(r.applied)-1]
}

// watched writes the example policy into a directory and loads it.
func watched(t *testing.T) (dir, file string, snap *Snapshot) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "policy.yaml")
	writeFile(t, file, string(Example()))
	snap, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, file, snap
}

func TestWatcherPoll(t *testing.T) {
	dir, file, snap := watched(t)
	r := &recorder{}
	w := NewWatcher(dir, snap, r.apply)

	if got, err := w.Poll(); got != nil || err != nil {
		t.Fatalf("Poll(unchanged) = %v, %v; want nothing", got, err)
	}
	// A change of the same size is seen: the digest, not the size or time.
	changed := strings.Replace(string(Example()), "capacity: 4000,", "capacity: 4001,", 1)
	writeFile(t, file, changed)
	got, err := w.Poll()
	if err != nil || got == nil || must(got.Policy().UserBucket("free", "openai")).Capacity != 4001 {
		t.Fatalf("Poll(changed) = %+v, %v; want the new capacity applied", got, err)
	}
	if r.count() != 1 || r.last() != got {
		t.Errorf("apply saw %d snapshots, want the one Poll returned", r.count())
	}

	// A bad version is rejected once; the service keeps the last good.
	writeFile(t, file, strings.Replace(changed, "leak_rate: 40}", "leak_rate: .nan}", 1))
	if got, err := w.Poll(); got != nil || err == nil || !strings.Contains(err.Error(), "tiers.free.buckets.openai.leak_rate NaN") {
		t.Fatalf("Poll(bad) = %v, %v; want the NaN refused", got, err)
	}
	if got, err := w.Poll(); got != nil || err != nil {
		t.Errorf("Poll(the same bad version) = %v, %v; want it not reported again", got, err)
	}
	if r.count() != 1 {
		t.Errorf("apply called %d times, want 1 (the bad version never reaches it)", r.count())
	}

	// The service may refuse a valid version; that too is kept as bad.
	r.refuse = errors.New("no thanks")
	writeFile(t, file, string(Example()))
	if _, err := w.Poll(); err == nil || err.Error() != "no thanks" {
		t.Errorf("Poll(refused by apply) = %v, want apply's error", err)
	}
	r.refuse = nil
	if got, err := w.Poll(); got != nil || err != nil {
		t.Errorf("Poll(the refused version again) = %v, %v; want nothing", got, err)
	}

	// A read error is reported once per streak.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Poll(); err == nil || !strings.Contains(err.Error(), "no *.yaml") {
		t.Errorf("Poll(empty directory) = %v, want a read error", err)
	}
	if got, err := w.Poll(); got != nil || err != nil {
		t.Errorf("Poll(still empty) = %v, %v; want it not reported again", got, err)
	}
	writeFile(t, file, changed) // back to the serving version: nothing to apply
	if got, err := w.Poll(); got != nil || err != nil {
		t.Errorf("Poll(the serving version back) = %v, %v; want nothing", got, err)
	}
	if w.Polls() != 9 {
		t.Errorf("Polls() = %d, want 9", w.Polls())
	}
}

// A bad version is reported again when it comes back after the file
// returned to the serving version: each time is a new mistake an operator
// must see in the logs and the error counter.
func TestWatcherReportsABadVersionThatReturns(t *testing.T) {
	dir, file, snap := watched(t)
	r := &recorder{}
	w := NewWatcher(dir, snap, r.apply)
	bad := strings.Replace(string(Example()), "leak_rate: 40}", "leak_rate: .nan}", 1)
	for i := range 2 {
		writeFile(t, file, bad)
		if got, err := w.Poll(); got != nil || err == nil || !strings.Contains(err.Error(), "leak_rate NaN") {
			t.Fatalf("round %d: Poll(bad) = %v, %v; want the NaN refused", i+1, got, err)
		}
		writeFile(t, file, string(Example()))
		if got, err := w.Poll(); got != nil || err != nil {
			t.Fatalf("round %d: Poll(the serving version back) = %v, %v; want nothing", i+1, got, err)
		}
	}
	if r.count() != 0 {
		t.Errorf("apply called %d times, want 0", r.count())
	}
}

// A Watcher without a serving snapshot applies the first valid read.
func TestWatcherWithoutCurrent(t *testing.T) {
	dir, _, _ := watched(t)
	r := &recorder{}
	w := NewWatcher(dir, nil, r.apply)
	if got, err := w.Poll(); got == nil || err != nil {
		t.Errorf("Poll = %v, %v; want the snapshot applied", got, err)
	}
}

type report struct {
	snap *Snapshot
	err  error
}

// Run polls on its own: a change is applied and reported, a bad version is
// reported, and an unchanged configuration applies nothing however many
// times it is polled.
func TestWatcherRun(t *testing.T) {
	dir, file, snap := watched(t)
	r := &recorder{}
	w := NewWatcher(dir, snap, r.apply)
	reports := make(chan report, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, time.Millisecond, func(s *Snapshot, err error) { reports <- report{s, err} })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	}()

	waitPolls(t, w, w.Polls()+5)
	if r.count() != 0 || len(reports) != 0 {
		t.Fatalf("after 5 polls of an unchanged directory: %d applied, %d reports; want none", r.count(), len(reports))
	}

	// Replaced by rename, as a ConfigMap update does, so that no poll sees
	// a half-written file.
	replaceFile(t, file, strings.Replace(string(Example()), "capacity: 4000,", "capacity: 4001,", 1))
	if rep := next(t, reports); rep.err != nil || rep.snap == nil || r.last() != rep.snap {
		t.Fatalf("report = %+v, want the change applied", rep)
	}
	replaceFile(t, file, "domain: leaky-tokens\ncolour: blue\n")
	if rep := next(t, reports); rep.err == nil || !strings.Contains(rep.err.Error(), "colour") {
		t.Fatalf("report = %+v, want the bad version refused", rep)
	}
	waitPolls(t, w, w.Polls()+5)
	if len(reports) != 0 || r.count() != 1 {
		t.Errorf("after 5 more polls: %d reports, %d applied; want nothing new", len(reports), r.count())
	}
}

func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp")
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func waitPolls(t *testing.T, w *Watcher, n uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.Polls() < n {
		if time.Now().After(deadline) {
			t.Fatalf("Polls() = %d after 30s, want %d", w.Polls(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func next(t *testing.T, reports <-chan report) report {
	t.Helper()
	select {
	case r := <-reports:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("no report within 30s")
		return report{}
	}
}
