package protocol

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

type emptyStorage struct{}

func (emptyStorage) Snapshot(func([]uint64) []uint32) (*Snapshot, error) { return &Snapshot{}, nil }
func (emptyStorage) Read([]string) (*crdt.Group, crdt.Context, error) {
	return &crdt.Group{}, crdt.Context{}, nil
}

// admitAllWhole is admitAll as it was when it joined c into a copy of the
// whole of base: the reference admitAll must agree with. It leaves out
// what admitAll's filters leave out (counters, unissued own dots, replicas
// past the budget) as admitAll does.
func (p *Protocol) admitAllWhole(base, c *crdt.Context) (out crdt.Context, left []crdt.Dot) {
	c = p.withinReplicas(base, p.withoutUnissued(capCounters(c)))
	if len(c.Cloud) == 0 {
		for r, v := range c.VV {
			if p.member(r) && v > base.VV[r] {
				if out.VV == nil {
					out.VV = make(map[crdt.ReplicaID]uint64, len(c.VV))
				}
				out.VV[r] = v
			}
		}
		return out, nil
	}
	merged := base.Clone()
	extend := func(r crdt.ReplicaID, v uint64) {
		if out.VV == nil {
			out.VV = make(map[crdt.ReplicaID]uint64)
		}
		if merged.VV == nil {
			merged.VV = make(map[crdt.ReplicaID]uint64)
		}
		out.VV[r], merged.VV[r] = v, v
	}
	for r, v := range c.VV {
		if p.member(r) && v > merged.VV[r] {
			extend(r, v)
		}
	}
	merged.Compact()
	var extra []crdt.Dot
	for d := range c.Cloud {
		if p.member(d.Replica) && !merged.Contains(d) {
			extra = append(extra, d)
		}
	}
	slices.SortFunc(extra, func(a, b crdt.Dot) int {
		if a.Counter != b.Counter {
			return cmp.Compare(a.Counter, b.Counter)
		}
		return cmp.Compare(a.Replica, b.Replica)
	})
	window := uint64(MaxCloudDots / (len(p.peers) + 1))
	for _, d := range extra {
		switch v := merged.VV[d.Replica]; {
		case d.Counter == v+1:
			extend(d.Replica, d.Counter)
		case d.Counter <= v+window && p.outOfOrder(d.Replica):
			if out.Cloud == nil {
				out.Cloud = make(map[crdt.Dot]struct{})
			}
			out.Cloud[d] = struct{}{}
		default:
			left = append(left, d)
		}
	}
	out.Compact()
	return out, left
}

// TestAdmitAllAgreesWithWholeCopy checks admitAll, which joins c into a
// copy of base restricted to the replicas c names, against the version
// that copied the whole of base, on random contexts: replicas of member
// and foreign regions, several incarnations, dots in and past the window.
// The seed is fixed; each case names its index.
func TestAdmitAllAgreesWithWholeCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	ids := []crdt.ReplicaID{"us-east", "eu-west", "ap-south"}
	replicas := []crdt.ReplicaID{"us-east", "us-east+1", "eu-west", "eu-west+2", "ap-south", "ap-south+1", "mars", "mars+3"}
	window := uint64(MaxCloudDots / len(ids))
	random := func(dense bool) crdt.Context {
		var c crdt.Context
		for _, r := range replicas {
			if rng.IntN(3) == 0 {
				continue
			}
			if dense || rng.IntN(2) == 0 {
				if c.VV == nil {
					c.VV = map[crdt.ReplicaID]uint64{}
				}
				c.VV[r] = uint64(rng.IntN(50))
			}
			for range rng.IntN(4) {
				k := uint64(1 + rng.IntN(80))
				if rng.IntN(8) == 0 {
					k += window + uint64(rng.IntN(20)) // past the window
				}
				c.Insert(crdt.Dot{Replica: r, Counter: k})
			}
		}
		return c
	}
	a := New("us-east", ids, crdt.Context{}, emptyStorage{}, DefaultConfig())
	b := New("us-east", ids, crdt.Context{}, emptyStorage{}, DefaultConfig())
	for i := range 5000 {
		base, c := random(true), random(false)
		base.Compact()
		got, gotLeft := a.admitAll(&base, &c)
		want, wantLeft := b.admitAllWhole(&base, &c)
		sortDots := func(ds []crdt.Dot) {
			slices.SortFunc(ds, func(x, y crdt.Dot) int {
				return cmp.Or(cmp.Compare(x.Replica, y.Replica), cmp.Compare(x.Counter, y.Counter))
			})
		}
		sortDots(gotLeft)
		sortDots(wantLeft)
		if !got.Equal(&want) || !reflect.DeepEqual(gotLeft, wantLeft) {
			t.Fatalf("case %d: base %v, c %v:\nadmitAll %v left %v\nwhole copy %v left %v", i, fmt.Sprint(base), fmt.Sprint(c), got, gotLeft, want, wantLeft)
		}
		if !reflect.DeepEqual(a.latest, b.latest) {
			t.Fatalf("case %d: latest incarnations %v, whole copy %v", i, a.latest, b.latest)
		}
	}
}
