package region

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// Carts are stored split (see crdt.CartHead), so that an operation costs
// in proportion to what it changes, not to the cart:
//
//   - "c/ID" holds the cart's head: its causal context, how many entries
//     and lines it has and the XOR of its entries' hashes. It is the
//     cart's replicated key: the anti-entropy digest hashes the head
//     (crdt.StateHash of its encoding), which is a function of the cart's
//     state alone, so regions holding the same cart have the same hash.
//   - "e/ID/SKU" holds the line of SKU: its entries (crdt.AppendCartLine).
//     An empty value is a line with no entries left, deleted in the
//     background (a store transaction may not both set keys and delete
//     one); it reads as absent. Its lock is the cart's (lockKey).
//
// One logical write is still one store transaction: the head and the lines
// it changes. An add, set or remove of a sku reads the head and the sku's
// line and writes the two; a clear, a checkout's removal and a remote
// delta that removes entries of other lines (its context holds dots its
// entries do not) read every line and write those that change; a remote
// add reads and writes only its own lines. A read of the cart lists its
// lines (Store.Scan, under the cart's lock) and checks them against the
// head: entry and line counts and entry hash. A damaged or inconsistent
// line makes the whole cart damaged: refused, left out of the digest and
// repaired from a peer.
//
// Files written before carts were split hold each cart whole under
// "c/ID"; NewNode converts them on open (openCarts).
const prefixCartLine = "e/"

func cartLinesPrefix(id string) string { return prefixCartLine + id + "/" }

func cartLineKey(id, sku string) string { return prefixCartLine + id + "/" + sku }

// cartOfLineKey returns the cart id and sku of a line key.
func cartOfLineKey(key string) (id, sku string, ok bool) {
	rest, ok := strings.CutPrefix(key, prefixCartLine)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// lister lists keys with their checked values (store.Store.Scan).
type lister interface {
	Scan(prefix string, fn func(key string, val []byte, err error) bool) error
}

// cartReader is a transaction's reader that also lists a cart's lines,
// with the store's Scan. Scan shows committed values without taking
// locks; the caller holds the cart's lock, which guards its lines, so the
// lines it lists are the cart's as of the transaction's start. A view's
// reader lists keys itself, from the view's snapshot.
type cartReader struct {
	store.Reader
	list lister
}

func (r cartReader) Scan(prefix string, fn func(key string, val []byte, err error) bool) error {
	return r.list.Scan(prefix, fn)
}

func (n *Node) cartReader(r store.Reader) store.Reader {
	if _, ok := r.(lister); ok {
		return r
	}
	return cartReader{r, n.store}
}

// cartStore is the node's state of its split carts.
type cartStore struct {
	mu sync.Mutex
	// damaged holds the ids of carts found damaged (a line failed its
	// checksum or disagrees with the head) until a repair rewrites them.
	damaged map[string]struct{}
	// blank holds the line keys left empty, to delete.
	blank map[string]struct{}
	kick  chan struct{}
}

func (s *cartStore) isDamaged(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.damaged[id]
	return ok
}

// cartPart is a stored cart as a write loaded it: its head, the lines it
// read (a sku without entries has a nil map), and, when it read every
// line, the keys of the damaged ones.
type cartPart struct {
	id       string
	head     crdt.CartHead
	headRaw  []byte
	lines    map[string]map[crdt.Dot]crdt.Line
	all      bool
	damaged  []string // line keys whose values failed their checksums
	repaired bool     // the cart was damaged: its next save rewrites it whole
}

func corruptCart(id string) error { return &store.CorruptError{Key: prefixCart + id} }

// loadCart reads the whole cart id, for a read that does not write it
// back; r must list keys (a cartReader). A damaged cart reads as empty
// with a *store.CorruptError for its key. It checks what loadCartLines
// checks (every line well formed, every entry in the head's context, the
// head's counts and entry hash) but builds only the cart: the entries go
// straight into one map, and the cart takes the decoded head's context.
func loadCart(r store.Reader, id string) (*crdt.Cart, error) {
	l, ok := r.(lister)
	if !ok {
		return &crdt.Cart{}, errors.New("region: reading a whole cart needs a reader that lists keys")
	}
	head := &crdt.CartHead{}
	b, ok, err := r.Get(prefixCart + id)
	switch {
	case err != nil && !errors.Is(err, store.ErrCorrupt):
		return &crdt.Cart{}, err
	case err != nil:
		return &crdt.Cart{}, corruptCart(id)
	case ok:
		if head, err = crdt.DecodeCartHead(b); err != nil {
			return &crdt.Cart{}, corruptCart(id)
		}
	}
	c := &crdt.Cart{Ctx: head.Ctx}
	if head.Entries > 0 {
		c.Entries = make(map[crdt.Dot]crdt.Line, min(head.Entries, crdt.MaxCartEntries))
	}
	var (
		entries, lines int
		sum            uint64
		bad            bool
		cache          crdt.ReplicaCache
	)
	prefix := cartLinesPrefix(id)
	visit := func(d crdt.Dot, ln crdt.Line) {
		if !head.Ctx.Contains(d) {
			bad = true
		}
		if c.Entries == nil {
			c.Entries = make(map[crdt.Dot]crdt.Line, 2)
		}
		c.Entries[d] = ln
		entries++
		sum ^= crdt.EntryHash(d, ln)
	}
	err = l.Scan(prefix, func(k string, v []byte, err error) bool {
		if err != nil {
			bad = true
			return false
		}
		if len(v) == 0 {
			return true
		}
		sku := k[len(prefix):]
		got, err := crdt.VisitCartLineFrom(v, sku, &cache, visit)
		if err != nil || got != sku {
			bad = true
			return false
		}
		lines++
		return !bad
	})
	if err != nil {
		return &crdt.Cart{}, err
	}
	if bad || entries != head.Entries || lines != head.Lines || sum != head.Sum {
		return &crdt.Cart{}, corruptCart(id)
	}
	return c, nil
}

// loadCartLines reads the head of cart id and the lines of skus (every
// line if all) and returns them as a cart (a part of the cart unless
// all) and as the part a save writes back. A damaged cart (damaged: known
// to be) returns a *store.CorruptError for its key, the empty cart and,
// with all, a part that lists every line key, so that a save of the
// repaired state overwrites them all.
func loadCartLines(r store.Reader, id string, skus []string, all, damaged bool) (*crdt.Cart, *cartPart, error) {
	p := &cartPart{id: id, lines: make(map[string]map[crdt.Dot]crdt.Line), all: all}
	fail := func() (*crdt.Cart, *cartPart, error) {
		p.head, p.headRaw, p.repaired = crdt.CartHead{}, nil, true
		for sku := range p.lines {
			p.lines[sku] = nil // to be overwritten
		}
		return &crdt.Cart{}, p, corruptCart(id)
	}
	var lerr error
	if all {
		l, ok := r.(lister)
		if !ok {
			return &crdt.Cart{}, p, errors.New("region: reading a whole cart needs a reader that lists keys")
		}
		var err error
		if lerr, err = p.readAllLines(l); err != nil {
			return &crdt.Cart{}, p, err
		}
	}
	b, ok, err := r.Get(prefixCart + id)
	switch {
	case err != nil && !errors.Is(err, store.ErrCorrupt):
		return &crdt.Cart{}, p, err
	case err != nil:
		return fail()
	case ok:
		h, err := crdt.DecodeCartHead(b)
		if err != nil {
			return fail()
		}
		p.head, p.headRaw = *h, b
	}
	if damaged || lerr != nil {
		return fail()
	}
	for _, sku := range skus {
		if _, done := p.lines[sku]; done || all {
			continue
		}
		v, _, err := r.Get(cartLineKey(id, sku))
		if err != nil {
			if errors.Is(err, store.ErrCorrupt) {
				return fail()
			}
			return &crdt.Cart{}, p, err
		}
		p.lines[sku] = nil
		if len(v) > 0 {
			got, es, err := crdt.DecodeCartLineOf(v, sku)
			if err != nil || got != sku {
				return fail()
			}
			p.lines[sku] = es
		}
	}
	c := &crdt.Cart{Ctx: p.head.Ctx.Clone()}
	var entries, lines int
	var sum uint64
	for _, es := range p.lines {
		if len(es) > 0 {
			lines++
		}
		for d, l := range es {
			if !p.head.Ctx.Contains(d) {
				return fail()
			}
			if c.Entries == nil {
				c.Entries = make(map[crdt.Dot]crdt.Line, len(es))
			}
			c.Entries[d] = l
			entries++
			sum ^= crdt.EntryHash(d, l)
		}
	}
	if all && (entries != p.head.Entries || lines != p.head.Lines || sum != p.head.Sum) {
		return fail()
	}
	return c, p, nil
}

// readAllLines reads every line of p's cart into p.lines, noting the
// damaged ones in p.damaged; lerr is a *store.CorruptError if there are
// any, err the error of the scan.
func (p *cartPart) readAllLines(l lister) (lerr, err error) {
	prefix := cartLinesPrefix(p.id)
	err = l.Scan(prefix, func(k string, v []byte, err error) bool {
		sku := k[len(prefix):]
		switch {
		case err != nil:
			p.damaged = append(p.damaged, k)
			lerr = corruptCart(p.id)
		case len(v) == 0:
			p.lines[sku] = nil
		default:
			got, es, err := crdt.DecodeCartLineOf(v, sku)
			if err != nil || got != sku {
				p.damaged = append(p.damaged, k)
				lerr = corruptCart(p.id)
			}
			p.lines[sku] = es
		}
		return true
	})
	return lerr, err
}

// loadCartFor reads what joining delta into cart id needs: the head and
// the lines of the delta's entries, or every line if the delta removes
// entries (its context holds dots, seen here, that are not its entries) of
// lines it has no entries in, or may hold a dot this cart holds under
// another sku.
func (n *Node) loadCartFor(r store.Reader, id string, delta *crdt.Cart) (*crdt.Cart, *cartPart, error) {
	if n.carts.isDamaged(id) {
		return n.loadWholeCart(r, id)
	}
	skus := make([]string, 0, 1)
	for _, l := range delta.Entries {
		if !slices.Contains(skus, l.SKU) {
			skus = append(skus, l.SKU)
		}
	}
	c, p, err := loadCartLines(r, id, skus, false, false)
	if err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			n.noteCartDamaged(id)
			return loadCartLines(n.cartReader(r), id, nil, true, true)
		}
		return c, p, err
	}
	if needsAllLines(c, delta) {
		c, p, err = loadCartLines(n.cartReader(r), id, nil, true, false)
		switch {
		case errors.Is(err, store.ErrCorrupt):
			n.noteCartDamaged(id)
		case err != nil:
			return c, p, err // not an empty cart to save over the stored one
		}
	}
	return c, p, nil
}

// loadWholeCart reads every line of cart id. A cart noted damaged is
// noted whole again once it reads whole (a repair rewrote it).
func (n *Node) loadWholeCart(r store.Reader, id string) (*crdt.Cart, *cartPart, error) {
	c, p, err := loadCartLines(n.cartReader(r), id, nil, true, false)
	if err == nil && n.carts.isDamaged(id) && !n.isHeldBack(prefixCart+id) {
		n.carts.mu.Lock()
		delete(n.carts.damaged, id)
		n.carts.mu.Unlock()
	}
	return c, p, err
}

// maxRemovedScan bounds the dots of a delta's context that needsAllLines
// looks at one by one.
const maxRemovedScan = 256

// needsAllLines reports whether joining delta into the part c of a cart
// may touch an entry of a line c does not hold: the delta's context holds
// a dot that c's context holds (so c may hold an entry under it) but that
// neither is one of the delta's entries nor an entry of c's lines, or one
// of the delta's entries is a dot c has seen but does not hold in the
// line of its sku (removed, or held under another sku: a divergence).
func needsAllLines(c, delta *crdt.Cart) bool {
	for d, l := range delta.Entries {
		if mine, ok := c.Entries[d]; c.Ctx.Contains(d) && (!ok || mine.SKU != l.SKU) {
			return true
		}
	}
	seen := 0
	check := func(d crdt.Dot) bool {
		seen++
		if !c.Ctx.Contains(d) {
			return false
		}
		if _, ok := delta.Entries[d]; ok {
			return false
		}
		_, ok := c.Entries[d]
		return !ok
	}
	for d := range delta.Ctx.Cloud {
		if check(d) {
			return true
		}
	}
	for r, v := range delta.Ctx.VV {
		if v > maxRemovedScan {
			return true
		}
		for k := uint64(1); k <= v; k++ {
			if check(crdt.Dot{Replica: r, Counter: k}) || seen > maxRemovedScan {
				return true
			}
		}
	}
	return false
}

// noteCartDamaged records that cart id is damaged: its key leaves the
// anti-entropy digest, so that a peer's state repairs it, and its writes
// are refused until then.
func (n *Node) noteCartDamaged(id string) {
	n.carts.mu.Lock()
	n.carts.damaged[id] = struct{}{}
	n.carts.mu.Unlock()
	n.store.MarkDamaged(prefixCart + id) // its damaged line counted itself
	n.dg.mu.Lock()
	n.dg.remove(prefixCart + id)
	n.dg.damaged[prefixCart+id] = struct{}{}
	n.dg.mu.Unlock()
}

// saveCart stages the state c of the cart that p was loaded as: the lines
// that changed and the head. c must hold no entry of a line p did not
// load.
func (n *Node) saveCart(tx *store.Tx, p *cartPart, c *crdt.Cart) error {
	lines := make(map[string]map[crdt.Dot]crdt.Line, len(p.lines))
	for d, l := range c.Entries {
		es := lines[l.SKU]
		if es == nil {
			if _, ok := p.lines[l.SKU]; !ok && !p.all {
				return fmt.Errorf("region: cart %s: an entry of line %s, which was not read", p.id, l.SKU)
			}
			es = make(map[crdt.Dot]crdt.Line, 1)
			lines[l.SKU] = es
		}
		es[d] = l
	}
	head := p.head
	head.Ctx = c.Ctx
	var blanked []string
	set := func(sku string, es map[crdt.Dot]crdt.Line) {
		k := cartLineKey(p.id, sku)
		if len(es) == 0 {
			tx.Set(k, []byte{})
			blanked = append(blanked, k)
			return
		}
		tx.Set(k, crdt.AppendCartLine(nil, sku, es))
	}
	for _, k := range p.damaged {
		if _, sku, _ := cartOfLineKey(k); lines[sku] == nil {
			set(sku, nil)
		}
	}
	for sku, old := range p.lines {
		if _, ok := lines[sku]; !ok && (len(old) > 0 || p.repaired) {
			set(sku, nil)
			head.Lines--
			for d, l := range old {
				head.Entries--
				head.Sum ^= crdt.EntryHash(d, l)
			}
		}
	}
	for sku, es := range lines {
		old := p.lines[sku]
		if !p.repaired && maps.Equal(old, es) {
			continue
		}
		set(sku, es)
		if len(old) == 0 {
			head.Lines++
		}
		for d, l := range old {
			if _, ok := es[d]; !ok {
				head.Entries--
				head.Sum ^= crdt.EntryHash(d, l)
			}
		}
		for d, l := range es {
			if _, ok := old[d]; !ok {
				head.Entries++
				head.Sum ^= crdt.EntryHash(d, l)
			}
		}
	}
	if p.repaired {
		head = crdt.HeadOf(c)
	}
	if b := crdt.EncodeCartHead(&head); !slices.Equal(b, p.headRaw) || p.repaired {
		tx.Set(prefixCart+p.id, b)
	}
	if len(blanked) > 0 {
		// Queued now: the sweeper deletes a key only if it finds it empty
		// under the cart's lock, which this write holds until it is done.
		n.carts.mu.Lock()
		for _, k := range blanked {
			n.carts.blank[k] = struct{}{}
		}
		n.carts.mu.Unlock()
		select {
		case n.carts.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// openCarts runs at start-up, on the digest with no key in it yet. It
// converts the carts of a file written before carts were split (each whole
// under "c/ID") into heads and lines, a batch of carts per transaction;
// checks every cart's lines against its head, noting the damaged carts
// (see noteDamagedCarts); records every head in the digest (a damaged
// cart's leaves it again in noteDamagedCarts); and queues the empty lines
// for deletion. It reads each head and line once, and keeps of a head
// only its counts and its encoding, which it reads the context from
// (crdt.HeadContext): a line is checked as it is decoded, entry by entry,
// without keeping its entries.
//
// The carts of a large store are split into two parts (cartParts), each
// checked on a goroutine of its own: first the heads of each part, then
// the heads of half of the digest's buckets and the lines of each part.
func (n *Node) openCarts() error {
	n.carts = cartStore{damaged: make(map[string]struct{}), blank: make(map[string]struct{}), kick: make(chan struct{}, 1)}
	parts := n.cartParts()
	buckets := len(n.dg.buckets)
	run := func(fn func(p *openPart, w int) error) error {
		errs := make([]error, len(parts))
		var wg sync.WaitGroup
		for w := 1; w < len(parts); w++ {
			wg.Go(func() { errs[w] = fn(&parts[w], w) })
		}
		errs[0] = fn(&parts[0], 0)
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := run(func(p *openPart, _ int) error { return n.openHeads(p, buckets) }); err != nil {
		return err
	}
	// The heads of each part, the parts in key order.
	tallies := make([][]cartTally, len(parts))
	var whole []string
	for i := range parts {
		p := &parts[i]
		tallies[i] = p.tallies
		whole = append(whole, p.whole...)
		for _, k := range p.corrupt {
			n.dg.damaged[k] = struct{}{} // left out, so a peer's state repairs it
		}
		for _, id := range p.damaged {
			n.carts.damaged[id] = struct{}{}
		}
		p.tallies, p.whole, p.corrupt, p.damaged = nil, nil, nil, nil
	}
	if err := n.convertCarts(whole); err != nil {
		return err
	}
	if len(whole) > 0 {
		all := slices.Concat(tallies...)
		for _, id := range whole {
			b, ok, err := n.cartHeadRaw(id)
			if err != nil || !ok {
				return fmt.Errorf("region: converting cart %s: %v", id, err)
			}
			t, err := newCartTally(id, b)
			if err != nil {
				return fmt.Errorf("region: converting cart %s: %w", id, err)
			}
			all = append(all, t)
			n.dg.add(prefixCart+id, b)
		}
		slices.SortFunc(all, func(a, b cartTally) int { return strings.Compare(a.id, b.id) })
		tallies = [][]cartTally{all}
	}
	// Each part records the heads of its share of the digest's buckets
	// (from every part) and checks its lines. The lines of a cart are all
	// in one part (see cartParts): one goroutine alone counts them in the
	// cart's tally.
	err := run(func(p *openPart, w int) error {
		for b := range buckets {
			if bucketShare(b, buckets, len(parts)) != w {
				continue
			}
			more := 0
			for i := range parts {
				more += len(parts[i].digest[b])
			}
			n.dg.presize(b, more)
			for i := range parts {
				for _, h := range parts[i].digest[b] {
					n.dg.addHashed(uint32(b), h.key, h.hash)
				}
				parts[i].digest[b] = nil
			}
		}
		return n.openLines(p, tallies)
	})
	if err != nil {
		return err
	}
	for i := range parts {
		for _, id := range parts[i].damaged {
			n.carts.damaged[id] = struct{}{}
		}
		for _, k := range parts[i].blank {
			n.carts.blank[k] = struct{}{}
		}
	}
	for _, ts := range tallies {
		for i := range ts {
			if t := &ts[i]; t.entries != t.wantEntries || t.lines != t.wantLines || t.sum != t.wantSum {
				n.carts.damaged[t.id] = struct{}{}
			}
		}
	}
	// Kept deltas of damaged keys (pending.go) left empty by a repair
	// whose deletion a stop cut short.
	err = n.store.Scan(prefixPending, func(k string, v []byte, err error) bool {
		if err == nil && len(v) == 0 {
			n.carts.blank[k] = struct{}{}
		}
		return true
	})
	if err != nil {
		return err
	}
	if len(n.carts.blank) > 0 {
		select {
		case n.carts.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// cartTally is a cart's head as openCarts found it (its encoding, which
// shares the store's memory, and its counts and sum) and the tally of the
// lines it checked against it.
type cartTally struct {
	id                     string
	head                   []byte
	wantEntries, wantLines int32
	entries, lines         int32
	wantSum, sum           uint64
}

func newCartTally(id string, head []byte) (cartTally, error) {
	entries, lines, sum, err := crdt.CartHeadCounts(head)
	if err != nil {
		return cartTally{}, err
	}
	return cartTally{id: id, head: head, wantEntries: int32(entries), wantLines: int32(lines), wantSum: sum}, nil
}

// headHash is a head to record in the digest: its key and state hash.
type headHash struct {
	key  string
	hash uint64
}

// openPart is a part of the carts that openCarts checks on a goroutine of
// its own, and what it found: the heads from headLo to headHi (excluded)
// and the lines from lineLo to lineHi.
type openPart struct {
	headLo, headHi string
	lineLo, lineHi string

	tallies []cartTally // the part's heads, in key order
	whole   []string    // carts stored whole, to split
	// digest holds the heads to record in the digest, by bucket: each is
	// recorded a bucket at a time, into a map made large enough at once.
	digest  [][]headHash
	corrupt []string // head keys whose values failed their checksums
	damaged []string // ids of damaged carts (may repeat)
	blank   []string // empty line keys
}

// splitCarts, if set, chooses where openCarts splits the carts in two
// instead of the middle of the sample (for tests): a cart id, or "" for no
// split.
var splitCarts func(sample []string) string

// cartParts returns the parts of the carts openCarts checks: two parts of
// about as many heads each, the first of the carts whose ids are less than
// the middle id M of the store's sample of its keys (store.KeySample) and
// the second of the others, or, if the sample holds fewer than two heads,
// one part of all.
//
// The heads of a part are a range of keys, and so are its lines, but not
// quite of the same carts: the lines of cart ID ("e/ID/SKU") are in the
// order of "ID/", which differs from that of the heads ("c/ID") where an
// id is a prefix of another that follows it with a byte that sorts before
// "/" ("a" and "a-x": "c/a" < "c/a-x" but "e/a-x/..." < "e/a/..."). The
// lines of the first part are those less than "e/M/": the lines of the
// carts whose "ID/" is less than "M/". Every cart's lines are thus in one
// part, whose goroutine alone counts them in the cart's tally, though that
// may be of a head of the other part.
func (n *Node) cartParts() []openPart {
	headsEnd, linesEnd := store.PrefixEnd(prefixCart), store.PrefixEnd(prefixCartLine)
	all := []openPart{{headLo: prefixCart, headHi: headsEnd, lineLo: prefixCartLine, lineHi: linesEnd}}
	sample, _ := n.store.KeySample(prefixCart, headsEnd)
	var mid string
	if splitCarts != nil {
		mid = splitCarts(sample)
	} else if len(sample) >= 2 {
		mid = sample[len(sample)/2][len(prefixCart):]
	}
	// The key of no valid id may hold a "/": the parts split at what
	// precedes it, as the ids of line keys do (cartOfLineKey).
	mid, _, _ = strings.Cut(mid, "/")
	if mid == "" {
		return all
	}
	return []openPart{
		{headLo: prefixCart, headHi: prefixCart + mid, lineLo: prefixCartLine, lineHi: cartLinesPrefix(mid)},
		{headLo: prefixCart + mid, headHi: headsEnd, lineLo: cartLinesPrefix(mid), lineHi: linesEnd},
	}
}

// openHeads reads the heads of part p, for a digest of buckets buckets.
func (n *Node) openHeads(p *openPart, buckets int) error {
	// As many heads as the store's sample says, and a few more: the slices
	// rarely grow.
	sample, every := n.store.KeySample(p.headLo, p.headHi)
	want := len(sample)*every + len(sample)*every/8 + 16
	p.tallies = make([]cartTally, 0, want)
	p.digest = make([][]headHash, buckets)
	if per := want / buckets; per > 0 {
		for b := range p.digest {
			p.digest[b] = make([]headHash, 0, per+per/4+4)
		}
	}
	return n.store.ScanRange(p.headLo, p.headHi, func(k string, v []byte, err error) bool {
		id := k[len(prefixCart):]
		if err != nil {
			p.corrupt = append(p.corrupt, k)
			return true
		}
		if t, err := newCartTally(id, v); err == nil {
			p.tallies = append(p.tallies, t)
			b := crdt.KeyBucket(k, buckets)
			p.digest[b] = append(p.digest[b], headHash{key: k, hash: crdt.StateHash(k, v)})
		} else if _, err := crdt.DecodeCartStored(v); err == nil {
			p.whole = append(p.whole, id)
		} else {
			p.damaged = append(p.damaged, id)
		}
		return true
	})
}

// bucketShare returns which of parts goroutines records the keys of
// bucket b of a digest of buckets buckets.
func bucketShare(b, buckets, parts int) int { return b * parts / buckets }

// openLines checks the lines of part p against the tallies of the heads
// of every part (each part's in key order, the parts in order).
func (n *Node) openLines(p *openPart, tallies [][]cartTally) error {
	// tallyOf finds the tally of cart id: mostly the one after the last
	// found (lines are listed in the order of "ID/SKU", which is the order
	// of the ids but where an id is a prefix of another), else by a
	// binary search.
	part, next := 0, 0
	tallyOf := func(id string) *cartTally {
		if ts := tallies[part]; next < len(ts) && ts[next].id == id {
			next++
			return &ts[next-1]
		}
		for i := len(tallies) - 1; i >= 0; i-- {
			ts := tallies[i]
			if len(ts) == 0 || ts[0].id > id {
				continue
			}
			// (Only ids are read: the other part's goroutine counts in the
			// tallies of its own carts meanwhile.)
			j, ok := sort.Find(len(ts), func(j int) int { return strings.Compare(id, ts[j].id) })
			if !ok {
				return nil
			}
			part, next = i, j+1
			return &ts[j]
		}
		return nil
	}
	var last string
	var t *cartTally
	var ctx crdt.HeadContext // t's
	var reps crdt.ReplicaCache
	return n.store.ScanRange(p.lineLo, p.lineHi, func(k string, v []byte, err error) bool {
		id, sku, _ := cartOfLineKey(k)
		if id != last || t == nil {
			if last, t = id, tallyOf(id); t != nil {
				ctx = crdt.HeadContextOf(t.head)
			}
		}
		switch {
		case err != nil:
			p.damaged = append(p.damaged, id)
		case len(v) == 0:
			p.blank = append(p.blank, k)
		case t == nil:
			p.damaged = append(p.damaged, id) // a line without a head
		default:
			outside := false
			got, err := crdt.VisitCartLineFrom(v, sku, &reps, func(d crdt.Dot, l crdt.Line) {
				outside = outside || !ctx.Contains(d)
				t.entries++
				t.sum ^= crdt.EntryHash(d, l)
			})
			if err != nil || got != sku || outside {
				p.damaged = append(p.damaged, id)
			}
			t.lines++
		}
		return true
	})
}

func (n *Node) cartHeadRaw(id string) (b []byte, ok bool, err error) {
	err = n.store.View([]string{prefixCart + id}, func(r store.Reader) error {
		b, ok, err = r.Get(prefixCart + id)
		return err
	})
	return b, ok, err
}

// convertCarts splits the carts ids, stored whole, into heads and lines,
// in transactions of up to 512 carts, and fewer where their lines would
// set more keys than a transaction may (a cart of 1,000 skus sets 1,001).
func (n *Node) convertCarts(ids []string) error {
	if len(ids) > 0 {
		n.log.Info("splitting carts stored whole into heads and lines", "carts", len(ids))
	}
	for len(ids) > 0 {
		batch := ids[:min(512, len(ids))]
		keys := make([]string, len(batch))
		for i, id := range batch {
			keys[i] = prefixCart + id
		}
		done := 0
		err := n.store.Update(keys, func(tx *store.Tx) error {
			for _, id := range batch {
				b, _, err := tx.Get(prefixCart + id)
				if err != nil {
					return err
				}
				c, err := crdt.DecodeCartStored(b)
				if err != nil {
					return fmt.Errorf("region: converting cart %s: %w", id, err)
				}
				// A head and a key per line: the next cart goes in the
				// next transaction if they would not fit in this one.
				if done > 0 && tx.Sets()+len(c.Entries)+1 > MaxApplyKeys {
					return nil
				}
				p := &cartPart{id: id, lines: map[string]map[crdt.Dot]crdt.Line{}, all: true, repaired: true}
				if err := n.saveCart(tx, p, c); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			return err
		}
		ids = ids[done:]
	}
	return nil
}

// noteDamagedCarts runs once the digest is built: the carts openCarts
// found damaged leave it (see noteCartDamaged).
func (n *Node) noteDamagedCarts() {
	n.carts.mu.Lock()
	ids := slices.Collect(maps.Keys(n.carts.damaged))
	n.carts.mu.Unlock()
	for _, id := range ids {
		n.log.Warn("cart damaged: refused until a peer repairs it", "key", prefixCart+id)
		n.noteCartDamaged(id)
	}
}

// sweepLines deletes the empty lines saveCart leaves, one transaction
// each (a transaction that deletes a key may do nothing else), until the
// node closes.
func (n *Node) sweepLines() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stop:
			return
		case <-n.carts.kick:
		}
		for {
			// A batch at a time, its deletes run together (eachAtOnce):
			// one by one, each waited for an fsync of its own and the
			// sweep fell behind clients emptying lines.
			n.carts.mu.Lock()
			keys := make([]string, 0, min(len(n.carts.blank), 256))
			for k := range n.carts.blank {
				if len(keys) == cap(keys) {
					break
				}
				keys = append(keys, k)
				delete(n.carts.blank, k)
			}
			n.carts.mu.Unlock()
			if len(keys) == 0 {
				break
			}
			select {
			case <-n.stop:
				return
			default:
			}
			_ = eachAtOnce(len(keys), func(i int) error {
				if err := n.sweepLine(keys[i]); err != nil && !n.store.Failed() {
					n.log.Warn("could not delete an empty cart line", "key", keys[i], "err", err)
				}
				return nil
			})
		}
	}
}

// sweepLine deletes the line key (or a key of deltas kept for a damaged
// key, pending.go) if it is still empty.
func (n *Node) sweepLine(key string) error {
	lk := n.store.Lock(lockKey(key))
	defer lk.Unlock()
	return lk.Update(func(tx *store.Tx) error {
		if v, ok, err := tx.Get(key); err == nil && ok && len(v) == 0 {
			tx.Delete(key)
		}
		return nil
	})
}
