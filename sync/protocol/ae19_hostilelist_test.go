package protocol

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// ae19CountingStore is a region of many keys as its digest shows them
// (perBucket keys in every bucket); it records the most keys one of its
// snapshots was asked to load, by its counts.
type ae19CountingStore struct {
	buckets, perBucket int
	most               uint64
}

func (s *ae19CountingStore) Snapshot(choose func([]uint64) []uint32) (*Snapshot, error) {
	snap := &Snapshot{Buckets: make([]uint64, s.buckets), Counts: make([]uint32, s.buckets), Keys: map[string]uint64{}}
	for b := range snap.Buckets {
		snap.Buckets[b], snap.Counts[b] = uint64(b)*0x9e3779b97f4a7c15+1, uint32(s.perBucket)
	}
	if choose != nil {
		var keys uint64
		for _, b := range choose(snap.Buckets) {
			keys += uint64(snap.Counts[b])
		}
		s.most = max(s.most, keys)
	}
	return snap, nil
}

func (*ae19CountingStore) Read([]string) (*crdt.Group, crdt.Context, error) {
	return &crdt.Group{}, crdt.Context{}, nil
}

// TestAE19HostileListAnswerLoadsBoundedKeys: a round over the tree (8,192
// buckets of 1,000 keys) with a peer that answers the root's split with a
// list of one of its children (a child asked about: askedOf keeps it)
// whose entries name one slot in each of the child's 512 buckets. The
// initiator loads every bucket a list names to compare it (takeAnswers,
// the first node of a batch whatever its size): 512,000 keys in one
// snapshot, four times aeLoadKeys, from an answer of a few kilobytes.
// 778b28a bounds what a responder loads for a peer's digest; the peer's
// answer to our digest must be bounded the same way (SPEC: hostile input
// never exhausts memory).
func TestAE19HostileListAnswerLoadsBoundedKeys(t *testing.T) {
	const buckets = 8192
	st := &ae19CountingStore{buckets: buckets, perBucket: 1000}
	cfg := DefaultConfig()
	cfg.Buckets = buckets
	cfg.AntiEntropyRate = 0
	us, eu := crdt.ReplicaID("us-east"), crdt.ReplicaID("eu-west")
	p := New(us, []crdt.ReplicaID{us, eu}, crdt.Context{}, st, cfg)
	now := time.Unix(1_800_000_000, 0)
	p.PeerUp(eu, now)
	p.Tick(now)
	var digest *Message
	for _, env := range p.Ready().Messages {
		if env.Msg.Kind == KindDigest && len(env.Msg.Nodes) > 0 {
			digest = env.Msg
		}
	}
	if digest == nil {
		t.Fatal("no digest of the root's split was sent")
	}
	bs := children(0, rootHi(buckets))
	lo, hi := bs[0], bs[1]
	list := RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{uint32((hi - lo) >> slotBits)}}
	for b := lo >> slotBits; b < hi>>slotBits; b++ {
		list.Offs = append(list.Offs, bucketStart(b)-lo)
		list.Hashes = append(list.Hashes, b*0x51ed27+7)
	}
	st.most = 0
	d := &Message{Kind: KindDiff, Round: digest.Round, Step: digest.Step, Of: requestID(digest), Run: 7,
		Nodes: []RangeNode{list}, Next: uint64(len(digest.Nodes)), Applied: crdt.EncodeContext(&crdt.Context{})}
	b, err := Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	if d, err = Decode(b, buckets); err != nil {
		t.Fatal(err)
	}
	p.Step(eu, d, now)
	p.Ready()
	if st.most > aeLoadKeys {
		t.Fatalf("an answer of %d bytes (a list of %d entries) made the region load %d keys in one snapshot; want at most aeLoadKeys = %d",
			len(b), len(list.Offs), st.most, aeLoadKeys)
	}
}
