package replication_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// removedDot has the wire form of the entries a forwarded checkout's
// answer lists (region.HomeResponse.Removed): [replica id, counter].
type removedDot struct {
	_ struct{} `cbor:",toarray"`
	R string
	C uint64
}

// checkoutAnswer has the wire form of region.HomeResponse's answer to a
// forwarded checkout.
type checkoutAnswer struct {
	Order   *region.Order `cbor:"4,keyasint,omitempty"`
	Removed []removedDot  `cbor:"5,keyasint,omitempty"`
}

// TestForwardedCheckoutAnswerOfLegalCartDecodes: a checkout answered by a
// region that does not coordinate the cart is decided at the coordinator,
// whose answer (the order and every cart entry it bought) comes back as a
// call's answer, decoded within MaxCallBytes. Take four regions with
// names of 63 characters (the longest a region name may be), each in a
// later incarnation (a 12-digit incarnation number, so its counters
// and reservation numbers start at K × 2²⁰), each filling the cart before it sees the others'
// adds: min(4,096, 16,384 / 4) = 4,096 entries over 1,000 skus of its own
// of 128 characters, each line far below the per-line limit
// ⌊524,288 / ((63 + 45) × 4)⌋ = 1,213. Every write was accepted, so the
// cart is legal, and its checkout must answer with the order; an answer
// the forwarding region refuses turns a checkout the coordinator made
// into 503 home_unavailable, and its retries with the same key replay the
// same answer.
func TestForwardedCheckoutAnswerOfLegalCartDecodes(t *testing.T) {
	const regions = 4
	perRegion := min(region.MaxCartEntries, crdt.JoinCartEntries/regions)
	var names []string
	for i := range regions {
		p := fmt.Sprintf("region-%d-", i)
		names = append(names, p+strings.Repeat("a", certs.MaxRegionNameLen-len(p)))
	}
	order := &region.Order{OrderID: "o-" + strings.Repeat("0", 24), CartID: strings.Repeat("c", crdt.MaxIDLen)}
	var removed []removedDot
	for i, name := range names {
		replica := string(crdt.Incarnation(name, 179_600_000_000))
		first := uint64(179_600_000_000) << 20
		for s := range region.MaxCartSKUs {
			p := fmt.Sprintf("r%d-sku-%04d-", i, s)
			order.Lines = append(order.Lines, region.OrderLine{
				SKU:           p + strings.Repeat("x", crdt.MaxIDLen-len(p)),
				Qty:           int64(perRegion / region.MaxCartSKUs),
				ReservationID: name + ":" + strconv.FormatUint(first+uint64(s)+1, 36),
				Home:          name,
			})
		}
		for k := range perRegion {
			removed = append(removed, removedDot{R: replica, C: first + uint64(k)})
		}
	}
	b, err := crdt.Marshal(&checkoutAnswer{Order: order, Removed: removed})
	if err != nil {
		t.Fatal(err)
	}
	var resp region.HomeResponse
	if err := crdt.UnmarshalCarrier(b, &resp, replication.MaxCallBytes); err != nil {
		t.Fatalf("the answer to a forwarded checkout of a legal cart (%d lines, %d entries: %d bytes) is refused: %v",
			len(order.Lines), len(removed), len(b), err)
	}
	if resp.Order == nil || len(resp.Order.Lines) != len(order.Lines) || len(resp.Removed) != len(removed) {
		t.Fatalf("the answer decoded with %v and %d entries", resp.Order != nil, len(resp.Removed))
	}
}
