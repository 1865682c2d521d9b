package replication

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// waiter is a client waiting for a local write to reach n regions.
type waiter struct {
	dot     crdt.Dot
	through bool // every dot of dot.Replica up to dot.Counter
	n       int
	urged   bool
	done    chan struct{}
	err     error // set before done is closed when it cannot be met
}

// ErrTooFewRegions is WaitReplicas's error when fewer regions than asked
// for are connected (with the ones that already hold the write): the
// region is cut off, and waiting would not help.
var ErrTooFewRegions = errors.New("replication: too few regions connected to meet the write concern")

// WaitReplicas implements region.ReplicaWaiter: it returns once n
// regions, this one included, hold the local write with dot d durably —
// the peers that acknowledged a delta message carrying it or reported an
// applied context containing it (protocol.Holders) — or ctx's error, or
// at once ErrTooFewRegions when the connected regions could not meet it
// (protocol.Reachable). The
// write's delta is urged (protocol.Urge), so that its receivers
// acknowledge it at once rather than at their next tick.
func (r *Replicator) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	return r.wait(ctx, &waiter{dot: d, n: n})
}

// WaitReplicasThrough implements region.ReplicaWaiter: WaitReplicas of
// every dot of d.Replica up to d.Counter (protocol.HoldersThrough). Those
// deltas are not urged: their acknowledgements come with the peers'
// next messages.
func (r *Replicator) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return r.wait(ctx, &waiter{dot: d, through: true, urged: true, n: n})
}

func (r *Replicator) wait(ctx context.Context, w *waiter) error {
	if w.n <= 1 {
		return nil
	}
	w.done = make(chan struct{})
	r.mu.Lock()
	select {
	case <-r.stop:
		// Closed: no loop answers waiters any more (Close answered
		// those it found, under the same lock).
		r.mu.Unlock()
		return ErrTooFewRegions
	default:
	}
	r.waiters = append(r.waiters, w)
	r.mu.Unlock()
	r.signal()
	select {
	case <-w.done:
		return w.err
	case <-ctx.Done():
		r.mu.Lock()
		r.waiters = slices.DeleteFunc(r.waiters, func(x *waiter) bool { return x == w })
		r.mu.Unlock()
		select {
		case <-w.done: // answered while giving up
			return w.err
		default:
		}
		return ctx.Err()
	}
}

// serveWaiters, run by the loop before each Process, answers the waiters
// whose writes enough regions hold and urges the deltas of new ones.
func (r *Replicator) serveWaiters(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.waiters) == 0 {
		return
	}
	r.waiters = slices.DeleteFunc(r.waiters, func(w *waiter) bool {
		holders := r.proto.Holders
		if w.through {
			holders = r.proto.HoldersThrough
		}
		if 1+len(holders(w.dot)) >= w.n {
			close(w.done)
			return true
		}
		if r.proto.Reachable(w.dot) < w.n {
			w.err = ErrTooFewRegions
			close(w.done)
			return true
		}
		if !w.urged {
			// Not found: its delta is not in the buffer yet (published
			// since this iteration took the local deltas), or left it
			// (for anti-entropy to carry): tried again next time.
			w.urged = r.proto.Urge(w.dot, now)
		}
		return false
	})
}

var _ region.ReplicaWaiter = (*Replicator)(nil)
