package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// devCall sends one request and fails the test unless it is answered
// with status want.
func devCall(t *testing.T, a *api, want int, method, path, body string, header ...string) []byte {
	t.Helper()
	status, _, b, err := a.call(method, path, body, header...)
	if err != nil || status != want {
		t.Fatalf("%s %s %s at %s: %d %s %v, want %d", method, path, body, a.base, status, b, err, want)
	}
	return b
}

// devCartQty returns the cart's items at a region as sku → qty (nil when
// the read fails).
func devCartQty(a *api, cart string) map[string]int {
	status, _, b, err := a.call("GET", "/v1/carts/"+cart, "")
	if err != nil || status != 200 {
		return nil
	}
	var c struct {
		Items []struct {
			SKU string `json:"sku"`
			Qty int    `json:"qty"`
		} `json:"items"`
	}
	if json.Unmarshal(b, &c) != nil {
		return nil
	}
	m := map[string]int{}
	for _, it := range c.Items {
		m[it.SKU] = it.Qty
	}
	return m
}

func sameQty(a, b map[string]int) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// waitCartEverywhere waits until every region shows want for the cart,
// and reports what each showed if they do not within 30 s.
func waitCartEverywhere(t *testing.T, regions map[string]*api, cart string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := true
		for _, a := range regions {
			if !sameQty(devCartQty(a, cart), want) {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for name, a := range regions {
				got = append(got, fmt.Sprintf("%s=%v", name, devCartQty(a, cart)))
			}
			t.Fatalf("cart %s: want %v at every region within 30 s, got %s", cart, want, strings.Join(got, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func devControl(t *testing.T, a *api, control, region string) {
	t.Helper()
	devCall(t, a, 200, "POST", "/console/dev/"+control, fmt.Sprintf(`{"region":%q}`, region), "Content-Type", "application/json")
}

// TestCartOutcomesAcrossRealRegions checks the required outcomes of SPEC
// §2 through the REST API of a running three-region cluster (real QUIC
// between regions): eu-west is cut off, an operation is made at us-east
// and another at eu-west, each unseen by the other, then the cut heals
// and every region must show the outcome the SPEC requires.
func TestCartOutcomesAcrossRealRegions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-region cluster; skipped under -short")
	}
	regions := startDevInProcess(t)
	ue, ew := regions["us-east"], regions["eu-west"]
	type op struct{ method, path, body string }
	cases := []struct {
		name   string
		before []op // at us-east, agreed everywhere before the cut
		atUE   op
		atEW   op
		want   map[string]int
	}{
		{"concurrent adds of different skus", nil,
			op{"POST", "/items", `{"sku":"a","qty":1}`}, op{"POST", "/items", `{"sku":"b","qty":1}`},
			map[string]int{"a": 1, "b": 1}},
		{"concurrent adds of one sku from qty 1", []op{{"POST", "/items", `{"sku":"x","qty":1}`}},
			op{"POST", "/items", `{"sku":"x","qty":1}`}, op{"POST", "/items", `{"sku":"x","qty":1}`},
			map[string]int{"x": 3}},
		{"remove concurrent with add from qty 2", []op{{"POST", "/items", `{"sku":"x","qty":2}`}},
			op{"DELETE", "/items/x", ""}, op{"POST", "/items", `{"sku":"x","qty":1}`},
			map[string]int{"x": 1}},
		{"set 2 concurrent with set 3", []op{{"POST", "/items", `{"sku":"x","qty":5}`}},
			op{"PUT", "/items/x", `{"qty":2}`}, op{"PUT", "/items/x", `{"qty":3}`},
			map[string]int{"x": 3}},
		{"set 3 concurrent with add 1", []op{{"POST", "/items", `{"sku":"x","qty":5}`}},
			op{"PUT", "/items/x", `{"qty":3}`}, op{"POST", "/items", `{"sku":"x","qty":1}`},
			map[string]int{"x": 4}},
		{"clear concurrent with add of another sku", []op{{"POST", "/items", `{"sku":"x","qty":2}`}},
			op{"DELETE", "", ""}, op{"POST", "/items", `{"sku":"y","qty":1}`},
			map[string]int{"y": 1}},
		{"set 0 concurrent with add 1 from qty 2", []op{{"POST", "/items", `{"sku":"x","qty":2}`}},
			op{"PUT", "/items/x", `{"qty":0}`}, op{"POST", "/items", `{"sku":"x","qty":1}`},
			map[string]int{"x": 1}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cart := fmt.Sprintf("sem-%d", i)
			base := "/v1/carts/" + cart
			agreed := map[string]int{}
			for _, o := range tc.before {
				devCall(t, ue, 200, o.method, base+o.path, o.body)
			}
			if len(tc.before) > 0 {
				agreed = devCartQty(ue, cart)
			}
			waitCartEverywhere(t, regions, cart, agreed)
			devControl(t, ue, "cut", "eu-west")
			devCall(t, ue, 200, tc.atUE.method, base+tc.atUE.path, tc.atUE.body)
			devCall(t, ew, 200, tc.atEW.method, base+tc.atEW.path, tc.atEW.body)
			if sameQty(devCartQty(ue, cart), tc.want) && sameQty(devCartQty(ew, cart), tc.want) {
				t.Fatalf("us-east and eu-west both show %v while eu-west is cut off: the operations were not concurrent", tc.want)
			}
			devControl(t, ue, "heal", "eu-west")
			waitCartEverywhere(t, regions, cart, tc.want)
		})
	}
}

// TestCartFullOverHTTP fills a cart to the 1,000 distinct skus of SPEC §6
// through a running region: one more distinct sku, by add or by set, is
// 422 cart_full and writes nothing, while the skus already in the cart
// can still be changed and removed.
func TestCartFullOverHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-region cluster; skipped under -short")
	}
	regions := startDevInProcess(t)
	ue := regions["us-east"]
	const cart = "/v1/carts/full"
	for i := range 1000 {
		devCall(t, ue, 200, "POST", cart+"/items", fmt.Sprintf(`{"sku":"s%04d","qty":1}`, i))
	}
	for _, o := range []struct{ method, path, body string }{
		{"POST", "/items", `{"sku":"extra","qty":1}`},
		{"PUT", "/items/extra", `{"qty":2}`},
	} {
		b := devCall(t, ue, 422, o.method, cart+o.path, o.body)
		if !strings.Contains(string(b), `"code":"cart_full"`) {
			t.Errorf("%s %s on a full cart: %s, want code cart_full", o.method, o.path, b)
		}
	}
	if got := devCartQty(ue, "full"); len(got) != 1000 || got["extra"] != 0 {
		t.Fatalf("after the refused writes the cart has %d skus (extra=%d), want 1000 without extra", len(got), got["extra"])
	}
	devCall(t, ue, 200, "POST", cart+"/items", `{"sku":"s0000","qty":1}`)
	devCall(t, ue, 200, "PUT", cart+"/items/s0001", `{"qty":7}`)
	devCall(t, ue, 200, "PUT", cart+"/items/extra", `{"qty":0}`)
	devCall(t, ue, 200, "DELETE", cart+"/items/s0002", "")
	devCall(t, ue, 200, "POST", cart+"/items", `{"sku":"extra","qty":1}`)
	got := devCartQty(ue, "full")
	if len(got) != 1000 || got["s0000"] != 2 || got["s0001"] != 7 || got["extra"] != 1 || got["s0002"] != 0 {
		t.Fatalf("cart after changes: %d skus, s0000=%d s0001=%d extra=%d s0002=%d; want 1000, 2, 7, 1, 0",
			len(got), got["s0000"], got["s0001"], got["extra"], got["s0002"])
	}
}
