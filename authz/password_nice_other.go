//go:build !linux

package authz

// lowPriority runs f: only Linux sets a thread's priority, elsewhere the
// hashing pool alone keeps a core for Check.
func lowPriority(f func() []byte) []byte { return f() }
