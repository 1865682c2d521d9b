package protocol

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestHeldDeltaReflectsItsDots: a delta whose dots lie past the claims
// window is applied with its dots held, not claimed; its Apply must say
// that its states reflect those dots, so that the region's answers cover
// them (Apply.Reflects).
func TestHeldDeltaReflectsItsDots(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Buckets = 8
	p := New("a", []crdt.ReplicaID{"a", "b"}, crdt.Context{}, &fixedStorage{8, nil}, cfg)
	now := time.Unix(1_800_000_000, 0)
	p.PeerUp("b", now)
	g := &crdt.Group{}
	g.AddCart("x", (&crdt.Cart{}).Add("b", "far", 1))
	far := uint64(MaxCloudDots + 10)
	p.Step("b", &Message{Kind: KindDelta, Tag: 1, Dots: []DotRange{{Origin: "b", From: far, To: far}}, Group: g}, now)
	d := crdt.Dot{Replica: "b", Counter: far}
	var found bool
	for _, a := range p.Ready().Applies {
		if a.Group == nil {
			continue
		}
		found = true
		if a.Dots.Contains(d) {
			t.Fatalf("the delta's dot %v was claimed although it lies past the window", d)
		}
		if !a.Reflects.Contains(d) {
			t.Fatalf("the delta's Apply reflects %v, not its held dot %v", a.Reflects, d)
		}
	}
	if !found {
		t.Fatal("the delta was not applied")
	}
}

// readingStorage is fixedStorage whose Read returns a fixed group and the
// context its states reflect.
type readingStorage struct {
	fixedStorage
	g        *crdt.Group
	reflects crdt.Context
}

func (r *readingStorage) Read([]string) (*crdt.Group, crdt.Context, error) {
	return r.g, r.reflects.Clone(), nil
}

// TestRepairCarriesWhatItsStatesReflect: the states anti-entropy ships
// carry the context the sender read with them, and the receiver's Apply of
// the repair reflects it — before any round adopts a context.
func TestRepairCarriesWhatItsStatesReflect(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Buckets = 8
	g := &crdt.Group{}
	g.AddCart("x", (&crdt.Cart{}).Add("a", "new", 1))
	var reflects crdt.Context
	for k := uint64(1); k <= 7; k++ {
		reflects.Insert(crdt.Dot{Replica: "a", Counter: k})
	}
	reflects.Insert(crdt.Dot{Replica: "a", Counter: 5000}) // past any window
	a := New("a", []crdt.ReplicaID{"a", "b"}, crdt.Context{}, &readingStorage{fixedStorage{8, map[string]uint64{"c/x": 1}}, g, reflects}, cfg)
	b := New("b", []crdt.ReplicaID{"a", "b"}, crdt.Context{}, &readingStorage{fixedStorage{8, map[string]uint64{"c/x": 2}}, &crdt.Group{}, crdt.Context{}}, cfg)
	now := time.Unix(1_800_000_000, 0)
	a.PeerUp("b", now)
	b.PeerUp("a", now)
	now = now.Add(2 * time.Second)
	a.Tick(now)
	var repaired []Apply
	for range 20 {
		moved := false
		for _, pair := range [][2]*Protocol{{a, b}, {b, a}} {
			rd := pair[0].Ready()
			if pair[0] == b {
				for _, ap := range rd.Applies {
					if ap.Group != nil && ap.Group.Len() > 0 {
						repaired = append(repaired, ap)
					}
				}
			}
			for _, env := range rd.Messages {
				buf, err := Encode(env.Msg)
				if err != nil {
					t.Fatal(err)
				}
				m, err := Decode(buf, cfg.Buckets)
				if err != nil {
					t.Fatal(err)
				}
				pair[1].Step(pair[0].self, m, now)
				moved = true
			}
		}
		if !moved {
			break
		}
	}
	if len(repaired) == 0 {
		t.Fatal("b got no repair of c/x")
	}
	for _, ap := range repaired {
		if !ap.Reflects.Covers(&reflects) {
			t.Fatalf("the repair's Apply reflects %v, not what a's states reflected %v", ap.Reflects, reflects)
		}
	}
}
