package region

import (
	"errors"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

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
	// shared marks the buckets whose key map a snapshot holds: such a
	// map is never changed again, a write clones it first (cow). A
	// snapshot thus takes only references under mu and copies the keys
	// after letting go, so that a large snapshot does not hold up the
	// commits that update the digest.
	shared  []bool
	applied crdt.Context
	// damaged holds the replicated keys left out because their stored
	// values failed their checksums, until they are written again.
	damaged map[string]struct{}
	// heldBack holds the keys found damaged when the store opened, while
	// the region catches up (Node.holdBackDamaged). Once a peer's state
	// has repaired one, it is in the digest as it is stored, so that a
	// round with a peer whose state differs exchanges both (a key still
	// damaged stays out, so that a peer holding it sends it); it stays
	// listed in damaged, so that snapshots leave the applied context out.
	heldBack map[string]struct{}
	// heldBackAll holds back every cart and item (refused, but left in
	// the digest): the list of an earlier run was damaged.
	heldBackAll bool
}

func newDigest(n int) *digest {
	d := &digest{buckets: make([]uint64, n), keys: make([]map[string]uint64, n), shared: make([]bool, n), damaged: make(map[string]struct{})}
	for i := range d.keys {
		d.keys[i] = make(map[string]uint64)
	}
	return d
}

func replicated(key string) bool {
	return strings.HasPrefix(key, prefixCart) || strings.HasPrefix(key, prefixItem)
}

// cow makes bucket b's key map d's own before a change: a copy of it
// if a snapshot holds it. The caller holds d.mu.
func (d *digest) cow(b uint32) {
	if d.shared[b] {
		d.keys[b] = maps.Clone(d.keys[b])
		d.shared[b] = false
	}
}

// set records the new state of key; the caller holds d.mu.
func (d *digest) set(key string, state []byte) {
	b := crdt.KeyBucket(key, len(d.buckets))
	h := crdt.StateHash(key, state)
	d.cow(b)
	if old, ok := d.keys[b][key]; ok {
		d.buckets[b] ^= old
	}
	d.keys[b][key] = h
	d.buckets[b] ^= h
	delete(d.damaged, key)
}

// add records the state of key, which the digest does not hold (at
// start-up); the caller holds d.mu or is the only user.
func (d *digest) add(key string, state []byte) {
	b := crdt.KeyBucket(key, len(d.buckets))
	h := crdt.StateHash(key, state)
	d.cow(b)
	d.keys[b][key] = h
	d.buckets[b] ^= h
}

// addHashed is add of key, of bucket b and state hash h. At start-up,
// goroutines may add keys of disjoint sets of buckets at once.
func (d *digest) addHashed(b uint32, key string, h uint64) {
	d.cow(b)
	d.keys[b][key] = h
	d.buckets[b] ^= h
}

// presize makes room, at start-up, for more keys (and a few more) in
// bucket b, so that adding them does not grow its map step by step.
// Goroutines may presize distinct buckets at once.
func (d *digest) presize(b, more int) {
	if more == 0 {
		return
	}
	m := make(map[string]uint64, len(d.keys[b])+more+more/16+8)
	maps.Copy(m, d.keys[b])
	d.keys[b] = m
	d.shared[b] = false
}

// remove forgets key (its stored state is damaged); the caller holds d.mu.
func (d *digest) remove(key string) {
	b := crdt.KeyBucket(key, len(d.buckets))
	if old, ok := d.keys[b][key]; ok {
		d.cow(b)
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
			if _, held := d.heldBack[key]; held {
				// Compared with the peers' states as it is now, but the
				// snapshot's applied context stays out (Snapshot) until
				// the key is released.
				d.damaged[key] = struct{}{}
			}
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
	s := &crdt.Digest{Buckets: append([]uint64(nil), n.dg.buckets...), Keys: map[string]uint64{}, Counts: make([]uint32, len(n.dg.keys))}
	for b, ks := range n.dg.keys {
		s.Counts[b] = uint32(len(ks))
	}
	if len(n.dg.damaged) == 0 && !n.dg.heldBackAll {
		s.Applied = n.dg.applied.Clone()
	}
	var held []map[string]uint64
	if choose != nil {
		for _, b := range choose(s.Buckets) {
			if int(b) < len(n.dg.keys) {
				held = append(held, n.dg.keys[b])
				n.dg.shared[b] = true
			}
		}
	}
	n.dg.mu.Unlock()
	// The maps held are no longer changed (digest.cow): they are read
	// without the lock.
	for _, m := range held {
		maps.Copy(s.Keys, m)
	}
	return s, nil
}

// ClaimsApplied implements protocol.ApplyClaimer: false while a key is
// damaged or held back, when Snapshot claims no applied context either.
func (n *Node) ClaimsApplied() bool {
	n.dg.mu.Lock()
	defer n.dg.mu.Unlock()
	return len(n.dg.damaged) == 0 && !n.dg.heldBackAll
}

// DigestBuckets returns the number of buckets of the anti-entropy digest
// (Options.DigestBuckets); the replication protocol uses the same.
func (n *Node) DigestBuckets() int { return n.opts.DigestBuckets }

// readChunk is how many keys Read reads under one taking of their locks
// and one store view. Anti-entropy reads thousands of keys at once; read
// whole, they would hold the store's lock (and the locks of most keys)
// for the whole batch, and every local write would wait behind it.
const readChunk = 16

// A long Read pauses for readPauseFor after every readPauseAfter of
// work, and yields the processor between the chunks in between.
const (
	readPauseAfter = time.Millisecond
	readPauseFor   = 200 * time.Microsecond
)

// Read returns the stored states of replicated keys (for anti-entropy)
// and a context covering every write they show (see readObjects). It
// reads them readChunk keys at a time, letting go of the locks between
// chunks so that writes are not held up behind a large batch.
//
// Between chunks it also gives the processor to the region's requests.
// The Go scheduler preempts a goroutine only after 10 ms or more, and it
// asks the network for ready connections only when it has nothing else
// to run (or every 10 ms): on a region with one processor (GOMAXPROCS=1)
// a resync served at full speed kept it busy for hundreds of
// milliseconds at a time, and each step of a write (its request read,
// the group commit's kick, the answer) waited that long. So Read yields
// after each chunk (the goroutines ready to run go first) and, after
// each readPauseAfter of work, sleeps readPauseFor, which lets the
// scheduler poll the network when nothing else is ready. On one
// processor this bounds anti-entropy's reads to about 5/6 of it.
//
// The context it returns is the join of the chunks' own, each of which
// covers every write its chunk's states show, so the join covers every
// write the group shows (a context that covers more is still correct:
// Reflects is not a claim).
func (n *Node) Read(keys []string) (*crdt.Group, crdt.Context, error) {
	g := &crdt.Group{}
	var ctx crdt.Context
	last := time.Now()
	for i := 0; len(keys) > 0; i++ {
		if i > 0 {
			if time.Since(last) >= readPauseAfter {
				time.Sleep(readPauseFor)
				last = time.Now()
			} else {
				runtime.Gosched()
			}
		}
		chunk := keys[:min(len(keys), readChunk)]
		keys = keys[len(chunk):]
		carts, items := splitKeys(chunk)
		cg, c, err := n.readObjects(carts, items, false)
		if err != nil {
			return g, crdt.Context{}, err
		}
		// The chunk's group is this call's own: its states move over
		// rather than being copied (a key read twice reads the same state).
		if g.Len() == 0 {
			g = cg
		} else {
			for id, c := range cg.Carts {
				if g.Carts == nil {
					g.Carts = make(map[string]*crdt.Cart, len(cg.Carts))
				}
				g.Carts[id] = c
			}
			for sku, it := range cg.Items {
				if g.Items == nil {
					g.Items = make(map[string]*crdt.Item, len(cg.Items))
				}
				g.Items[sku] = it
			}
		}
		ctx.Join(&c)
	}
	return g, ctx, nil
}

// newNodeDigest makes the node's digest, empty, at start-up: openCarts
// records the carts in it, buildDigest the items.
func (n *Node) newNodeDigest() {
	n.dg = newDigest(n.opts.DigestBuckets)
	n.dg.applied = n.applied.Clone()
}

// buildDigest records the items in the digest at start-up.
func (n *Node) buildDigest() error {
	return n.store.Scan(prefixItem, func(k string, v []byte, err error) bool {
		if err != nil {
			n.dg.damaged[k] = struct{}{} // left out, so a peer's state repairs it
			return true
		}
		it, err := crdt.DecodeItem(v)
		if err != nil {
			n.store.MarkCorrupt(k)
			n.dg.damaged[k] = struct{}{}
			return true
		}
		n.noteRights(k[len(prefixItem):], it)
		n.dg.add(k, v)
		return true
	})
}

// splitKeys returns the cart ids and skus of keys (others are left out).
func splitKeys(keys []string) (carts, items []string) {
	for _, k := range keys {
		if id, ok := strings.CutPrefix(k, prefixCart); ok {
			carts = append(carts, id)
		} else if sku, ok := strings.CutPrefix(k, prefixItem); ok {
			items = append(items, sku)
		}
	}
	return carts, items
}

// holdBackDamaged holds back the keys found damaged when the store opened
// (see digest.heldBack) while the region catches up, which such a store
// does (store.Open): the first peer's state that repairs one may be older
// than this region's own last writes another peer holds, and a read of it
// would not show them (a read-your-writes token would be served without
// its write). Until every peer's round has joined its state, a held-back
// cart refuses reads and writes and a held-back item refuses local reads,
// as damaged values do (503 unavailable); releaseHeldBack ends it.
func (n *Node) holdBackDamaged() error {
	if !n.store.CatchingUp() || len(n.opts.PeerRegions) == 0 {
		// A region alone has no peer to repair from: its damaged keys
		// stay refused until it is restored from a backup.
		return nil
	}
	held := make(map[string]struct{})
	n.dg.mu.Lock()
	for k := range n.dg.damaged {
		held[k] = struct{}{}
	}
	n.dg.mu.Unlock()
	for _, k := range n.store.Corrupt() {
		// Deltas kept aside for a damaged key, damaged in turn: the key
		// lost writes it claimed.
		if key, ok := strings.CutPrefix(k, prefixPending); ok && replicated(key) {
			held[key] = struct{}{}
			if id, ok := cutCartKey(key); ok {
				n.noteCartDamaged(id)
			}
		}
	}
	// Held back by a run that stopped before it caught up: whole now (a
	// first peer's state repaired them), but not yet joined with every
	// peer's.
	var stored []byte
	err := n.store.View([]string{keyHeldBack}, func(r store.Reader) error {
		b, _, err := r.Get(keyHeldBack)
		stored = b
		return err
	})
	rewrite := false
	if errors.Is(err, store.ErrCorrupt) {
		// The list of an earlier run is lost, and with it which keys a
		// first peer's older state may have repaired since: every cart
		// and item is held back (refused, but left in the digest, where
		// any difference from a peer's state shows) until the region
		// has caught up. The list is written anew.
		n.log.Error("the list of keys held back after damage is damaged; every cart and item is held back until the region has caught up", "err", err)
		stored, err, rewrite = nil, nil, true
	}
	if err != nil {
		return err
	}
	// Keys with deltas kept aside (pending.go) were damaged or held back
	// when those came, and still are: the release joins what is kept
	// (applyCart takes it for a cart noted damaged). The list names them,
	// but a damaged list is lost: they are held back all the same.
	var kept []string
	if err := n.store.Scan(prefixPending, func(k string, v []byte, err error) bool {
		if err == nil && len(v) > 0 {
			kept = append(kept, k[len(prefixPending):])
		}
		return true
	}); err != nil {
		return err
	}
	for _, k := range append(strings.Split(string(stored), "\n"), kept...) {
		if k == heldBackEverything {
			rewrite = true // held back as when the list was found damaged
			continue
		}
		if _, ok := held[k]; ok || !replicated(k) {
			continue
		}
		held[k] = struct{}{}
		n.dg.mu.Lock()
		n.dg.damaged[k] = struct{}{}
		n.dg.mu.Unlock()
		if id, ok := cutCartKey(k); ok {
			n.carts.mu.Lock()
			n.carts.damaged[id] = struct{}{}
			n.carts.mu.Unlock()
		}
	}
	keys := slices.Sorted(maps.Keys(held))
	if rewrite {
		keys = append(keys, heldBackEverything) // across restarts too
	}
	list := strings.Join(keys, "\n")
	if list != string(stored) {
		if err := n.store.Update([]string{keyHeldBack}, func(tx *store.Tx) error {
			tx.Set(keyHeldBack, []byte(list))
			return nil
		}); err != nil {
			return err
		}
	}
	if len(held) == 0 && !rewrite {
		return nil
	}
	n.dg.mu.Lock()
	n.dg.heldBack = held
	n.dg.heldBackAll = rewrite
	n.dg.mu.Unlock()
	n.log.Warn("damaged keys are refused until every peer has sent its state of them", "keys", len(held))
	return nil
}

// isHeldBack reports whether key is held back (holdBackDamaged).
func (n *Node) isHeldBack(key string) bool {
	n.dg.mu.Lock()
	defer n.dg.mu.Unlock()
	_, ok := n.dg.heldBack[key]
	return ok || n.dg.heldBackAll && replicated(key)
}

// heldBackErr returns the error a read or write of a held-back key gets
// (as a damaged value's: 503 unavailable), nil for other keys.
func (n *Node) heldBackErr(key string) error {
	if n.isHeldBack(key) {
		return &store.CorruptError{Key: key}
	}
	return nil
}

// releaseHeldBack ends holdBackDamaged once the region has caught up: every
// peer has completed a round, and sent its state of each held-back key it
// holds. A key that none held (still damaged) is rewritten: a cart with
// the entries of its lines that read whole (salvageCart), an item empty;
// what the damaged values held had never left this region, and is lost. The others go back into the digest as they are stored. It works
// in batches of releaseBatch keys (one transaction each); a key whose
// batch fails stays held back, and the next completed round tries again.
func (n *Node) releaseHeldBack() error {
	n.dg.mu.Lock()
	keys, all := slices.Sorted(maps.Keys(n.dg.heldBack)), n.dg.heldBackAll
	n.dg.mu.Unlock()
	if len(keys) == 0 && !all {
		return nil
	}
	released := len(keys)
	for len(keys) > 0 {
		batch := keys[:min(len(keys), releaseBatch)]
		keys = keys[len(batch):]
		empty := &crdt.Group{}
		for _, key := range batch {
			if id, ok := cutCartKey(key); ok {
				empty.AddCart(id, n.salvageCart(id))
			} else if sku, ok := strings.CutPrefix(key, prefixItem); ok {
				empty.AddItem(sku, &crdt.Item{})
			}
		}
		// Whole states (empty dots): a damaged key takes them, a whole
		// one joins nothing new.
		//
		// The keys leave the held-back ones once the apply holds their
		// locks: a write waiting for one then finds the deltas kept
		// aside for it joined (applyCart takes them), and the apply's
		// writes go into the digest as any write's.
		release := func() {
			n.dg.mu.Lock()
			for _, k := range batch {
				delete(n.dg.heldBack, k)
			}
			n.dg.mu.Unlock()
		}
		if err := n.applyGroup(&crdt.Context{}, empty, &crdt.Context{}, true, release); err != nil {
			n.dg.mu.Lock()
			if n.dg.heldBack == nil {
				n.dg.heldBack = make(map[string]struct{})
			}
			for _, k := range batch {
				n.dg.heldBack[k] = struct{}{}
			}
			n.dg.mu.Unlock()
			n.log.Error("could not release the damaged keys held back while catching up", "err", err)
			return err
		}
		for _, key := range batch {
			_ = n.store.View([]string{key}, func(r store.Reader) error {
				b, ok, err := r.Get(key)
				if err == nil && ok {
					n.store.ClearDamaged(key)
					n.dg.mu.Lock()
					n.dg.set(key, b)
					n.dg.mu.Unlock()
				}
				return nil
			})
		}
	}
	n.dg.mu.Lock()
	n.dg.heldBack, n.dg.heldBackAll = nil, false
	n.dg.mu.Unlock()
	if err := n.store.Update([]string{keyHeldBack}, func(tx *store.Tx) error {
		tx.Set(keyHeldBack, []byte{})
		return nil
	}); err != nil {
		n.log.Error("could not record that the damaged keys held back are served again", "err", err)
		return err
	}
	n.log.Info("the damaged keys held back while catching up are served again", "keys", released)
	return nil
}

// salvageCart returns the entries of cart id's lines that read whole, as a
// cart whose context holds their dots alone: what releaseHeldBack keeps of
// a cart no peer sent. Joined, it adds those entries and removes nothing
// (a peer that has seen one of them removed drops it again when the
// states meet). A cart that reads whole gives its own entries, which a
// join leaves as they are.
func (n *Node) salvageCart(id string) *crdt.Cart {
	c := &crdt.Cart{}
	_ = n.store.Scan(cartLinesPrefix(id), func(k string, v []byte, err error) bool {
		_, sku, ok := cartOfLineKey(k)
		if err != nil || !ok || len(v) == 0 {
			return true // damaged or emptied: nothing to keep
		}
		got, es, err := crdt.DecodeCartLineOf(v, sku)
		if err != nil || got != sku {
			return true
		}
		for d, l := range es {
			if c.Entries == nil {
				c.Entries = make(map[crdt.Dot]crdt.Line)
			}
			if len(c.Entries) >= crdt.MaxStoredCartEntries {
				return false
			}
			c.Entries[d] = l
			c.Ctx.Insert(d)
		}
		return true
	})
	return c
}

// heldBackEverything, a line of the stored list of held-back keys
// (keyHeldBack), says that every cart and item is held back (heldBackAll):
// no key has this name.
const heldBackEverything = "*"

// releaseBatch is how many held-back keys releaseHeldBack writes in one
// transaction.
const releaseBatch = 256
