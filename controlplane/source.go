package controlplane

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leakytokens/leaky/internal/policy"
)

// policySource is where the policy comes from and where the admin API
// writes it: the file (or directory) of -policy, the embedded example, or
// a Consul KV key. Every change, whoever makes it, reaches the pipeline
// through watch: one path for edits, KV writes and admin PUTs.
type policySource interface {
	// watch hands every changed valid configuration to apply and every
	// failure (unreadable, invalid) to fail, until ctx ends; fail(nil)
	// says the source is well again with the configuration unchanged.
	watch(ctx context.Context, apply func(*policy.Snapshot), fail func(error))
	// read returns the source's configuration as it is now, with the
	// revision a write must name.
	read(ctx context.Context) (current, error)
	// write replaces the policy file's text (current.policyName) if the
	// source is still at rev: errConflict when another writer changed it
	// since, errReadOnly when it cannot be written at all.
	write(ctx context.Context, c current, data []byte) error
	// refresh makes watch look at the source now, after a write.
	refresh()
	// name is how the source is named in configurations built from it,
	// so a configuration built for a write has the digest the watch will
	// compute.
	name() string
}

// current is a source's configuration at one revision.
type current struct {
	files      map[string][]byte // every file by name, the policy included
	policyName string            // the policy's file name among files
	rev        uint64            // the revision (Consul's ModifyIndex); 0 for a file
}

var (
	// errReadOnly: the source cannot be written (the embedded example).
	errReadOnly = errors.New("read-only")
	// errConflict: the source changed between read and write.
	errConflict = errors.New("changed by another writer")
)

// fileSource is -policy: a file or directory polled for changes, or the
// embedded example (path ""), which never changes and cannot be written.
type fileSource struct {
	path    string
	poll    time.Duration
	watcher *policy.Watcher
	kick    chan struct{}
	serving [sha256.Size]byte // the digest of the configuration last applied
}

// newFileSource returns the source of path whose configuration in effect
// is initial (loaded by the caller).
func newFileSource(path string, poll time.Duration, initial *policy.Snapshot) *fileSource {
	s := &fileSource{path: path, poll: poll, kick: make(chan struct{}, 1)}
	if path != "" {
		s.serving = initial.Digest()
		s.watcher = policy.NewWatcher(path, initial, func(*policy.Snapshot) error { return nil })
	}
	return s
}

func (s *fileSource) name() string { return s.path }

// watch polls the path every s.poll, and at once after refresh. After a
// failure it also checks, at each poll that finds nothing new, whether the
// path holds the serving configuration again (a file removed and put
// back), to say the source is well.
func (s *fileSource) watch(ctx context.Context, apply func(*policy.Snapshot), fail func(error)) {
	if s.watcher == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(s.poll)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		snap, err := s.watcher.Poll()
		switch {
		case err != nil:
			fail(err)
			failing = true
		case snap != nil:
			s.serving, failing = snap.Digest(), false
			apply(snap)
		case failing:
			if now, err := policy.Load(s.path); err == nil && now.Digest() == s.serving {
				fail(nil)
				failing = false
			}
		}
	}
}

func (s *fileSource) refresh() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// read loads the path as it is on disk now; an invalid configuration
// there is an error (the edit would be judged against it).
func (s *fileSource) read(context.Context) (current, error) {
	snap, err := policy.Load(s.path)
	if err != nil {
		return current{}, err
	}
	name, _ := snap.PolicyFile()
	if name == "" {
		return current{}, fmt.Errorf("%s: no %s policy file", s.path, policy.Domain)
	}
	return current{files: snap.Files(), policyName: name}, nil
}

// write replaces the policy file atomically: a temporary file in the same
// directory (hidden, so a directory load skips it), synced, then renamed
// over the target of the policy file (through a symbolic link, which is
// kept).
func (s *fileSource) write(_ context.Context, c current, data []byte) error {
	if s.path == "" {
		return errReadOnly
	}
	target, err := filepath.EvalSymlinks(c.policyName)
	if err != nil {
		return fmt.Errorf("write %s: %w", c.policyName, err)
	}
	info, err := os.Stat(target)
	if err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := tmp.Chmod(info.Mode().Perm()); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	return nil
}
