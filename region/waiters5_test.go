package region

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestCausalWaitsAllReturnOnceEverythingIsApplied: many requests wait on
// tokens naming dots of several replicas (other regions, an incarnation of
// one, this region's own writes), as version vector entries and as
// out-of-order dots, while the dots arrive out of order and concurrently:
// as single deltas (ApplyRemote), as deltas of several replicas at once
// (ApplyGroup, noteApplied) and as this region's own writes. Other
// requests wait on dots never written and time out meanwhile. Every wait
// whose token the region ends up covering returns nil well before its
// deadline, every other one answers causal_timeout, and once all have
// returned no per-replica wait stays registered. The seed is printed
// (LATTICE_SEED repeats a run).
func TestCausalWaitsAllReturnOnceEverythingIsApplied(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := nodeWithPeers(t, "eu-west", "ap-south", "sa-east")
	remotes := []crdt.ReplicaID{"eu-west", "ap-south", "sa-east", crdt.Incarnation("eu-west", 9)}
	const perReplica, ownWrites = 40, 30
	var all []crdt.Dot
	for _, r := range remotes {
		for k := uint64(1); k <= perReplica; k++ {
			all = append(all, crdt.Dot{Replica: r, Counter: k})
		}
	}
	rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	self := n.Self()

	// The tokens: a random selection of the dots that will be applied,
	// some as prefixes, some as single dots; each waiter one token.
	const waiters = 200
	tokens := make([]crdt.Context, waiters)
	for i := range tokens {
		c := crdt.Context{VV: map[crdt.ReplicaID]uint64{}}
		for _, r := range remotes {
			switch rng.IntN(3) {
			case 0:
				c.VV[r] = uint64(1 + rng.IntN(perReplica))
			case 1:
				for range 1 + rng.IntN(3) {
					c.Insert(crdt.Dot{Replica: r, Counter: uint64(1 + rng.IntN(perReplica))})
				}
			}
		}
		if rng.IntN(2) == 0 {
			c.Insert(crdt.Dot{Replica: self, Counter: uint64(1 + rng.IntN(ownWrites))})
		}
		tokens[i] = c
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := tokens[i].Clone()
			if err := n.waitCovers(ctx, &want, i%2 == 0); err != nil {
				errs <- fmt.Errorf("waiter %d on %v: %v", i, tokens[i], err)
			}
		}()
	}
	// Waits on dots never written, timing out while the others wake.
	var lost sync.WaitGroup
	for i := range 100 {
		lost.Add(1)
		go func() {
			defer lost.Done()
			never := crdt.Context{}
			never.Insert(crdt.Dot{Replica: remotes[i%len(remotes)], Counter: perReplica + 5})
			never.Insert(crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprintf("gone-%d", i%7)), Counter: 2})
			tctx, c := context.WithTimeout(ctx, time.Duration(1+i%20)*time.Millisecond)
			defer c()
			err := n.waitCovers(tctx, &never, false)
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeCausalTimeout {
				errs <- fmt.Errorf("a wait on dots never written answered %v", err)
			}
		}()
	}

	var writers sync.WaitGroup
	writers.Add(2)
	go func() {
		defer writers.Done()
		for i := range ownWrites {
			if _, err := n.AddItem(context.Background(), "own", fmt.Sprintf("s%d", i), 1); err != nil {
				errs <- err
				return
			}
		}
	}()
	go func() {
		defer writers.Done()
		for k := 0; k < len(all); {
			size := 1 + rng.IntN(5)
			dots := crdt.Context{}
			for ; size > 0 && k < len(all); size-- {
				dots.Insert(all[k])
				k++
			}
			var err error
			switch rng.IntN(3) {
			case 0:
				err = n.ApplyRemote(&dots, &crdt.Group{})
			case 1:
				err = n.ApplyGroup(&dots, &crdt.Group{}, nil, false)
			default:
				n.noteApplied(&dots)
			}
			if err != nil {
				errs <- err
				return
			}
			if rng.IntN(4) == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	writers.Wait()
	wg.Wait()
	lost.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("seed %d: %v", seed, err)
	}
	n.amu.Lock()
	left := len(n.appliedWaits)
	n.amu.Unlock()
	if left != 0 {
		t.Fatalf("seed %d: %d per-replica waits stay registered after every waiter returned", seed, left)
	}
}

// TestCausalWaitFollowsItsMissingReplica: a wait on a token of three
// replicas, whose first missing item moves from one replica to the next as
// their dots arrive (the later replicas' dots first, then the earlier
// ones, the last out of order), returns once the last missing dot is
// applied, and leaves nothing registered.
func TestCausalWaitFollowsItsMissingReplica(t *testing.T) {
	n := nodeWithPeers(t, "eu-west", "ap-south", "sa-east")
	want := crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 3, "ap-south": 2}}
	want.Insert(crdt.Dot{Replica: "sa-east", Counter: 4})
	done := make(chan error, 1)
	go func() {
		w := want.Clone()
		done <- n.waitCovers(context.Background(), &w, true)
	}()
	apply := func(r crdt.ReplicaID, counters ...uint64) {
		dots := crdt.Context{}
		for _, k := range counters {
			dots.Insert(crdt.Dot{Replica: r, Counter: k})
		}
		if err := n.ApplyRemote(&dots, &crdt.Group{}); err != nil {
			t.Fatal(err)
		}
	}
	registered := func() int {
		n.amu.Lock()
		defer n.amu.Unlock()
		return len(n.appliedWaits)
	}
	waitUntil(t, 5*time.Second, "the wait registers", func() bool { return registered() > 0 })
	apply("sa-east", 4)
	apply("ap-south", 2)
	apply("ap-south", 1)
	apply("eu-west", 2, 3)
	select {
	case err := <-done:
		t.Fatalf("the wait returned %v with eu-west:1 missing", err)
	case <-time.After(50 * time.Millisecond):
	}
	apply("eu-west", 1)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not return once every dot was applied")
	}
	if k := registered(); k != 0 {
		t.Fatalf("%d waits stay registered", k)
	}
}
