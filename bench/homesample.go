package bench

import (
	"context"
	"net/url"
	"slices"
	"time"

	"github.com/latticedb/lattice/region"
)

// HomeSampleInterval is the time between two reads of a hot sku at its
// home while the workload runs (sampleHomes).
const HomeSampleInterval = 50 * time.Millisecond

// sampleHomes reads every hot sku of skus at its home (?consistent=true,
// answered from the home's own ledger) every HomeSampleInterval until ctx
// ends, and returns the most units by which what a home showed held and
// granted exceeded its stock in one answer. At a home, held + rights out
// ≤ stock holds at every instant (its decisions keep it so; a restock or
// a region's use of rights only adds to the room): a sample past it is an
// oversell in force, which the checks of the final state can miss once
// the hold is released. Failed reads are skipped.
func sampleHomes(ctx context.Context, cl *client, names []string, skus []string, homeOf func(string) string) int64 {
	var worst int64
	tick := time.NewTicker(HomeSampleInterval)
	defer tick.Stop()
	for {
		for _, sku := range skus {
			h := slices.Index(names, homeOf(sku))
			if h < 0 {
				continue
			}
			var it region.Item
			if err := cl.get(ctx, h, "/v1/inventory/"+url.PathEscape(sku)+"?consistent=true", &it); err != nil {
				continue
			}
			st := itemState(it)
			worst = max(worst, st.Reserved+st.Granted-st.Stock)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return worst
		}
	}
}
