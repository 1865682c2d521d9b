package protocol

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// ae18CountStore is a region of many keys as its digest shows them: one
// key in every bucket (a hash and a count a bucket), none of them loaded.
type ae18CountStore struct{ buckets int }

func (s ae18CountStore) Snapshot(func([]uint64) []uint32) (*Snapshot, error) {
	snap := &Snapshot{Buckets: make([]uint64, s.buckets), Counts: make([]uint32, s.buckets), Keys: map[string]uint64{}}
	for b := range snap.Buckets {
		snap.Buckets[b], snap.Counts[b] = uint64(b)*0x9e3779b97f4a7c15+1, 1
	}
	return snap, nil
}

func (ae18CountStore) Read([]string) (*crdt.Group, crdt.Context, error) {
	return &crdt.Group{}, crdt.Context{}, nil
}

// TestAE18AnswersOfNodesNeverAskedEndTheRound: a round over the tree (a
// cluster of 8,192 buckets) with a peer that answers every digest with
// the nodes of the root's split (its 16 children, all different, each
// holding many keys) repeated to fill the answer, rather than with the
// children of the nodes the digest asked about. Each such answer makes
// the round queue 16 splits per node it carries, and the round never
// runs out of nodes to send: it must still end (or be abandoned) within
// a few AntiEntropyTimeouts, and not pile up the nodes of answers to
// questions it never asked.
func TestAE18AnswersOfNodesNeverAskedEndTheRound(t *testing.T) {
	const buckets = 8192
	cfg := DefaultConfig()
	cfg.Buckets = buckets
	cfg.AntiEntropyRate = 0
	us, eu := crdt.ReplicaID("us-east"), crdt.ReplicaID("eu-west")
	p := New(us, []crdt.ReplicaID{us, eu}, crdt.Context{}, ae18CountStore{buckets}, cfg)
	now := time.Unix(1_800_000_000, 0)
	p.PeerUp(eu, now)
	pr := p.byID[eu]
	hi := rootHi(buckets)
	bs := children(0, hi)
	var rootKids []RangeNode
	for i := range len(bs) - 1 {
		n := RangeNode{Lo: bs[i], Hi: bs[i+1]}
		for range len(children(bs[i], bs[i+1])) - 1 {
			n.Hashes = append(n.Hashes, 0xdead)
			n.Counts = append(n.Counts, 1000)
		}
		rootKids = append(rootKids, n)
	}
	var answer []RangeNode
	for len(answer)+len(rootKids) <= MaxNodeEntries/TreeFanout {
		answer = append(answer, rootKids...)
	}
	applied := crdt.EncodeContext(&crdt.Context{})
	var round uint64
	most, answers, answerBytes := 0, 0, 0
	start := now
	for now.Sub(start) < 6*cfg.AntiEntropyTimeout {
		p.Tick(now)
		{
			// One exchange a tick: the peer answers what was sent since.
			out := p.Ready().Messages
			for _, env := range out {
				m := env.Msg
				if m.Kind != KindDigest || len(m.Nodes) == 0 {
					continue
				}
				if round == 0 {
					round = m.Round
				}
				d := &Message{Kind: KindDiff, Round: m.Round, Step: m.Step, Of: requestID(m), Run: 7, Nodes: answer, Next: uint64(len(m.Nodes)), Applied: applied}
				b, err := Encode(d)
				if err != nil {
					t.Fatal(err)
				}
				if d, err = Decode(b, buckets); err != nil {
					t.Fatal(err)
				}
				answers++
				answerBytes += len(b)
				p.Step(eu, d, now)
			}
		}
		if pr.ae != nil {
			most = max(most, len(pr.ae.queue))
			if most > 1<<20 {
				t.Fatalf("after %s the round has queued %d nodes (each a split of 16 fingerprints and counts) from %d answers of %d bytes in all, of %d nodes each, to questions it never asked; it has sent %d steps and still runs",
					now.Sub(start), most, answers, answerBytes, len(answer), pr.ae.nextStep)
			}
		}
		now = now.Add(100 * time.Millisecond)
	}
	if pr.ae != nil && pr.ae.round == round {
		t.Fatalf("the round begun at %s still runs %s later (AntiEntropyTimeout %s), %d steps sent; %d nodes queued (at most %d), each answer carrying %d",
			start.Format(time.TimeOnly), now.Sub(start), cfg.AntiEntropyTimeout, pr.ae.nextStep, len(pr.ae.queue), most, len(answer))
	}
}
