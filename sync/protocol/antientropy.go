package protocol

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/latticedb/lattice/crdt"
)

// startAE opens an anti-entropy round with pr: our digest and applied
// context, from one snapshot.
func (p *Protocol) startAE(pr *peer) {
	snap, err := p.st.Snapshot(nil)
	if err != nil {
		p.err = err
		return
	}
	// Round numbers go on from the clock, so that a message of a round of
	// an earlier run names no round of this one.
	p.round = max(p.round+1, uint64(p.now.UnixNano()))
	mine := p.bounded(&snap.Applied)
	applied := crdt.EncodeContext(&mine)
	pr.ae = &aeRound{round: p.round, id: DigestID(snap.Buckets, applied), started: p.now, needed: pr.needAE, myApplied: mine}
	pr.needAE = false
	pr.aeCount++
	p.send(pr, &Message{Kind: KindDigest, Round: p.round, Buckets: snap.Buckets, Applied: applied})
}

// onDigest answers a round: the buckets that differ (as many as fit), our
// key hashes in them and our applied context, from one snapshot.
func (p *Protocol) onDigest(pr *peer, m *Message) {
	final := true
	snap, err := p.st.Snapshot(func(mine []uint64) []uint32 {
		if len(mine) != len(m.Buckets) {
			return nil
		}
		var diff []uint32
		for i := range mine {
			if mine[i] != m.Buckets[i] {
				diff = append(diff, uint32(i))
			}
		}
		return diff
	})
	if err != nil {
		p.err = err
		return
	}
	if len(snap.Buckets) != len(m.Buckets) {
		p.err = fmt.Errorf("protocol: a digest of %d buckets, the store has %d", len(m.Buckets), len(snap.Buckets))
		return
	}
	var diff []uint32
	for i := range snap.Buckets {
		if snap.Buckets[i] != m.Buckets[i] {
			diff = append(diff, uint32(i))
		}
	}
	// Keep whole buckets while the key hashes fit in one round.
	byBucket := make(map[uint32][]KeyHash)
	for k, h := range snap.Keys {
		b := bucketOf(k, len(snap.Buckets))
		byBucket[b] = append(byBucket[b], KeyHash{Key: k, Hash: h})
	}
	var keys []KeyHash
	var chosen []uint32
	for _, b := range diff {
		if len(chosen) > 0 && len(keys)+len(byBucket[b]) > p.cfg.MaxRoundKeys {
			final = false
			break
		}
		chosen = append(chosen, b)
		keys = append(keys, byBucket[b]...)
	}
	if len(keys) > p.cfg.MaxRoundKeys {
		keys, final = keys[:p.cfg.MaxRoundKeys], false
	}
	slices.SortFunc(keys, func(a, b KeyHash) int { return cmp.Compare(a.Key, b.Key) })
	if len(diff) == 0 {
		// Equal key spaces: the peer's state then is ours now.
		if c, err := crdt.DecodeContext(m.Applied); err == nil {
			p.adopt(pr, c)
		}
	}
	pr.answered = append(pr.answered, m.Round)
	if len(pr.answered) > 4 {
		pr.answered = pr.answered[1:]
	}
	p.send(pr, &Message{Kind: KindDiff, Round: m.Round, Of: DigestID(m.Buckets, m.Applied), Diff: chosen, Keys: keys,
		Applied: p.wire(&snap.Applied), Final: final})
}

// onDiff continues our round: push the keys where we differ, pull theirs.
func (p *Protocol) onDiff(pr *peer, m *Message) {
	ae := pr.ae
	if ae == nil || ae.round != m.Round || ae.waiting || m.Of != ae.id {
		return // not an answer to the digest of our running round
	}
	theirApplied, err := crdt.DecodeContext(m.Applied)
	if err != nil {
		pr.ae = nil
		return
	}
	ae.theirApplied, ae.final = theirApplied, m.Final
	if len(m.Diff) == 0 {
		if m.Final {
			p.adopt(pr, theirApplied)
		}
		p.finishAE(pr)
		return
	}
	want := slices.Clone(m.Diff)
	snap, err := p.st.Snapshot(func([]uint64) []uint32 { return want })
	if err != nil {
		p.err = err
		pr.ae = nil
		return
	}
	theirs := make(map[string]uint64, len(m.Keys))
	for _, kh := range m.Keys {
		theirs[kh.Key] = kh.Hash
	}
	var push, pull []string
	for k, h := range snap.Keys {
		if th, ok := theirs[k]; !ok || th != h {
			push = append(push, k)
		}
	}
	for k, th := range theirs {
		if h, ok := snap.Keys[k]; !ok || h != th {
			pull = append(pull, k)
		}
	}
	pr.noteShipped(snap.Keys, theirs)
	slices.Sort(push)
	slices.Sort(pull)
	if len(pull) > MaxKeys {
		pull, ae.final = pull[:MaxKeys], false
	}
	g, reflects, complete := p.readBounded(push)
	if !complete {
		ae.final = false
	}
	pr.pushed += uint64(len(push))
	pr.pulled += uint64(len(pull))
	p.send(pr, &Message{Kind: KindObjects, Round: m.Round, Group: g, Pull: pull, Applied: crdt.EncodeContext(&ae.myApplied), Final: ae.final,
		Reflects: reflects})
	if len(pull) == 0 {
		if ae.final {
			p.adopt(pr, theirApplied)
		}
		p.finishAE(pr)
		return
	}
	ae.waiting = true
}

// onObjects handles pushed states: as the responder, apply them (adopting
// the initiator's applied context if the round was complete) and send back
// what was pulled; as the initiator, apply the pulled states and finish.
func (p *Protocol) onObjects(pr *peer, m *Message) {
	if m.Reply {
		p.applyObjects(pr, m)
		if ae := pr.ae; ae != nil && ae.round == m.Round && ae.waiting {
			ae.final = ae.final && m.Final
			if ae.final {
				p.adopt(pr, ae.theirApplied)
			}
			p.finishAE(pr)
		}
		return
	}
	p.applyObjects(pr, m)
	if m.Final && m.Applied != nil && slices.Contains(pr.answered, m.Round) {
		if c, err := crdt.DecodeContext(m.Applied); err == nil {
			p.adopt(pr, c)
		}
	}
	if len(m.Pull) == 0 {
		return
	}
	g, reflects, complete := p.readBounded(m.Pull)
	p.send(pr, &Message{Kind: KindObjects, Round: m.Round, Reply: true, Group: g, Final: complete, Reflects: reflects})
}

// applyObjects applies the states m carries, as reflecting the context
// the sender read with them (Apply.Reflects; none from a sender that does
// not send it).
func (p *Protocol) applyObjects(pr *peer, m *Message) {
	g := m.Group
	if g == nil || g.Len() == 0 {
		return
	}
	a := Apply{From: pr.id, Group: g}
	if m.Reflects != nil {
		if c, err := crdt.DecodeContext(m.Reflects); err == nil {
			a.Reflects = c
		}
	}
	p.out.Applies = append(p.out.Applies, a)
}

// adopt records that our state now reflects c, the applied context of
// pr's state that a complete round has brought here.
func (p *Protocol) adopt(pr *peer, c crdt.Context) {
	if !slices.Contains(p.out.Synced, pr.id) {
		p.out.Synced = append(p.out.Synced, pr.id)
	}
	claim := p.admit(&p.seen, &c)
	if p.seen.Covers(&claim) {
		return
	}
	p.seen.Join(&claim)
	p.out.Applies = append(p.out.Applies, Apply{From: pr.id, Dots: claim})
	p.claimHeld(pr)
}

// finishAE ends the round with pr. The peer still needs anti-entropy if
// it came to need it during the round, or if the round it needed did not
// cover every differing bucket.
func (p *Protocol) finishAE(pr *peer) {
	pr.needAE = pr.needAE || (pr.ae.needed && !pr.ae.final)
	pr.lastAE = p.now
	pr.ae = nil
}

// readBounded reads keys, leaving out the tail beyond crdt.MaxGroupKeys
// keys or that would make the group larger than a quarter of
// MaxMessageBytes (anti-entropy shares the ordered per-peer stream with
// deltas, so its batches stay small enough not to hold deltas up for
// long); complete is false if it left any out, and the next round ships
// them. reflects is the encoding of a context that covers every write the
// states show (Storage.Read), for Message.Reflects: not bounded by the
// claims window, which would leave out exactly the dots it is for, but
// replaced by its version vector ceiling (crdt.Context.Ceil, which covers
// it) if it would exceed MaxAppliedBytes.
func (p *Protocol) readBounded(keys []string) (g *crdt.Group, reflects []byte, complete bool) {
	complete = true
	if len(keys) > crdt.MaxGroupKeys {
		keys, complete = keys[:crdt.MaxGroupKeys], false
	}
	for {
		g, c, err := p.st.Read(keys)
		if err != nil {
			p.err = err
			return &crdt.Group{}, nil, false
		}
		if len(keys) <= 1 || len(crdt.EncodeGroup(g)) <= p.cfg.MaxMessageBytes/4 {
			if g.Len() == 0 {
				return g, nil, complete
			}
			b := crdt.EncodeContext(&c)
			if len(b) > MaxAppliedBytes {
				ceil := c.Ceil()
				b = crdt.EncodeContext(&ceil)
			}
			return g, b, complete
		}
		keys, complete = keys[:len(keys)/2], false
	}
}

func bucketOf(key string, buckets int) uint32 { return crdt.KeyBucket(key, buckets) }

// Unrepaired keys.
const (
	// UnrepairedRounds is how many anti-entropy rounds in a row must ship
	// a key with no effect before it counts as unrepaired (one lost
	// message can make one round ship a key in vain).
	UnrepairedRounds = 3
	// MaxUnrepaired bounds the unrepaired keys kept per peer.
	MaxUnrepaired = 64
)

// noteShipped records the keys a round found different in the buckets it
// compared (ours: their hashes here; theirs: at the peer). States only
// grow by joins, so a key that differs with the same pair of hashes as in
// the last round was shipped both ways and changed neither side: its two
// states hold a divergence no join repairs (for example one dot with two
// contents).
func (pr *peer) noteShipped(ours, theirs map[string]uint64) {
	next := make(map[string][2]uint64)
	streak := make(map[string]int)
	for k, h := range ours {
		if th, ok := theirs[k]; ok && th != h {
			pair := [2]uint64{h, th}
			if len(next) < 4*MaxUnrepaired {
				next[k] = pair
			}
			if last, ok := pr.shipped[k]; ok && last == pair {
				streak[k] = pr.unrepaired[k] + 1
			}
		}
	}
	pr.shipped, pr.unrepaired = next, streak
}

// unrepairedKeys lists (sorted, at most MaxUnrepaired) the keys shipped
// UnrepairedRounds rounds in a row in vain.
func (pr *peer) unrepairedKeys() []string {
	out := []string{}
	for k, n := range pr.unrepaired {
		if n+1 >= UnrepairedRounds {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	if len(out) > MaxUnrepaired {
		out = out[:MaxUnrepaired]
	}
	return out
}
