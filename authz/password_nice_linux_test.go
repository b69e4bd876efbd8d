package authz

import (
	"context"
	"runtime"
	"syscall"
	"testing"
)

// threadNice is the nice value of the calling goroutine's thread. The
// goroutine stays on it (LockOSThread) until it returns.
func threadNice() (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// The raw getpriority system call answers 20 - nice.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
	return 20 - prio, err
}

// A hash runs on a thread at a lower priority than the process's, so that
// Check's threads come first on contended cores; the goroutine that asked
// for it keeps its own.
func TestHashRunsAtLowPriority(t *testing.T) {
	own, err := threadNice()
	if err != nil {
		t.Fatal(err)
	}
	h := newPasswordHasher(64, 1, 1, 1)
	var during int
	kdf := h.kdf
	h.kdf = func(pw, salt []byte, time, mem uint32, p uint8, n uint32) []byte {
		var err error
		if during, err = threadNice(); err != nil {
			t.Error(err)
		}
		return kdf(pw, salt, time, mem, p, n)
	}
	if _, err := h.hash(context.Background(), "correct horse"); err != nil {
		t.Fatal(err)
	}
	if want := min(own+hashNice, 19); during != want {
		t.Errorf("argon2 ran at nice %d, want %d (the process's %d + %d)", during, want, own, hashNice)
	}
	if after, err := threadNice(); err != nil || after != own {
		t.Errorf("caller's nice after hashing = %d, %v, want %d", after, err, own)
	}
}
