package transport

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMuxNodes runs a region of one node (us-east) and a region of two
// nodes (eu-west a, owning partitions 0-1, and b, owning 2-3) over real
// QUIC, each node's partitions multiplexed on one connection per pair of
// nodes: a partition's messages reach only that partition's handler at
// the node that owns it, in order, from the sending region; calls reach
// the owner; the two nodes of eu-west are told apart though they share a
// certificate, and reach each other; a node that stops disconnects only
// its own partitions.
func TestMuxNodes(t *testing.T) {
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
	type node struct {
		mux  *Mux
		recs map[int]*recorder
		tr   *QUICTransport
	}
	nodes := map[string]*node{}
	build := func(region string, parts []int) *node {
		n := &node{mux: NewMux(region, owner), recs: map[int]*recorder{}}
		for _, p := range parts {
			n.recs[p] = newRecorder()
			n.mux.Partition(p, n.recs[p])
		}
		return n
	}
	us := build("us-east", []int{0, 1, 2, 3})
	a := build("eu-west", []int{0, 1})
	b := build("eu-west", []int{2, 3})
	nodes["us-east"], nodes["eu-west/a"], nodes["eu-west/b"] = us, a, b

	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west/a": pcA.LocalAddr().String(), "eu-west/b": pcB.LocalAddr().String()})
	cfgA, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String(), "eu-west/b": pcB.LocalAddr().String()})
	cfgA.Node = "a"
	cfgB, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String(), "eu-west/a": pcA.LocalAddr().String()})
	cfgB.Node = "b"
	us.tr = start(t, pcUS, cfgUS, us.mux)
	a.tr = start(t, pcA, cfgA, a.mux)
	b.tr = start(t, pcB, cfgB, b.mux)
	for _, n := range []*node{us, a, b} {
		n.mux.SetBase(n.tr)
	}
	waitFor(t, 15*time.Second, "every node connected to every other", func() bool {
		return us.tr.Connected("eu-west/a") && us.tr.Connected("eu-west/b") && a.tr.Connected("us-east") &&
			b.tr.Connected("us-east") && a.tr.Connected("eu-west/b") && b.tr.Connected("eu-west/a")
	})

	// us-east's partitions send to eu-west; each reaches its owner.
	const per = 50
	for p := range 4 {
		tr := us.mux.Partition(p, nil)
		for i := range per {
			if err := tr.Send("eu-west", fmt.Appendf(nil, "msg-%d", i)); err != nil {
				t.Fatalf("partition %d send %d: %v", p, i, err)
			}
		}
	}
	for p := range 4 {
		at := a
		if p >= 2 {
			at = b
		}
		rec := at.recs[p]
		waitFor(t, 10*time.Second, fmt.Sprintf("partition %d's messages at its owner", p), func() bool { return rec.count("us-east") == per })
		checkInOrder(t, fmt.Sprintf("partition %d", p), rec.messages("us-east"), per)
	}
	// eu-west's nodes send back; us-east tells the partitions apart.
	if err := a.mux.Partition(1, nil).Send("us-east", []byte("from-a")); err != nil {
		t.Fatal(err)
	}
	if err := b.mux.Partition(3, nil).Send("us-east", []byte("from-b")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both nodes' messages at us-east", func() bool {
		return us.recs[1].count("eu-west") == 1 && us.recs[3].count("eu-west") == 1
	})
	// A call to eu-west's partition 2 reaches b; a call from a to its own
	// region's partition 3 reaches b too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := us.mux.Partition(2, nil).Call(ctx, "eu-west", []byte("hi")); err != nil || string(resp) != "echo:us-east:hi" {
		t.Fatalf("call to partition 2: %q %v", resp, err)
	}
	if resp, err := a.mux.Partition(3, nil).Call(ctx, "eu-west", []byte("local")); err != nil || string(resp) != "echo:eu-west:local" {
		t.Fatalf("call within the region to partition 3: %q %v", resp, err)
	}
	// A call for a partition its receiver does not serve fails.
	if _, err := us.mux.Partition(7, nil).Call(ctx, "eu-west", []byte("x")); err == nil {
		t.Fatal("a call for partition 7 (owned by nobody) succeeded")
	}

	// b stops: us-east's partitions 2 and 3 see eu-west disconnected,
	// partitions 0 and 1 do not.
	b.tr.Close()
	// The handler hears of the disconnection just after Connected says it
	// (the transport drops the link's queue in between): wait for both.
	waitFor(t, 10*time.Second, "partitions 2 and 3 disconnected at us-east, and partition 2's handler told", func() bool {
		ev := us.recs[2].peerEvents("eu-west")
		return !us.mux.Partition(2, nil).Connected("eu-west") && !us.mux.Partition(3, nil).Connected("eu-west") &&
			len(ev) > 0 && !ev[len(ev)-1]
	})
	if !us.mux.Partition(0, nil).Connected("eu-west") || !us.mux.Partition(1, nil).Connected("eu-west") {
		t.Fatal("partitions owned by the live node disconnected with the other")
	}
	if ev := us.recs[0].peerEvents("eu-west"); len(ev) == 0 || !ev[len(ev)-1] {
		t.Fatalf("partition 0's handler heard %v of eu-west, want connected last", ev)
	}
}
