package server

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// metricValue returns the value of the unlabelled sample name in a
// Prometheus text exposition (0 when absent).
func metricValue(t *testing.T, body []byte, name string) float64 {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		// The sample may carry the region label the API adds.
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if metric != name && !strings.HasPrefix(metric, name+"{") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

// TestForwardFailuresAreCountedAmongForwards checks the forwarding
// metrics of docs/operations.md (Monitoring): lattice_http_forwarded_total
// counts the requests a node of a partitioned region forwarded to the
// node owning their partition, and lattice_http_forward_failures_total
// counts, "of those", the ones whose owner could not be reached or did
// not answer. A forward that failed is therefore counted by both: the
// failures are never more than the forwards, and a dashboard's failure
// ratio (failures / forwarded) stays within 0..1.
func TestForwardFailuresAreCountedAmongForwards(t *testing.T) {
	n1, n2 := d8TwoNodes(t)
	cart1 := d8KeyOf(t, "fm-c", 1) // owned by n2

	// One forward that the owner answers.
	n1.ok(200, "GET", "/v1/carts/"+cart1, "")

	// The owner stops: one forward that finds it unreachable.
	if err := n2.srv.Close(); err != nil {
		t.Fatal(err)
	}
	expectProblem(t, n1.do("GET", "/v1/carts/"+cart1, ""), 503, "partition_unavailable", "")

	res := n1.do("GET", "/metrics", "")
	if res.status != 200 {
		t.Fatalf("metrics of n1: %v", res)
	}
	forwarded := metricValue(t, res.body, "lattice_http_forwarded_total")
	failures := metricValue(t, res.body, "lattice_http_forward_failures_total")
	if failures != 1 {
		t.Fatalf("lattice_http_forward_failures_total = %v after one forward to a stopped owner, want 1", failures)
	}
	if forwarded != 2 {
		t.Errorf("lattice_http_forwarded_total = %v after two requests forwarded (one answered, one whose owner was down), want 2: "+
			"docs/operations.md counts the failures \"of those\" forwarded, but a failed forward is left out of lattice_http_forwarded_total "+
			"(failures %v, so failures/forwarded = %v)", forwarded, failures, failures/forwarded)
	}
}
