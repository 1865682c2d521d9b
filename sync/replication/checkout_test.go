package replication_test

import (
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentCheckoutsAcrossRegionsBuyOnce checks out one cart from all
// three regions at once, with and without keys: it is bought once, the
// others see request_in_progress or cart_empty, and the cart ends empty
// everywhere.
func TestConcurrentCheckoutsAcrossRegionsBuyOnce(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 10, "us-east/ap-south": 20, "eu-west/ap-south": 15})
	for round := range 3 {
		cart := fmt.Sprintf("race-%d", round)
		sku := fmt.Sprintf("race-sku-%d", round)
		c.mustDo("us-east", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 10})
		c.mustDo("eu-west", "POST", "/v1/carts/"+cart+"/items", map[string]any{"sku": sku, "qty": 1})
		c.waitCart(cart, sku+"=1 ")
		var wg sync.WaitGroup
		codes := make([]int, 6)
		for i := range codes {
			wg.Go(func() {
				hdr := map[string]string{}
				if i%2 == 1 {
					hdr["Idempotency-Key"] = fmt.Sprintf("k-%d-%d", round, i)
				}
				var out map[string]any
				code, _ := c.do(regions[i%3], "POST", "/v1/carts/"+cart+"/checkout", map[string]any{}, hdr, &out)
				codes[i] = code
				if code != 201 && !(code == 409 && (out["code"] == "request_in_progress" || out["code"] == "cart_empty")) {
					t.Errorf("checkout %d at %s: %d %v", i, regions[i%3], code, out)
				}
			})
		}
		wg.Wait()
		bought := 0
		for _, code := range codes {
			if code == 201 {
				bought++
			}
		}
		if bought != 1 {
			t.Fatalf("round %d: %d checkouts of one cart succeeded (%v)", round, bought, codes)
		}
		c.waitCart(cart, "")
		var it struct {
			Stock    int64 `json:"stock"`
			Reserved int64 `json:"reserved"`
		}
		c.do("eu-west", "GET", "/v1/inventory/"+sku+"?consistent=true", nil, nil, &it)
		if it.Stock != 9 || it.Reserved != 0 {
			t.Fatalf("round %d: %s after racing checkouts: %+v, want stock 9, nothing reserved", round, sku, it)
		}
	}
}
