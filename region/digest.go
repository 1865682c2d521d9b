package region

import (
	"maps"
	"strings"
	"sync"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// DefaultDigestBuckets is the number of anti-entropy digest buckets.
const DefaultDigestBuckets = 1024

// digest is the anti-entropy summary of the replicated key space (carts and
// items), kept up to date inside the store's write lock together with the
// applied context, so a snapshot of both is consistent.
type digest struct {
	mu      sync.Mutex
	buckets []uint64
	keys    []map[string]uint64 // per bucket: key → state hash
	applied crdt.Context
	// damaged holds the replicated keys left out because their stored
	// values failed their checksums, until they are written again.
	damaged map[string]struct{}
}

func newDigest(n int) *digest {
	d := &digest{buckets: make([]uint64, n), keys: make([]map[string]uint64, n), damaged: make(map[string]struct{})}
	for i := range d.keys {
		d.keys[i] = make(map[string]uint64)
	}
	return d
}

func replicated(key string) bool {
	return strings.HasPrefix(key, prefixCart) || strings.HasPrefix(key, prefixItem)
}

// set records the new state of key; the caller holds d.mu.
func (d *digest) set(key string, state []byte) {
	b := crdt.KeyBucket(key, len(d.buckets))
	h := crdt.StateHash(key, state)
	if old, ok := d.keys[b][key]; ok {
		d.buckets[b] ^= old
	}
	d.keys[b][key] = h
	d.buckets[b] ^= h
	delete(d.damaged, key)
}

// remove forgets key (its stored state is damaged); the caller holds d.mu.
func (d *digest) remove(key string) {
	b := crdt.KeyBucket(key, len(d.buckets))
	if old, ok := d.keys[b][key]; ok {
		d.buckets[b] ^= old
		delete(d.keys[b], key)
	}
}

// commit is run inside the store's write lock for every transaction of the
// node: it updates the digest and the applied context together.
func (n *Node) commitDigest(tx *store.Tx, dots *crdt.Context) {
	n.dg.mu.Lock()
	defer n.dg.mu.Unlock()
	n.dg.setAll(tx)
	if dots != nil {
		n.dg.applied.Join(dots)
	}
}

// commitDigestDot is commitDigest of the context that holds only dot.
func (n *Node) commitDigestDot(tx *store.Tx, dot crdt.Dot) {
	n.dg.mu.Lock()
	defer n.dg.mu.Unlock()
	n.dg.setAll(tx)
	n.dg.applied.Insert(dot)
}

// setAll records the new states of the replicated keys tx sets; the caller
// holds d.mu.
func (d *digest) setAll(tx *store.Tx) {
	tx.Staged(func(key string, val []byte) {
		if replicated(key) {
			d.set(key, val)
		}
	})
}

// Snapshot is the digest of the replicated key space for anti-entropy
// (Node implements the replication protocol's Storage). While a
// replicated key's stored value is damaged, the snapshot's applied context
// is empty: the state the digest describes lacks that key, so it does not
// reflect the applied context, and a peer must not adopt it.
func (n *Node) Snapshot(choose func(digest []uint64) []uint32) (*crdt.Digest, error) {
	n.dg.mu.Lock()
	defer n.dg.mu.Unlock()
	s := &crdt.Digest{Buckets: append([]uint64(nil), n.dg.buckets...), Keys: map[string]uint64{}, Counts: make([]uint32, len(n.dg.keys))}
	for b, ks := range n.dg.keys {
		s.Counts[b] = uint32(len(ks))
	}
	if len(n.dg.damaged) == 0 {
		s.Applied = n.dg.applied.Clone()
	}
	if choose != nil {
		for _, b := range choose(s.Buckets) {
			if int(b) < len(n.dg.keys) {
				maps.Copy(s.Keys, n.dg.keys[b])
			}
		}
	}
	return s, nil
}

// DigestBuckets returns the number of buckets of the anti-entropy digest
// (Options.DigestBuckets); the replication protocol uses the same.
func (n *Node) DigestBuckets() int { return n.opts.DigestBuckets }

// Read returns the stored states of replicated keys (for anti-entropy)
// and a context covering every write they show (see readObjects).
func (n *Node) Read(keys []string) (*crdt.Group, crdt.Context, error) {
	var carts, items []string
	for _, k := range keys {
		if id, ok := strings.CutPrefix(k, prefixCart); ok {
			carts = append(carts, id)
		} else if sku, ok := strings.CutPrefix(k, prefixItem); ok {
			items = append(items, sku)
		}
	}
	return n.readObjects(carts, items)
}

// buildDigest computes the digest from the store at start-up.
func (n *Node) buildDigest() error {
	n.dg = newDigest(n.opts.DigestBuckets)
	n.dg.applied = n.applied.Clone()
	for _, prefix := range []string{prefixCart, prefixItem} {
		err := n.store.Scan(prefix, func(k string, v []byte, err error) bool {
			if err != nil {
				n.dg.damaged[k] = struct{}{} // left out, so a peer's state repairs it
				return true
			}
			if prefix == prefixCart {
				if _, err := crdt.DecodeCartHead(v); err != nil { // its lines: openCarts
					n.store.MarkCorrupt(k)
					n.dg.damaged[k] = struct{}{}
					return true
				}
			} else if it, err := crdt.DecodeItem(v); err != nil {
				n.store.MarkCorrupt(k)
				n.dg.damaged[k] = struct{}{}
				return true
			} else {
				n.noteRights(k[len(prefixItem):], it)
			}
			n.dg.set(k, v)
			return true
		})
		if err != nil {
			return err
		}
	}
	return nil
}
