package region

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// nodeWithPeers opens us-east, a region of a cluster with peers.
func nodeWithPeers(t testing.TB, peers ...string) *Node {
	t.Helper()
	st, err := OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour, PeerRegions: peers})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); st.Close() })
	return n
}

// regionAdds returns the cart that region r holds after n adds of one
// unit of sku to an empty cart, with no other region's writes seen.
func regionAdds(r crdt.ReplicaID, sku string, n int) *crdt.Cart {
	c := &crdt.Cart{Entries: make(map[crdt.Dot]crdt.Line, n)}
	for k := range n {
		d := crdt.Dot{Replica: r, Counter: uint64(k + 1)}
		c.Entries[d] = crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: 1}
		c.Ctx.Insert(d)
	}
	return c
}

// TestCartOfManyRegionsStaysReadable: every region of a cluster (up to 64)
// may add entries to a cart up to its limit (cartLimits) while it has not
// seen the others' adds. Once six regions' concurrent adds have all
// arrived, the cart must still read, and hold every region's units.
func TestCartOfManyRegionsStaysReadable(t *testing.T) {
	regions := []crdt.ReplicaID{"eu-west", "ap-south", "sa-east", "af-south", "me-central"}
	var peers []string
	for _, r := range regions {
		peers = append(peers, string(r))
	}
	n := nodeWithPeers(t, peers...)
	limit, line := n.cartLimits()
	// us-east adds first, to its limit, each of its lines within the
	// line limit; then the others' adds arrive.
	for i := 0; ; i++ {
		if _, err := n.AddItem(bg, "big", fmt.Sprintf("own-%d", i/line), 1); err != nil {
			if i < limit {
				t.Fatalf("us-east's add %d refused below its limit %d: %v", i, limit, err)
			}
			break
		}
	}
	limit = min(limit, line) // each other region adds to one line
	for _, r := range regions {
		g := &crdt.Group{}
		g.AddCart("big", regionAdds(r, "sku-"+string(r), limit))
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: r, Counter: 1})
		if err := n.ApplyRemote(dots, g); err != nil {
			t.Fatalf("applying the adds of %s: %v", r, err)
		}
	}
	got, err := n.GetCart(bg, "big")
	if err != nil {
		t.Fatalf("reading the cart after every region's adds arrived: %v", err)
	}
	for _, r := range regions {
		if q := qtyOf(got, "sku-"+string(r)); q != int64(limit) {
			t.Fatalf("sku-%s × %d, want %d", r, q, limit)
		}
	}
}

// TestCartLineOfLongRegionNamesStaysReadable: region names may be 64
// characters (crdt.MaxReplicaIDLen). Two such regions each add units of one sku, one at a time,
// up to their line limit (cartLimits), before seeing the other's: once
// both have all the adds, the cart must read, with every unit.
func TestCartLineOfLongRegionNamesStaysReadable(t *testing.T) {
	var regions []crdt.ReplicaID
	var peers []string
	for _, ch := range "xy" {
		regions = append(regions, crdt.ReplicaID(strings.Repeat(string(ch), crdt.MaxReplicaIDLen)))
		peers = append(peers, string(regions[len(regions)-1]))
	}
	n := nodeWithPeers(t, peers...)
	_, limit := n.cartLimits()
	for _, r := range regions {
		g := &crdt.Group{}
		g.AddCart("big", regionAdds(r, "a", limit))
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: r, Counter: 1})
		if err := n.ApplyRemote(dots, g); err != nil {
			t.Fatalf("applying the adds of one region: %v", err)
		}
	}
	got, err := n.GetCart(bg, "big")
	if err != nil {
		t.Fatalf("reading the cart after both regions' adds arrived: %v", err)
	}
	if q := qtyOf(got, "a"); q != int64(2*limit) {
		t.Fatalf("a × %d, want %d", q, 2*limit)
	}
	if _, err := n.AddItem(bg, "big", "a", 1); err == nil {
		t.Fatal("an add past the line's limit was taken")
	}
}
