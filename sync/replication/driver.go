package replication

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
)

// Node is what a Driver makes the protocol's output durable in: a region
// node (*region.Node implements it). A test may wrap one to inject store
// failures.
type Node interface {
	// ApplyGroup joins g (whole states, or deltas) into the store and
	// dots into its applied context in one durable transaction;
	// reflects covers what g's states show beyond dots
	// (region.Node.ApplyGroup).
	ApplyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool) error
	// Applied returns the applied context the store holds.
	Applied() crdt.Context
	// SyncedWith records that an anti-entropy round with peer completed,
	// its applies durable, and the homes the peer showed in it
	// (protocol.Synced); peers are all of the region's peers.
	SyncedWith(peer, homes string, peers []string)
	// ShowedHomes records the homes peer showed in a round whose pulls
	// are durable (protocol.Ready.Homes).
	ShowedHomes(peer, homes string)
}

var _ Node = (*region.Node)(nil)

// Driver carries out one region's protocol output: Process takes a Ready
// from the protocol, makes its applies durable in the node, then sends
// its messages. It does no I/O of its own and starts no goroutine: the
// Replicator runs it from its loop over a transport, and the replication
// simulation (sync/protocol's tests) runs the same code over a seeded
// network. It is not safe for concurrent use; the caller feeds the
// protocol its inputs (Local, Step, PeerUp, PeerDown, Tick) from the same
// goroutine.
type Driver struct {
	Protocol *protocol.Protocol
	Node     Node
	// Peers are the region's peers (for Node.SyncedWith).
	Peers []string
	// Send hands an encoded message for peer to to the transport; an
	// error means it was not sent (the protocol sends it again). m is
	// the message b encodes.
	Send func(to crdt.ReplicaID, m *protocol.Message, b []byte) error
	// Now is the clock.
	Now func() time.Time
	// ApplyKeys bounds the keys of one store transaction of remote
	// applies (0: crdt.MaxGroupKeys).
	ApplyKeys int
	// Metrics, if set, counts what is sent and how long deltas took to
	// arrive.
	Metrics *Metrics
	// OnApply, if set, is called after each durable transaction of
	// remote applies, for each apply in it that made new dots visible.
	OnApply func(from string, ranges []protocol.DotRange, at time.Time)
}

// ApplyError is what Process returns when the store could not make an
// apply durable: nothing of that Ready was sent, and the protocol was told
// (Protocol.Discard) what the store holds, so that it takes the peers'
// retransmissions for new.
type ApplyError struct {
	Err error
	// Unapplied are the applies of the Ready that did not become durable:
	// those of the failed transaction and every one after it.
	Unapplied []protocol.Apply
}

// Error describes the failure.
func (e *ApplyError) Error() string {
	return fmt.Sprintf("replication: could not apply %d remote deltas: %v", len(e.Unapplied), e.Err)
}

// Unwrap returns the store's error.
func (e *ApplyError) Unwrap() error { return e.Err }

// Process takes the protocol's Ready and carries it out in the order its
// doc comment requires: every apply durable first, in transactions of at
// most ApplyKeys keys; then the anti-entropy rounds that completed are
// reported to the node; then, and only then, every message is encoded and
// sent. If an apply fails, nothing is sent and the error is an
// *ApplyError. Messages that do not encode are skipped and reported in
// the error returned once the others are sent.
func (d *Driver) Process() error {
	rd := d.Protocol.Ready()
	if err := d.apply(rd.Applies); err != nil {
		return err
	}
	for _, s := range rd.Homes {
		d.Node.ShowedHomes(string(s.Peer), s.Homes)
	}
	for _, s := range rd.Synced {
		d.Node.SyncedWith(string(s.Peer), s.Homes, d.Peers)
	}
	var errs []error
	for _, env := range rd.Messages {
		b, err := protocol.Encode(env.Msg)
		if err != nil {
			errs = append(errs, fmt.Errorf("replication: encode a %s message for %s: %w", env.Msg.Kind, env.To, err))
			continue
		}
		to := string(env.To)
		if err := d.Send(env.To, env.Msg, b); err != nil {
			if d.Metrics != nil {
				d.Metrics.SendErrors.WithLabelValues(to).Inc()
			}
			continue
		}
		d.Protocol.NoteSent(env.To, len(b), env.Msg.Kind)
		if d.Metrics != nil {
			d.Metrics.BytesSent.WithLabelValues(to).Add(float64(len(b)))
			d.Metrics.MessagesSent.WithLabelValues(to, env.Msg.Kind.String()).Inc()
		}
	}
	return errors.Join(errs...)
}

// apply makes applies durable, joined into transactions of at most
// ApplyKeys keys (an apply with more goes alone).
func (d *Driver) apply(applies []protocol.Apply) error {
	limit := d.ApplyKeys
	if limit <= 0 {
		limit = applyKeys
	}
	for len(applies) > 0 {
		n, keys := 0, 0
		// The transaction's group: the first Apply's own when it is the
		// only one with a group (the node only reads it), else a group of
		// the transaction's own they are joined into.
		var g *crdt.Group
		joined := false
		var dots, reflects crdt.Context
		for _, a := range applies {
			k := 0
			if a.Group != nil {
				k = a.Group.Len()
			}
			if n > 0 && (keys+k > limit || a.State != applies[0].State) {
				// Whole states and deltas go in transactions of their
				// own: a store tells them apart at a damaged key.
				break
			}
			switch {
			case a.Group == nil:
			case g == nil:
				g = a.Group
			case !joined:
				own := &crdt.Group{}
				own.Join(g)
				own.Join(a.Group)
				g, joined = own, true
			default:
				g.Join(a.Group)
			}
			dots.Join(&a.Dots)
			reflects.Join(&a.Reflects)
			n, keys = n+1, keys+k
		}
		// One transaction's keys may all reflect what any of its
		// Applies reflects: a token covering more than its answer shows
		// is still kept (see region/answer.go).
		if g == nil {
			g = &crdt.Group{}
		}
		if err := d.Node.ApplyGroup(&dots, g, &reflects, applies[0].State); err != nil {
			d.Protocol.Discard(d.Node.Applied(), d.Now())
			return &ApplyError{Err: err, Unapplied: applies}
		}
		now := d.Now()
		for _, a := range applies[:n] {
			// Only writes of the cluster's regions are measured: an origin
			// is a name the peer sent, and each would be a series of its
			// own.
			ranges := a.Ranges
			if len(d.Peers) > 0 {
				ranges = slices.DeleteFunc(slices.Clone(ranges), func(rg protocol.DotRange) bool {
					return !slices.Contains(d.Peers, crdt.ReplicaID(rg.Origin).Region())
				})
			}
			if d.Metrics != nil {
				for _, rg := range ranges {
					d.Metrics.Convergence.WithLabelValues(crdt.ReplicaID(rg.Origin).Region()).Observe(now.Sub(time.UnixMicro(rg.AtUs)).Seconds())
				}
			}
			if d.OnApply != nil && len(ranges) > 0 {
				d.OnApply(string(a.From), ranges, now)
			}
		}
		applies = applies[n:]
	}
	return nil
}

// Local hands the protocol a durable local write.
func (d *Driver) Local(delta region.Delta, now time.Time) {
	before := d.Protocol.LocalBytes()
	d.Protocol.Local(protocol.LocalDelta{Seq: delta.Seq, Group: delta.Group, At: delta.At}, now)
	if d.Metrics != nil {
		d.Metrics.DeltaBytes.Add(float64(d.Protocol.LocalBytes() - before))
	}
}
