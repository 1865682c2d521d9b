package crdt

import "testing"

func TestIncarnationIDs(t *testing.T) {
	for _, tc := range []struct {
		region string
		k      uint64
		id     ReplicaID
	}{
		{"ap-south", 0, "ap-south"},
		{"ap-south", 1796000000, "ap-south+1796000000"},
		{"a:b.c-d_e", 7, "a:b.c-d_e+7"},
	} {
		id := Incarnation(tc.region, tc.k)
		if id != tc.id || id.Region() != tc.region || id.Incarnation() != tc.k || !ValidReplica(id) {
			t.Errorf("Incarnation(%q, %d) = %q (region %q, k %d, valid %v)", tc.region, tc.k, id, id.Region(), id.Incarnation(), ValidReplica(id))
		}
	}
	for _, bad := range []ReplicaID{"", "+1", "ap+", "ap+0", "ap+01", "ap+1+2", "ap+x", "ap+1234567890123", "a b", ReplicaID(make([]byte, MaxReplicaIDLen+1))} {
		if ValidReplica(bad) {
			t.Errorf("ValidReplica(%q) = true", bad)
		}
	}
}

func TestIncarnationsAreSeparateReplicas(t *testing.T) {
	// Two incarnations of one region make distinct dots for one object, so
	// a cart entry written after a lost tail never collides with one its
	// peers hold from before.
	var c Cart
	old, cur := Incarnation("r", 0), Incarnation("r", 5)
	d1 := c.Add(old, "a", 1)
	c.Join(d1)
	peer := c.Clone()
	lost := c.Add(old, "b", 1) // reached the peer, lost here
	peer.Join(lost)
	d2 := c.Add(cur, "c", 1)
	c.Join(d2)
	peer.Join(d2)
	c.Join(peer)
	if len(c.Items()) != 3 || len(peer.Items()) != 3 {
		t.Fatalf("items %v / %v, want a, b and c on both", c.Items(), peer.Items())
	}
}
