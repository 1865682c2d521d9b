// Package regiontest holds helpers the tests of every Lattice package
// share. It imports nothing of the module, so any test may use it.
package regiontest

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails t if it does not within d:
// tests wait on conditions with deadlines, never on sleeps. It polls
// every millisecond at first, backing off to every 20 ms.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		timer := time.NewTimer(wait)
		<-timer.C
		wait = min(2*wait, 20*time.Millisecond)
	}
}
