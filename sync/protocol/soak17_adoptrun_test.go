package protocol_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestFinalOfRoundAnsweredByEarlierRunIsNotAdopted restarts a responder
// from an older snapshot in the middle of a round: its previous run
// answered the round's first digest (with an applied context that had the
// initiator's write, so nothing was pushed), and a copy of that digest
// and the round's closing objects reach the new run. The new run answered
// a digest of the round, but the initiator compared against the previous
// run's answer: adopting the initiator's applied context would claim the
// write the restored store lacks.
func TestFinalOfRoundAnsweredByEarlierRunIsNotAdopted(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	eu := s.regions[1]

	// A snapshot of eu-west before ap-south's write.
	backup := filepath.Join(t.TempDir(), "eu-west.backup")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Backup(eu.path, f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	s.add(0, "cart-1")
	s.run(200 * time.Millisecond) // eu-west has the write
	self := s.regions[0].node.Self()
	if applied := eu.node.Applied(); !applied.Contains(crdt.Dot{Replica: self, Counter: 1}) {
		t.Fatal("eu-west did not apply ap-south's write")
	}

	// The first step-1 digest of ap-south's round is held back (a copy
	// in flight); the step goes again and the previous run answers it.
	// The objects that close the round are held back too.
	var digest, final *protocol.Message
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if from != 0 || to != 1 {
			return true
		}
		switch {
		case m.Kind == protocol.KindDigest && m.Step == 1 && digest == nil:
			digest = m
			return false
		case m.Kind == protocol.KindObjects && m.Final && digest != nil && m.Round == digest.Round:
			final = m
			return false
		}
		return true
	}
	for end := s.clock.t.Add(30 * time.Second); final == nil && s.clock.t.Before(end); {
		s.step(time.Millisecond)
	}
	if final == nil {
		t.Fatal("ap-south closed no round with eu-west")
	}

	// eu-west is restored from its snapshot and starts again at once.
	s.down(1, false)
	if err := store.Restore(eu.path, backup); err != nil {
		t.Fatal(err)
	}
	eu.held, eu.holds = crdt.Context{}, nil // its state shrank
	s.restart(1)
	s.deliver = func(from, to int, m *protocol.Message) bool { return false }
	s.stepMsg(0, 1, digest) // answered by this run
	s.stepMsg(0, 1, final)  // s.check: every claimed dot is held

	if applied := eu.node.Applied(); applied.Contains(crdt.Dot{Replica: self, Counter: 1}) {
		t.Fatal("the restored eu-west claims ap-south's write, which its store lacks")
	}
}
