package region

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/region/store"
)

// TestStoreErrorsAnsweredByWhatTheyDecided checks how a failed store
// write is answered: the write whose fsync failed may be in the file (a
// restart may find it), so it is not a 503, on which a client repeats a
// cart add at another region and could add twice; a write refused by a
// store that had already failed wrote nothing and is a 503.
func TestStoreErrorsAnsweredByWhatTheyDecided(t *testing.T) {
	n := &Node{}
	unsure := n.storeErr(fmt.Errorf("%w: fsync: input/output error", store.ErrWriteUnsure))
	if e, ok := unsure.(*Error); !ok || e.Code != CodeInternal {
		t.Errorf("a write whose fsync failed answered %v, want %s (it may have been applied)", unsure, CodeInternal)
	}
	failed := n.storeErr(store.ErrStoreFailed)
	if e, ok := failed.(*Error); !ok || e.Code != CodeUnavailable {
		t.Errorf("a write refused by a failed store answered %v, want %s (nothing was written)", failed, CodeUnavailable)
	}
}
