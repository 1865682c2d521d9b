package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
)

// TestTemporaryFalseWhenAddMayHaveApplied checks Problem.Temporary on a
// 503 partition_unanswered answered to an add. docs/api.md says of that
// code "it may have been applied" and that an add is not to be repeated
// after it; Temporary's contract is "a 503 that decided nothing (or, for
// a keyed request, may be retried with its key)". An add is not keyed
// and this 503 may have decided something, so Temporary must be false:
// a caller that retries what is Temporary would otherwise add the units
// twice, which the client itself is careful never to do.
func TestTemporaryFalseWhenAddMayHaveApplied(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hits.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"urn:lattice:problem:partition_unanswered","title":"Partition did not answer","status":503,`+
			`"detail":"the node owning partition 3 was sent the request but its answer did not come back: it may have been applied","code":"partition_unanswered"}`)
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 3, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.AddItem(ctxT(t, 10*time.Second), "c1", "book", 1)
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != "partition_unanswered" {
		t.Fatalf("AddItem answered 503 partition_unanswered: err %v, want that *client.Problem", err)
	}
	if n := hits.Load(); n != 1 {
		t.Fatalf("the add was sent %d times, want once", n)
	}
	if p.Temporary() {
		t.Errorf("Problem.Temporary() = true for a partition_unanswered add (it may have been applied); want false, as documented for a 503 that may have decided something")
	}
}

// TestQuorumStockReadWithConsistentSeesAcknowledgedWrite checks SPEC §12
// and docs/api.md "Write and read concerns" for GET /v1/inventory/{sku}
// with both ?quorum= and ?consistent=true, a combination the API
// accepts: with W + Q > R, a quorum read sees every write acknowledged
// with W before it began. A restock at ap-south acknowledged by two
// regions (ap-south, eu-west) is read at eu-west with quorum 2: the
// region joins its state with another's, then answers the item as the
// sku's home (us-east, far from ap-south, not yet reached by the
// restock) has it, so the answer misses the acknowledged restock.
func TestQuorumStockReadWithConsistentSeesAcknowledgedWrite(t *testing.T) {
	// ap-south answers eu-west's quorum read first (2 ms against 20 ms
	// for us-east), so the read joins eu-west's state with ap-south's
	// and repairs neither; the restock takes 800 ms to reach us-east.
	c := newCluster(t, map[string]int{"us-east/eu-west": 20, "eu-west/ap-south": 2, "us-east/ap-south": 800})
	ctx := ctxT(t, 60*time.Second)
	sku := c.skuAt("qc", "us-east")
	south := c.client(client.Options{MaxAttempts: 1}, "ap-south")
	west := c.client(client.Options{MaxAttempts: 1}, "eu-west")
	if _, err := south.Restock(client.WithReplicas(ctx, client.Regions(2)), sku, 5); err != nil {
		t.Fatalf("restock with Lattice-Replicas 2 at ap-south: %v", err)
	}
	// Acknowledged by 2 of 3 regions: a read of quorum 2 (2 + 2 > 3)
	// must see it, from any region, with or without consistent=true.
	it, err := west.Item(client.WithQuorum(ctx, client.Regions(2)), sku, true)
	if err != nil {
		t.Fatalf("quorum 2 consistent read at eu-west: %v", err)
	}
	plain, err := west.Item(client.WithQuorum(ctx, client.Regions(2)), sku, false)
	if err != nil {
		t.Fatalf("quorum 2 read at eu-west: %v", err)
	}
	if it.Stock != 5 {
		t.Errorf("GET /v1/inventory/%s?consistent=true&quorum=2 at eu-west after a restock of 5 acknowledged by 2 of 3 regions: stock %d (the same read without consistent: %d); want 5", sku, it.Stock, plain.Stock)
	}
}

// TestConsistentStockReadSeesOwnRestock checks read-your-writes (SPEC
// §5) for GET /v1/inventory/{sku}?consistent=true: a client restocks a
// sku at ap-south, then reads it with consistent=true at eu-west,
// sending the token of the restock. eu-west waits until it has applied
// the restock (5 ms away), then answers the item as the sku's home
// (us-east, 5 ms from eu-west but 800 ms from ap-south) has it, without
// the home waiting for what the token covers: the client does not see
// the units it just added, although a plain read at eu-west with the
// same token does.
func TestConsistentStockReadSeesOwnRestock(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "eu-west/ap-south": 5, "us-east/ap-south": 800})
	ctx := ctxT(t, 60*time.Second)
	sku := c.skuAt("ryw", "us-east")
	south := c.client(client.Options{MaxAttempts: 1}, "ap-south")
	west := south.Prefer(c.url("eu-west")) // shares the causal token
	if _, err := south.Restock(ctx, sku, 5); err != nil {
		t.Fatalf("restock at ap-south: %v", err)
	}
	it, err := west.Item(ctx, sku, true)
	if err != nil {
		t.Fatalf("consistent read at eu-west: %v", err)
	}
	plain, err := west.Item(ctx, sku, false)
	if err != nil {
		t.Fatalf("read at eu-west: %v", err)
	}
	if it.Stock != 5 {
		t.Errorf("after a restock of 5 at ap-south, GET /v1/inventory/%s?consistent=true at eu-west with the restock's Lattice-Token: stock %d (a plain read there with the same token: %d); want 5 (read-your-writes)", sku, it.Stock, plain.Stock)
	}
}
