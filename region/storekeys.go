package region

import (
	"strings"

	"github.com/latticedb/lattice/region/store"
)

// OpenStore opens the region's store at path (":memory:" for one held in
// memory) with the region's locking of its keys (lockKey); opts.LockKey
// is ignored. NewNode refuses a store opened otherwise.
func OpenStore(path string, opts store.Options) (*store.Store, error) {
	opts.LockKey = lockKey
	opts.Checkpoint = keyApplied // openApplied's MaxMarkSince
	return store.Open(path, opts)
}

// lockKey returns the name whose lock guards a key of the region's store
// (see the store package's doc):
//
//   - a cart ("c/ID"), an item ("i/SKU") and an idempotency record
//     ("k/KEY", the saga records of keyless checkouts among them) are
//     guarded by their own names;
//   - an item's ledger ("l/SKU") by its item: the item, its ledger and
//     its reservations change together;
//   - a cart's line ("e/ID/SKU") by its cart ("c/ID", the cart's head):
//     the head and the lines change together (cartstore.go);
//   - a reservation record ("r/ID") has no lock of the store's: its sku is
//     not in its key, and it is read and written only under its item's
//     lock (a home request finds the sku first, homeLockKeys);
//   - the deltas kept for a damaged cart or item ("p/c/ID", "p/i/SKU";
//     pending.go) by the cart's or item's lock; the count of an item's
//     lost restocks ("m/lostrestocks/SKU") by its item's;
//   - the applied context ("m/applied"), the replica its marks count
//     ("m/marks") and what states reflect beyond it ("m/reflects") have
//     none either: they are written at start-up and in
//     the commit function of Node.write and ApplyReflecting, which the
//     store serialises in commit order, and read at start-up;
//   - the partition count ("m/partitions"), the homes' id ("m/homes")
//     and their epoch ("m/homesepoch") have none: each is read and
//     written once, at start-up (checkPartitionCount, checkHomes); nor
//     has the list of keys held back after damage ("m/heldback"),
//     written at start-up and once more when the region has caught up
//     (holdBackDamaged, releaseHeldBack); a
//     peer's homes ("m/peerhomes/PEER") has its own, written by the
//     replication's one goroutine (noteHomes);
//   - the reservation counter ("m/resseq") is written under n.resMu
//     (nextReservationSeq), from inside a home decision's transaction,
//     which must not take another key's lock.
func lockKey(key string) string {
	switch {
	case strings.HasPrefix(key, prefixLedger):
		return prefixItem + key[len(prefixLedger):]
	case strings.HasPrefix(key, prefixCartLine):
		id, _, _ := cartOfLineKey(key)
		return prefixCart + id
	case strings.HasPrefix(key, prefixPending):
		return lockKey(key[len(prefixPending):])
	case strings.HasPrefix(key, prefixLostRestocks):
		return prefixItem + key[len(prefixLostRestocks):]
	case strings.HasPrefix(key, prefixRes), key == keyApplied, key == keyMarks, key == keyResSeq, key == keyPartitions, key == keyHomes, key == keyHomesEpoch, key == keyHeldBack, key == keyReflects:
		return ""
	}
	return key
}
