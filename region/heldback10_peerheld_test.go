package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// heldBack10Run is damage8Mesh.run with the links between the pairs cut
// says down: their protocols see each other down and no message between
// them is delivered.
func heldBack10Run(mh *damage8Mesh, d time.Duration, cut func(a, b string) bool) {
	for _, a := range mh.r.regions {
		for _, b := range mh.r.regions {
			if a != b && cut(a, b) {
				mh.protos[a].PeerDown(crdt.ReplicaID(b), mh.now)
			}
		}
	}
	for end := mh.now.Add(d); mh.now.Before(end); {
		mh.now = mh.now.Add(50 * time.Millisecond)
		for _, name := range mh.r.regions {
			mh.protos[name].Tick(mh.now)
			mh.process(name)
		}
		for len(mh.queue) > 0 {
			msg := mh.queue[0]
			mh.queue = mh.queue[1:]
			if cut(msg.from, msg.to) {
				continue
			}
			mh.protos[msg.to].Step(crdt.ReplicaID(msg.from), msg.m, mh.now)
			mh.process(msg.to)
		}
	}
}

// TestCatchUpWaitsForAPeerHoldingTheKeyBack: us-east removes apple from
// cart v; the removal reaches ap-south only. ap-south's store is then
// found damaged on a line of v: it holds v back, and us-east's state
// (with the removal) repairs it there, still held back (ap-south cannot
// reach eu-west, so it does not catch up). us-east's store is found
// damaged on a line of v too: it holds v back until every peer's round
// has sent its state of it. Its rounds with eu-west and with ap-south
// complete, and it releases v; but ap-south's round sent nothing of v
// (ap-south leaves its held-back v out of its digest), so us-east
// serves v from eu-west's older state: apple is back, at the region that
// removed it, to a reader holding the token of that removal (which
// us-east serves), while ap-south, the one region that holds the removal,
// had not sent it.
func TestCatchUpWaitsForAPeerHoldingTheKeyBack(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a, mark := damage8AddThenRemove(t, r, id)
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west does not get the removal
	}
	tok := a.Token()
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	must[Cart](t)(r.nodes["ap-south"].AddItem(bg, "other", "plum", 1))

	s := damage8Reopen(t, r, "ap-south", cartLineKey(id, "pear"))
	r.repair("us-east", "ap-south", id) // whole again, with the removal; held back
	if !s.isHeldBack(prefixCart + id) {
		t.Fatal("ap-south does not hold cart v back")
	}
	a = damage8Reopen(t, r, "us-east", cartLineKey(id, "pear"))
	if !a.isHeldBack(prefixCart + id) {
		t.Fatal("us-east does not hold cart v back")
	}

	mh := newDamage8Mesh(t, r)
	heldBack10Run(mh, 10*time.Second, func(x, y string) bool {
		return x == "ap-south" && y == "eu-west" || x == "eu-west" && y == "ap-south"
	})
	if !s.CatchingUp() {
		t.Fatal("ap-south caught up without a round with eu-west")
	}
	if a.CatchingUp() {
		t.Fatal("us-east has not caught up after 10 s of anti-entropy with both peers")
	}
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if err := a.WaitToken(ctx, tok); err != nil {
		t.Fatalf("us-east does not serve the token of its own removal: %v", err)
	}
	if c, err := a.GetCart(bg, id); err == nil && qtyOf(c, "apple") != 0 {
		t.Errorf("us-east, caught up, serves cart v as %s to a reader holding the token of its own removal of apple; ap-south holds the removal but held v back during its round with us-east",
			itemsString(c.Items))
	}
}
