package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Watcher polls a configuration path and hands every changed, valid
// snapshot to the service's apply function; whatever fails (a read, the
// validation, or apply itself) leaves the last good snapshot serving.
// Changes are recognised by the snapshot digest (names and contents), never
// by modification times, so an edit of the same size within the same second
// is seen too.
type Watcher struct {
	path  string
	apply func(*Snapshot) error
	polls atomic.Uint64

	mu          sync.Mutex // serialises Poll
	current     [sha256.Size]byte
	lastBad     [sha256.Size]byte // rejected contents, not reported again while they stay
	lastReadErr string            // the read error last reported, not reported again
}

// NewWatcher returns a Watcher of path whose serving snapshot is current
// (nil when none was loaded from path: the first valid read is then
// applied). apply installs a snapshot in the service; it may refuse one
// (for instance a reload that drops a file the service needs) by returning
// an error, and is called from one goroutine at a time.
func NewWatcher(path string, current *Snapshot, apply func(*Snapshot) error) *Watcher {
	w := &Watcher{path: path, apply: apply}
	if current != nil {
		w.current = current.Digest()
	}
	return w
}

// Poll reads the path once. It returns the snapshot it applied, or the
// error that rejected a changed configuration, or neither when nothing new
// was found: the same digest as the serving configuration, the rejected
// configuration still in place, or the same read error as last time. A
// rejected configuration that comes back after the serving one was read
// again is reported again.
func (w *Watcher) Poll() (*Snapshot, error) {
	defer w.polls.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	contents, err := read(w.path)
	if err != nil {
		if err.Error() == w.lastReadErr {
			return nil, nil
		}
		w.lastReadErr = err.Error()
		return nil, fmt.Errorf("read %s: %w", w.path, err)
	}
	w.lastReadErr = ""
	d := digest(contents)
	if d == w.current {
		// Back to the serving configuration: a bad version that returns
		// later is a new mistake, reported again.
		w.lastBad = [sha256.Size]byte{}
		return nil, nil
	}
	if d == w.lastBad {
		return nil, nil
	}
	snap, err := parseFiles(w.path, contents)
	if err == nil {
		err = w.apply(snap)
	}
	if err != nil {
		w.lastBad = d
		return nil, err
	}
	w.current, w.lastBad = d, [sha256.Size]byte{}
	return snap, nil
}

// Polls is how many times Poll has returned: a test waits for it to grow
// to know the watcher ran, instead of sleeping.
func (w *Watcher) Polls() uint64 { return w.polls.Load() }

// Run polls every interval until ctx ends, calling report with each
// applied snapshot (err nil) or rejection (snapshot nil), for the
// service's logs and metrics. It returns nil when ctx ends.
func (w *Watcher) Run(ctx context.Context, interval time.Duration, report func(*Snapshot, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if snap, err := w.Poll(); snap != nil || err != nil {
			report(snap, err)
		}
	}
}
