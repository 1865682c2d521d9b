package transport

import (
	"testing"
	"time"
)

// TestMuxDropsPartitionMessagesFromNonOwner: each (region, partition) is
// a replica that replicates only with the same partition of the other
// regions, reached at the node of that region that owns it. A message for
// partition 0 that arrives from a node of eu-west that does not own
// eu-west's partition 0 (eu-west/b owns 2 and 3) is not eu-west's
// partition 0 speaking, and must not be handed to us-east's partition 0
// as coming from eu-west.
func TestMuxDropsPartitionMessagesFromNonOwner(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pcUS, pcA, pcB := udp(t), udp(t), udp(t)
	owner := func(region string, p int) string {
		if region == "us-east" {
			return "us-east"
		}
		if p < 2 {
			return "eu-west/a"
		}
		return "eu-west/b"
	}
	usMux := NewMux("us-east", owner)
	recs := map[int]*recorder{}
	for p := range 4 {
		recs[p] = newRecorder()
		usMux.Partition(p, recs[p])
	}
	aMux := NewMux("eu-west", owner)
	aRecs := map[int]*recorder{0: newRecorder(), 1: newRecorder()}
	aMux.Partition(0, aRecs[0])
	aMux.Partition(1, aRecs[1])
	bMux := NewMux("eu-west", owner)
	bMux.Partition(2, newRecorder())
	bMux.Partition(3, newRecorder())

	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west/a": pcA.LocalAddr().String(), "eu-west/b": pcB.LocalAddr().String()})
	cfgA, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String(), "eu-west/b": pcB.LocalAddr().String()})
	cfgA.Node = "a"
	cfgB, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String(), "eu-west/a": pcA.LocalAddr().String()})
	cfgB.Node = "b"
	us := start(t, pcUS, cfgUS, usMux)
	a := start(t, pcA, cfgA, aMux)
	b := start(t, pcB, cfgB, bMux)
	usMux.SetBase(us)
	aMux.SetBase(a)
	bMux.SetBase(b)
	waitFor(t, 15*time.Second, "every node connected", func() bool {
		return us.Connected("eu-west/a") && us.Connected("eu-west/b") && a.Connected("us-east") && b.Connected("us-east")
	})

	// b sends on partition 0, which it does not own, then on partition 2,
	// which it does; a sends on partition 1, which it owns.
	if err := bMux.Partition(0, nil).Send("us-east", []byte("not-owner")); err != nil {
		t.Fatal(err)
	}
	if err := bMux.Partition(2, nil).Send("us-east", []byte("owner-b")); err != nil {
		t.Fatal(err)
	}
	if err := aMux.Partition(1, nil).Send("us-east", []byte("owner-a")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the owners' messages", func() bool {
		return recs[2].count("eu-west") == 1 && recs[1].count("eu-west") == 1
	})
	if got := recs[0].messages("eu-west"); len(got) != 0 {
		t.Fatalf("us-east's partition 0 was handed %q as from eu-west, sent by eu-west/b, which does not own eu-west's partition 0 (eu-west/a does)", got)
	}
}
