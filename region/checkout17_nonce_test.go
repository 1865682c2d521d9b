package region

import "testing"

// TestCheckoutStepKeysDifferAcrossPlansOfOneKey: two plans of one cart and
// key (the second made after the first's record was collected) share
// their order id, and must not share the idempotency keys of their steps
// at the homes, whose records of the first plan's steps may outlive the
// coordinator's (a home's clock behind): the second's reservation would
// replay the first's committed hold and take no stock.
func TestCheckoutStepKeysDifferAcrossPlansOfOneKey(t *testing.T) {
	mk := func() *checkoutPlan {
		return &checkoutPlan{OrderID: newOrderID("c1", "k1"), Nonce: planNonce(), Lines: []OrderLine{{SKU: "s1", Qty: 1}}}
	}
	a, b := mk(), mk()
	if a.OrderID != b.OrderID {
		t.Fatalf("test setup: order ids %s and %s differ", a.OrderID, b.OrderID)
	}
	for _, step := range []string{"reserve", "commit", "release", "return"} {
		ka, _ := derived(a, step, 0)
		kb, _ := derived(b, step, 0)
		if ka == kb {
			t.Errorf("step %s: both plans use the key %q", step, ka)
		}
	}
	// A plan stored before plans drew a nonce keeps its keys.
	old := &checkoutPlan{OrderID: a.OrderID, Lines: a.Lines}
	if k, _ := derived(old, "reserve", 0); k != stepKeyPrefix+a.OrderID+"/0/reserve/s1" {
		t.Errorf("a plan without a nonce derives %q", k)
	}
}
