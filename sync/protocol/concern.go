package protocol

import (
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Holders returns the peers known to have made dot d durable: they
// acknowledged a delta message that carried it, or reported an applied
// context that contains it. A client that asked for its write to reach N
// regions is answered once the origin and N−1 holders have it (write
// concern); the driver asks after every Ready.
func (p *Protocol) Holders(d crdt.Dot) []crdt.ReplicaID {
	var out []crdt.ReplicaID
	for _, pr := range p.peers {
		if pr.applied.Contains(d) {
			out = append(out, pr.id)
		}
	}
	return out
}

// HoldersThrough returns the peers known to hold every dot of
// d.Replica up to d.Counter (their applied context's version vector
// reaches it): a replayed decision's write concern waits for that, since
// the original write, whose dot it no longer knows, is among them.
func (p *Protocol) HoldersThrough(d crdt.Dot) []crdt.ReplicaID {
	var out []crdt.ReplicaID
	for _, pr := range p.peers {
		if pr.applied.VV[d.Replica] >= d.Counter {
			out = append(out, pr.id)
		}
	}
	return out
}

// Urge marks the local delta with dot d as awaited by a client: every
// message that carries it asks its receiver to acknowledge at once
// (Message.Urgent), and a peer it is already in flight to is asked to
// acknowledge now, so that the client waits about one round trip rather
// than a round trip and a tick. It reports whether the delta is still in
// the buffer (a delta no longer there has reached every peer or been
// dropped for anti-entropy to repair).
func (p *Protocol) Urge(d crdt.Dot, now time.Time) bool {
	p.now = now
	for _, e := range p.buf {
		if e.from != "" || len(e.dots) != 1 || e.dots[0].From != d.Counter || crdt.ReplicaID(e.dots[0].Origin) != d.Replica {
			continue
		}
		e.urgent = true
		for _, pr := range p.peers {
			if pr.up && e.sent&pr.bit != 0 {
				p.send(pr, &Message{Kind: KindAck, Urgent: true})
			}
		}
		p.flushAll()
		return true
	}
	return false
}

// Reachable returns how many regions could still come to hold dot d
// soon: this one, the peers that hold it, and the connected peers that do
// not yet. A write concern larger than that cannot be met while the
// region is cut off, and is answered at once.
func (p *Protocol) Reachable(d crdt.Dot) int {
	n := 1
	for _, pr := range p.peers {
		if pr.up || pr.applied.Contains(d) {
			n++
		}
	}
	return n
}
