package crdt

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// The required outcomes of SPEC §2, each as an explicit history at the
// three regions of the dev cluster. Every delta travels as a network
// message would: encoded as a delta-group and decoded at the receiver.

// trio is one cart replicated at us-east, eu-west and ap-south.
type trio struct {
	t     *testing.T
	carts map[ReplicaID]*Cart
}

func newTrio(t *testing.T) *trio {
	return &trio{t: t, carts: map[ReplicaID]*Cart{usEast: {}, euWest: {}, apSouth: {}}}
}

// ship encodes d as a one-key delta-group and decodes it, as the wire does.
func ship(t testing.TB, d *Cart) *Cart {
	t.Helper()
	g := &Group{}
	g.AddCart("cart-1", d)
	got, err := DecodeGroup(EncodeGroup(g))
	if err != nil {
		t.Fatalf("shipping a delta: %v", err)
	}
	return got.Carts["cart-1"]
}

// op runs a mutator at region r, joins its delta there and returns the
// delta as the message r sends.
func (x *trio) op(r ReplicaID, mutate func(c *Cart) *Cart) *Cart {
	x.t.Helper()
	d := mutate(x.carts[r])
	x.carts[r].Join(d)
	return ship(x.t, d)
}

func (x *trio) add(r ReplicaID, sku string, n int64) *Cart {
	return x.op(r, func(c *Cart) *Cart { return c.Add(r, sku, n) })
}

func (x *trio) set(r ReplicaID, sku string, q int64) *Cart {
	return x.op(r, func(c *Cart) *Cart { return c.Set(r, sku, q) })
}

func (x *trio) remove(r ReplicaID, sku string) *Cart {
	return x.op(r, func(c *Cart) *Cart { return c.Remove(sku) })
}

// deliver joins messages at region r, in order.
func (x *trio) deliver(r ReplicaID, msgs ...*Cart) {
	for _, m := range msgs {
		x.carts[r].Join(m)
	}
}

// deliverAll delivers messages to every region (an origin receiving its
// own delta back is a harmless duplicate).
func (x *trio) deliverAll(msgs ...*Cart) {
	for _, r := range testReplicas {
		x.deliver(r, msgs...)
	}
}

// snapshot returns region r's state as stored bytes.
func (x *trio) snapshot(r ReplicaID) []byte { return EncodeCart(x.carts[r]) }

func requireView(t testing.TB, who string, c *Cart, want map[string]int64) {
	t.Helper()
	got := viewOf(c)
	if !maps.Equal(got, want) {
		t.Fatalf("%s sees %v, want %v", who, got, want)
	}
	for sku, q := range want {
		if c.Qty(sku) != q {
			t.Fatalf("%s: Qty(%s) = %d, want %d", who, sku, c.Qty(sku), q)
		}
	}
}

// requireConverged checks that all three regions hold the same state and
// show the wanted items.
func (x *trio) requireConverged(want map[string]int64) {
	x.t.Helper()
	ref := EncodeCart(x.carts[usEast])
	for _, r := range testReplicas {
		sameBytes(x.t, fmt.Sprintf("%s vs us-east", r), EncodeCart(x.carts[r]), ref)
		requireView(x.t, string(r), x.carts[r], want)
		checkCartInvariants(x.t, x.carts[r])
	}
}

// permutations returns every order of xs (xs is small).
func permutations[T any](xs []T) [][]T {
	if len(xs) <= 1 {
		return [][]T{slices.Clone(xs)}
	}
	var out [][]T
	for i := range xs {
		rest := slices.Concat(xs[:i], xs[i+1:])
		for _, p := range permutations(rest) {
			out = append(out, append([]T{xs[i]}, p...))
		}
	}
	return out
}

// inEveryOrder runs the history built by setup once for every order of
// the concurrent messages it returns, delivering each message in turn to
// all three regions, and checks that they converge to want.
func inEveryOrder(t *testing.T, setup func(x *trio) []*Cart, want map[string]int64) {
	t.Helper()
	probe := setup(newTrio(t))
	idx := make([]int, len(probe))
	for i := range idx {
		idx[i] = i
	}
	for _, order := range permutations(idx) {
		x := newTrio(t)
		msgs := setup(x)
		for _, i := range order {
			x.deliverAll(msgs[i])
		}
		x.requireConverged(want)
	}
}

func TestOutcome1_ConcurrentAddsOfDifferentSKUsBothPresent(t *testing.T) {
	inEveryOrder(t, func(x *trio) []*Cart {
		a := x.add(usEast, "book", 1)
		b := x.add(euWest, "cup", 2)
		// Before the exchange each region sees only its own add.
		requireView(t, "us-east before exchange", x.carts[usEast], map[string]int64{"book": 1})
		requireView(t, "eu-west before exchange", x.carts[euWest], map[string]int64{"cup": 2})
		return []*Cart{a, b}
	}, map[string]int64{"book": 1, "cup": 2})
}

func TestOutcome2_ConcurrentIncrementsNoLostUpdate(t *testing.T) {
	inEveryOrder(t, func(x *trio) []*Cart {
		x.deliverAll(x.add(apSouth, "book", 1))
		x.requireConverged(map[string]int64{"book": 1})
		a := x.add(usEast, "book", 1)
		b := x.add(euWest, "book", 1)
		requireView(t, "us-east before exchange", x.carts[usEast], map[string]int64{"book": 2})
		requireView(t, "eu-west before exchange", x.carts[euWest], map[string]int64{"book": 2})
		return []*Cart{a, b}
	}, map[string]int64{"book": 3})
}

func TestOutcome3_RemoveVsConcurrentAddAddWins(t *testing.T) {
	var old []*Cart
	inEveryOrder(t, func(x *trio) []*Cart {
		// Agreed qty 2, made of adds from two regions.
		old = []*Cart{x.add(usEast, "book", 1), x.add(apSouth, "book", 1)}
		x.deliverAll(old...)
		x.requireConverged(map[string]int64{"book": 2})
		rm := x.remove(usEast, "book")
		add := x.add(euWest, "book", 1)
		requireView(t, "us-east after its remove", x.carts[usEast], map[string]int64{})
		return []*Cart{rm, add}
	}, map[string]int64{"book": 1})

	// The removed 2 never come back, even if their adds are delivered
	// again late.
	x := newTrio(t)
	old = []*Cart{x.add(usEast, "book", 1), x.add(apSouth, "book", 1)}
	x.deliverAll(old...)
	rm, add := x.remove(usEast, "book"), x.add(euWest, "book", 1)
	x.deliverAll(add, rm)
	x.deliverAll(old...)
	x.deliverAll(add, rm, old[1], old[0])
	x.requireConverged(map[string]int64{"book": 1})
}

// TestOutcome4_RemoveIsFinal: a remove with no concurrent add is final
// everywhere, whatever the order, duplication or delay of messages, and
// after a region restarts from an older state.
func TestOutcome4_RemoveIsFinal(t *testing.T) {
	// history builds the messages: us-east adds a book and eu-west a cup,
	// us-east removes the book after seeing both, and ap-south adds a desk
	// concurrently (an unrelated sku).
	history := func(x *trio) (addBook, addCup, rmBook, addDesk *Cart) {
		addBook = x.add(usEast, "book", 1)
		addCup = x.add(euWest, "cup", 1)
		x.deliver(usEast, addCup)
		rmBook = x.remove(usEast, "book")
		addDesk = x.add(apSouth, "desk", 1)
		return
	}
	final := map[string]int64{"cup": 1, "desk": 1}

	t.Run("every order with duplicates at a new replica", func(t *testing.T) {
		x := newTrio(t)
		addBook, addCup, rmBook, addDesk := history(x)
		// Six messages: the four, plus a duplicate of the add and of the
		// remove. 720 orders.
		msgs := []*Cart{addBook, addCup, rmBook, addDesk, addBook, rmBook}
		idx := []int{0, 1, 2, 3, 4, 5}
		orders := 0
		for _, order := range permutations(idx) {
			obs := &Cart{}
			removed := false
			for _, i := range order {
				obs.Join(msgs[i])
				if msgs[i] == rmBook {
					removed = true
				}
				if removed && obs.Has("book") {
					t.Fatalf("order %v: the book reappeared after the remove was delivered", order)
				}
				checkCartInvariants(t, obs)
			}
			requireView(t, fmt.Sprintf("order %v", order), obs, final)
			sameCart(t, "every order ends in the same state", obs, joinCarts(x.carts[usEast], x.carts[euWest], x.carts[apSouth]))
			orders++
		}
		if orders != 720 {
			t.Fatalf("checked %d orders, want 720", orders)
		}
	})

	t.Run("every order at every region, with delay behind local writes", func(t *testing.T) {
		probe := newTrio(t)
		addBook, addCup, rmBook, addDesk := history(probe)
		msgs := []*Cart{addBook, addCup, rmBook, addDesk}
		for _, order := range permutations([]int{0, 1, 2, 3}) {
			x := newTrio(t)
			history(x)
			// Each region gets every message in this order, with a local
			// write of its own delaying the second half.
			for _, r := range testReplicas {
				x.deliver(r, msgs[order[0]], msgs[order[1]])
				x.deliverAll(x.add(r, "pen-"+string(r), 1))
				x.deliver(r, msgs[order[2]], msgs[order[3]], msgs[order[0]])
			}
			want := maps.Clone(final)
			for _, r := range testReplicas {
				want["pen-"+string(r)] = 1
			}
			x.requireConverged(want)
		}
	})

	t.Run("restart from an older snapshot does not resurrect", func(t *testing.T) {
		x := newTrio(t)
		addBook, addCup, rmBook, addDesk := history(x)
		x.deliverAll(addBook, addCup, addDesk)
		// eu-west and ap-south persist while the book is still present.
		euOld := x.snapshot(euWest)
		apOld := x.snapshot(apSouth)
		requireView(t, "eu-west snapshot", mustDecodeCart(t, euOld), map[string]int64{"book": 1, "cup": 1, "desk": 1})
		x.deliverAll(rmBook)
		x.requireConverged(final)

		// A region re-joins an old copy of its own state.
		x.deliver(euWest, mustDecodeCart(t, euOld))
		requireView(t, "eu-west after re-joining its old snapshot", x.carts[euWest], final)

		// ap-south restarts from its old snapshot: before anti-entropy it
		// shows its stale state, and shipping that state to the others
		// does not bring the book back anywhere.
		x.carts[apSouth] = mustDecodeCart(t, apOld)
		requireView(t, "ap-south just restarted", x.carts[apSouth], map[string]int64{"book": 1, "cup": 1, "desk": 1})
		x.deliver(usEast, mustDecodeCart(t, apOld))
		x.deliver(euWest, mustDecodeCart(t, apOld))
		requireView(t, "us-east after joining ap-south's old state", x.carts[usEast], final)
		requireView(t, "eu-west after joining ap-south's old state", x.carts[euWest], final)
		// Anti-entropy repairs ap-south.
		x.deliver(apSouth, x.carts[usEast].Clone())
		x.requireConverged(final)
		// Late duplicates of the original add change nothing.
		x.deliverAll(addBook, addBook)
		x.requireConverged(final)
	})

	t.Run("the Dynamo anomaly cannot happen", func(t *testing.T) {
		// Dynamo merged divergent carts by union of their items, so a
		// deleted item reappeared. Here us-east removes the book while
		// eu-west holds an old copy, and the versions are merged both ways.
		x := newTrio(t)
		x.deliverAll(x.add(usEast, "book", 1))
		stale := x.carts[euWest].Clone()
		rm := x.remove(usEast, "book")
		merged := joinCarts(x.carts[usEast], stale)
		requireView(t, "removed ⊔ stale", merged, map[string]int64{})
		merged = joinCarts(stale, x.carts[usEast])
		requireView(t, "stale ⊔ removed", merged, map[string]int64{})
		x.deliverAll(rm)
		x.requireConverged(map[string]int64{})
	})
}

func TestOutcome5_ConcurrentSetsHigherQuantityWins(t *testing.T) {
	for _, qs := range [][2]int64{{2, 3}, {3, 2}} {
		t.Run(fmt.Sprintf("us-east set %d, eu-west set %d", qs[0], qs[1]), func(t *testing.T) {
			inEveryOrder(t, func(x *trio) []*Cart {
				x.deliverAll(x.add(apSouth, "book", 1))
				a := x.set(usEast, "book", qs[0])
				b := x.set(euWest, "book", qs[1])
				requireView(t, "us-east before exchange", x.carts[usEast], map[string]int64{"book": qs[0]})
				return []*Cart{a, b}
			}, map[string]int64{"book": 3})
		})
	}
}

func TestOutcome6_SetVsConcurrentAddAddsOnTop(t *testing.T) {
	inEveryOrder(t, func(x *trio) []*Cart {
		x.deliverAll(x.add(apSouth, "book", 1))
		a := x.set(usEast, "book", 3)
		b := x.add(euWest, "book", 1)
		requireView(t, "us-east before exchange", x.carts[usEast], map[string]int64{"book": 3})
		requireView(t, "eu-west before exchange", x.carts[euWest], map[string]int64{"book": 2})
		return []*Cart{a, b}
	}, map[string]int64{"book": 4})
}

// TestOutcome7_EveryRegionReturnsTheSameItems runs a mixed history with a
// partition (ap-south cut off while the other two keep writing and
// exchanging), then heals it by deltas in every order of the three
// regions' batches, and by full-state anti-entropy, and checks that every
// region shows the same items and quantities.
func TestOutcome7_EveryRegionReturnsTheSameItems(t *testing.T) {
	history := func(x *trio) [3][]*Cart {
		var out [3][]*Cart
		base := []*Cart{x.add(usEast, "book", 2), x.add(euWest, "cup", 1), x.add(apSouth, "desk", 1)}
		x.deliverAll(base...)
		// Partition: ap-south is cut off.
		e1 := x.add(usEast, "book", 1)
		e2 := x.set(usEast, "cup", 5)
		w1 := x.remove(euWest, "desk")
		x.deliver(euWest, e1, e2)
		x.deliver(usEast, w1)
		w2 := x.add(euWest, "cup", 1) // after seeing set(5): qty 6
		x.deliver(usEast, w2)
		a1 := x.add(apSouth, "desk", 2) // concurrent with eu-west's remove
		a2 := x.set(apSouth, "book", 1) // concurrent with us-east's add
		a3 := x.op(apSouth, func(c *Cart) *Cart { return c.Clear() })
		a4 := x.add(apSouth, "lamp", 4)
		out[0] = []*Cart{e1, e2}
		out[1] = []*Cart{w1, w2}
		out[2] = []*Cart{a1, a2, a3, a4}
		return out
	}
	// us-east's add(book, 1) was concurrent with ap-south's set and clear,
	// eu-west's add(cup) came after the set(5) ap-south never saw, and
	// ap-south's clear removed only what it had observed.
	want := map[string]int64{"book": 1, "cup": 6, "lamp": 4}

	for _, order := range permutations([]int{0, 1, 2}) {
		x := newTrio(t)
		batches := history(x)
		for _, i := range order {
			x.deliverAll(batches[i]...)
		}
		x.requireConverged(want)
	}

	x := newTrio(t)
	history(x)
	for range 2 {
		for _, r := range testReplicas {
			for _, o := range testReplicas {
				x.carts[o].Join(mustDecodeCart(t, x.snapshot(r)))
			}
		}
	}
	x.requireConverged(want)
}
