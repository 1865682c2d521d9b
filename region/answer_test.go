package region

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

func tokenCovers(t *testing.T, tok string, d crdt.Dot) bool {
	t.Helper()
	c, err := crdt.ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return c.Contains(d)
}

// TestRepairedStateIsCoveredByItsAnswersToken: a repair (states with no
// dots of their own) that reflects a peer's write shows that write; the
// answers that show it (a read, a write of the key) must carry a token
// covering it, until the applied context covers it and the key's extra
// context is dropped. A read of another key is not burdened with it.
func TestRepairedStateIsCoveredByItsAnswersToken(t *testing.T) {
	n := newNode(t)
	far := crdt.Dot{Replica: "eu-west", Counter: 7}
	reflects := &crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 7}}
	g := &crdt.Group{}
	g.AddCart("c", (&crdt.Cart{}).Add("eu-west", "far", 1))
	if err := n.ApplyReflecting(nil, g, reflects); err != nil {
		t.Fatal(err)
	}
	if tokenCovers(t, n.Token(), far) {
		t.Fatal("the region claimed a repair's dots")
	}
	ctx := WithAnswer(bg)
	c := must[Cart](t)(n.GetCart(ctx, "c"))
	if !cartHas(c, "far") {
		t.Fatal("the repair does not show")
	}
	if !tokenCovers(t, n.TokenFor(ctx), far) {
		t.Fatalf("a read showed the repaired write %v with a token that does not cover it", far)
	}
	ctx = WithAnswer(bg)
	must[Cart](t)(n.AddItem(ctx, "c", "mine", 1))
	if !tokenCovers(t, n.TokenFor(ctx), far) {
		t.Fatalf("a write's answer showed the repaired write %v with a token that does not cover it", far)
	}
	ctx = WithAnswer(bg)
	must[Cart](t)(n.GetCart(ctx, "other"))
	if tokenCovers(t, n.TokenFor(ctx), far) {
		t.Fatal("a read of another key carries the repair's context")
	}
	if err := n.ApplyRemote(reflects, nil); err != nil {
		t.Fatal(err)
	}
	must[Cart](t)(n.GetCart(WithAnswer(bg), "c"))
	if k := n.extra.n.Load(); k != 0 {
		t.Fatalf("%d extra contexts kept once the applied context covers them", k)
	}
}

// TestAnswerFromTheHomeIsCoveredByItsToken: an item read at its home
// (consistent) from another region shows the home's state; the answer's
// token must cover the home's token.
func TestAnswerFromTheHomeIsCoveredByItsToken(t *testing.T) {
	home := newNode(t)
	must[Item](t)(home.Restock(bg, "w", 5))
	homeDot := crdt.Dot{Replica: home.Self(), Counter: 1}
	st := newNode(t) // stands for another region: only its applied context matters
	st.opts.Home = func(string) string { return "eu-west" }
	st.opts.Forwarder = forwardTo{home.Node}
	ctx := WithAnswer(bg)
	it := must[Item](t)(st.GetItem(ctx, "w", true))
	if it.Stock != 5 {
		t.Fatalf("the home's item: %+v", it)
	}
	if tokenCovers(t, st.Token(), homeDot) {
		t.Fatal("test setup: the answering region has the home's write")
	}
	if !tokenCovers(t, st.TokenFor(ctx), homeDot) {
		t.Fatalf("the home's answer showed %v with a token that does not cover it", homeDot)
	}
}

// forwardTo forwards home requests to a node in process, as replication
// does (ServeForwarded).
type forwardTo struct{ n *Node }

func (f forwardTo) Forward(ctx context.Context, _ string, req *HomeRequest) (*HomeResponse, error) {
	return f.n.ServeForwarded(context.Background(), req), nil
}

// TestOversizedAnswerTokenStaysBounded: a join too large for a token is
// answered with its ceiling, which still covers it.
func TestOversizedAnswerTokenStaysBounded(t *testing.T) {
	n := newNode(t)
	var big crdt.Context
	rng := rand.New(rand.NewPCG(1, 2)) // gaps that do not compress away
	for k, c := 0, uint64(10); k < 8000; k++ {
		c += 2 + rng.Uint64N(1<<20)
		big.Insert(crdt.Dot{Replica: crdt.ReplicaID("eu-west"), Counter: c})
	}
	if len(big.Cloud) <= crdt.MaxTokenCloudDots && crdt.TokenFits(crdt.FormatToken(&big)) {
		t.Fatal("test setup: the context fits a token whole")
	}
	g := &crdt.Group{}
	g.AddCart("c", (&crdt.Cart{}).Add("eu-west", "far", 1))
	if err := n.ApplyReflecting(nil, g, &big); err != nil {
		t.Fatal(err)
	}
	ctx := WithAnswer(bg)
	must[Cart](t)(n.GetCart(ctx, "c"))
	tok := n.TokenFor(ctx)
	c, err := crdt.ParseToken(tok)
	if err != nil {
		t.Fatalf("the answer's token (%d characters) does not parse: %v", len(tok), err)
	}
	if !c.Covers(&big) {
		t.Fatal("the bounded token does not cover what the answer showed")
	}
}

// TestFullExtraMapCostsLittleWhileAppliedLags: while the applied context
// covers none of the repairs' contexts (a resync from an empty region),
// every key past maxExtraKeys goes to the overflow, and the map is
// checked for entries to drop once per pruneEvery such keys, not once a
// key. Every key's answers still cover what its state reflects.
func TestFullExtraMapCostsLittleWhileAppliedLags(t *testing.T) {
	n := newNode(t)
	extraKeys := maxExtraKeys + 3*pruneEvery
	reflectsOf := func(i int) *crdt.Context {
		return &crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": uint64(i + 1)}}
	}
	n.amu.Lock()
	for i := range extraKeys {
		n.noteReflects([]string{"c/" + strconv.Itoa(i)}, reflectsOf(i))
	}
	prunes := n.extra.prunes
	n.amu.Unlock()
	if want := 1 + 3*pruneEvery/pruneEvery; prunes > want {
		t.Fatalf("%d prunes of the full map for %d keys past it, want at most %d", prunes, 3*pruneEvery, want)
	}
	for _, i := range []int{0, maxExtraKeys - 1, maxExtraKeys, extraKeys - 1} {
		got := n.shownExtra("c/" + strconv.Itoa(i))
		if got == nil || !got.Covers(reflectsOf(i)) {
			t.Fatalf("key %d: answers show %v, not covering its reflects %v", i, got, reflectsOf(i))
		}
	}
}
