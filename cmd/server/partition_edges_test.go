package server

import (
	"net/http"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestReservationOfUnknownPartitionIsNotFound: an unknown reservation is
// 404 not_found (SPEC §6). In a partitioned region (partitions: 2, one
// node), an id of the partitioned form HOME:PARTITION:SEQ whose
// partition is outside the cluster's was never issued by any home, and
// its home is this region: reading, committing or releasing it is
// 404 not_found, as for an id of a partition that exists, not a 503
// that tells the client to retry.
func TestReservationOfUnknownPartitionIsNotFound(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	cfg.Partitions = 2
	r := startRegion(t, cfg, "us-east", Options{})

	// Control: a never-issued number of an existing partition.
	expectProblem(t, r.do(http.MethodGet, "/v1/reservations/us-east:1:1", ""), http.StatusNotFound, "not_found", "")

	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/reservations/us-east:2:1"},
		{http.MethodPost, "/v1/reservations/us-east:7:1/commit"},
		{http.MethodPost, "/v1/reservations/us-east:4095:1/release"},
	} {
		res := r.do(c.method, c.path, "")
		if res.status != http.StatusNotFound {
			t.Errorf("%v, want 404 not_found", res)
		}
	}
}
