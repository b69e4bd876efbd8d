package authz

import (
	"runtime"
	"syscall"
)

// hashNice is the nice value of the threads running argon2: under CPU
// contention (other processes, the load generator, Envoy on the same
// cores) Linux gives Check's threads, at the process's own nice value,
// about nine tenths of a core a hash would otherwise share with them.
const hashNice = 10

// lowPriority runs f on a thread of its own at hashNice and returns its
// result. The thread is never unlocked, so it exits with the goroutine and
// its priority never reaches another goroutine. Where the priority cannot
// be set (a seccomp filter, say), f runs at the process's.
func lowPriority(f func() []byte) []byte {
	out := make(chan []byte, 1)
	go func() {
		runtime.LockOSThread()
		// On Linux, PRIO_PROCESS with a thread id sets that thread's nice
		// value only; it can only be raised (made nicer), never lowered back.
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), hashNice)
		out <- f()
	}()
	return <-out
}
