package region

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// Clock tells the time. The home ledger reads it for reservation expiry;
// tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

// steadyClock is the node's view of its Clock: never earlier than a time
// it has already given. A home judges a hold's expiry by it, so a hold
// once read expired (a read writes nothing) stays expired when the wall
// clock steps back (an NTP step), and a commit of it is refused as the
// read said. It does not stand still meanwhile: while the clock reads
// below the latest time given, that time goes on at the rate of the
// process's monotonic clock, so that holds made after the step last their
// ttl, and settling, expiry and the return of idle rights go on; it then
// runs ahead of the clock by the step until the clock catches up or the
// process restarts, when a clock stepped back judges by the clock again.
// (A reading that lost a race to a later one is behind too, by little:
// the monotonic clock says how far the time has really moved since.)
type steadyClock struct {
	c    Clock
	mu   sync.Mutex
	last int64     // Unix nanoseconds of the latest time given
	at   time.Time // time.Now() when it was given (for its monotonic reading)
}

func (s *steadyClock) Now() time.Time {
	t := s.c.Now()     // not under mu: a test's clock may call into the node
	ns := t.UnixNano() // by the wall clock: a step does not move the monotonic reading
	s.mu.Lock()
	defer s.mu.Unlock()
	mono := time.Now()
	if !s.at.IsZero() && ns < s.last {
		s.last += int64(mono.Sub(s.at))
		s.at = mono
		if ns < s.last {
			return time.Unix(0, s.last)
		}
	}
	s.last, s.at = ns, mono
	return t
}

// Delta is a durable local write handed to replication: the region-level
// dot (origin, seq) that names it, the delta-group it made and when.
type Delta struct {
	Origin crdt.ReplicaID
	Seq    uint64
	Group  *crdt.Group
	At     time.Time
}

// Publisher receives every local delta after it is durable (persist
// before send). It must not block.
type Publisher interface{ Publish(d Delta) }

// Forwarder carries a home request to the sku's home region and returns
// its answer. An unreachable home is a *Error with code home_unavailable.
type Forwarder interface {
	Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error)
}

// Options configure a Node.
type Options struct {
	// Name is this region's name and replica id.
	Name string
	// Home returns the home region of a sku; nil makes this region the
	// home of every sku.
	Home func(sku string) string
	// CatchUpWait is how long a decision the region would make as a home
	// waits for its catch-up to end before it is refused (0: refused at
	// once); see DefaultCatchUpWait. It is real time.
	CatchUpWait time.Duration
	// HomesID names what Home decides from (config.Config.HomesID); ""
	// leaves it untracked. A region opened with another HomesID than its
	// store last recorded may now be home to skus another region decided
	// until now, so it catches up with every peer before it decides as a
	// home (as a new incarnation does).
	HomesID string
	// StartGate is how long, after the node opens, a decision as a home
	// waits for every peer to have answered a first connection — taken
	// (PeerReached) or turned down (PeerRefused) — before the stored
	// record of the peers' homes is trusted without it (0: at once). It
	// is real time. A region removed from its peers' configs and started
	// again on its store would else decide in the milliseconds before
	// their refusals arrive.
	StartGate time.Duration
	Store     *store.Store
	Clock     Clock
	Logger    *slog.Logger
	Metrics   *Metrics
	Publisher Publisher
	Forwarder Forwarder
	// Replicas waits for a write to reach other regions (write concern);
	// nil: no request may ask for more than this region.
	Replicas ReplicaWaiter
	// Peers returns the replication state of each peer for /v1/cluster.
	Peers func() []PeerStatus
	// IsRegion reports whether name is a region of the cluster. A
	// reservation id whose home is not one is answered not_found without
	// being forwarded. nil takes every name for a region.
	IsRegion func(name string) bool
	// MaxOpenHolds bounds the held reservations of one sku (default
	// DefaultMaxOpenHolds).
	MaxOpenHolds int
	// DigestBuckets is the number of anti-entropy digest buckets; every
	// region of a cluster must use the same (default DefaultDigestBuckets).
	DigestBuckets int
	// PeerRegions are the regions this one replicates with. After a loss
	// (see CatchingUp) the region decides again once it has synced with
	// every one of them; a region without peers catches up at once.
	PeerRegions []string
	// ExpiryInterval is how often held reservations past their expiry are
	// released in the background (they are also expired lazily on use).
	ExpiryInterval time.Duration
	// Partition and Partitions place the node in a partitioned region
	// (see Partitions): the node holds the carts and skus k with
	// config.PartitionOf(k, Partitions) == Partition, decides for the
	// skus of that partition homed at this region, and names its
	// partition in the reservation ids it issues. A request for another
	// partition's key goes through the Forwarder, even when this region
	// is its home. Partitions 0 or 1: the node holds every key.
	Partition, Partitions int
	// Escrow reports whether a sku is decided from rights its home grants
	// other regions ahead of time (see escrow.go); nil: no sku is.
	Escrow func(sku string) bool
	// Background runs work the node starts off a request's path (asking
	// for rights ahead of need); nil runs it on a goroutine of its own,
	// which Close waits for. A simulation runs it in line, to stay
	// deterministic; calls a request fans out (a recall of rights) then
	// run one after the other too.
	Background func(func())
}

// Node is one region: carts and inventory read and written locally, the
// reservation ledger of the skus it is home to, idempotency records,
// checkout, and the causal context of everything it has applied.
//
// A local write is one Store transaction that joins the operation's delta
// into the object, records the region-level dot (Name, seq) in the
// applied context and, where it applies, writes the idempotency record.
// It is published to replication only after it is durable.
type Node struct {
	name crdt.ReplicaID
	// self is the replica id of this incarnation of the region (see
	// crdt.Incarnation): every dot it makes, region-level or in an
	// object, is self's.
	self  crdt.ReplicaID
	opts  Options
	store *store.Store
	clock Clock
	log   *slog.Logger
	m     *Metrics

	amu     sync.Mutex
	applied crdt.Context
	// appliedWaits holds, per replica, the channel closed when applied
	// grows by a dot of that replica, for the waiters whose first missing
	// item is that replica's (waitCovers): a write wakes only the waiters
	// it may satisfy, not every waiter. An entry lives while it has
	// waiters; the first growth of its replica removes it.
	appliedWaits map[crdt.ReplicaID]*appliedWait
	// token is the causal token of applied, "" until asked for since
	// applied last grew.
	token string
	// extra is what keys' states may reflect beyond applied (answer.go).
	extra extraState

	// txApplied is the applied context as the store's transactions see
	// it; it is only touched inside the store's write lock.
	txApplied crdt.Context
	// txReflects is what the stored states of keys may reflect beyond
	// txApplied, joined over every key (keyReflects), as the store's
	// transactions see it; touched as txApplied is.
	txReflects crdt.Context
	dg         *digest
	carts      cartStore // split carts: damaged ones, empty lines (cartstore.go)
	due        dueIndex

	imu      sync.Mutex
	inflight map[string]struct{}

	resMu  sync.Mutex
	resSeq uint64 // last reservation number handed out
	resHWM uint64 // reservation numbers up to this are reserved in the store

	// divergent are keys found holding a dot with other content than a
	// peer's (at most maxDivergent); synced are the peers a restored
	// region has completed anti-entropy with.
	dmu        sync.Mutex
	ndivergent atomic.Int32 // len(divergent), read without dmu
	divergent  map[string][]crdt.Dot
	synced     map[string]bool
	// caughtUp is closed when the region may have come to decide as a
	// home (catch-up ended, or the peers' homes came to agree); nil
	// while no one waits.
	caughtUp chan struct{}
	// peerHomes is what each peer showed as its homes in the last
	// anti-entropy round completed since this region's homes last
	// changed (Options.HomesID; stored under prefixPeerHomes); homesOK
	// is whether every peer showed this region's own.
	peerHomes  map[string]string
	homesOK    atomic.Bool
	homesEpoch uint64     // keyHomesEpoch
	homesMu    sync.Mutex // serialises noteHomes
	// unanswered are the peers that have not yet taken or turned down a
	// first connection since the node opened (Options.StartGate);
	// gateOpen is set once none is left or the gate's time is up.
	unanswered map[string]bool
	gateOpen   atomic.Bool
	armGate    sync.Once
	unrepaired map[string][]string // by peer

	// sagas are the idempotency keys of the unsettled checkouts this
	// region coordinates, each with its cart (checkout.go).
	sagaMu sync.Mutex
	sagas  map[string]string

	esc escrowState // skus this region holds rights to (escrow.go)
	// settling is set while a round of SettleCheckouts runs (expiryLoop),
	// collecting while a sweep of old records does.
	settling   atomic.Bool
	collecting atomic.Bool
	// misplacedLog is when checkPartitionOf last logged (Unix ns).
	misplacedLog atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
}

// maxDivergent bounds the divergent keys a node lists.
const maxDivergent = 64

// Store keys.
const (
	keyApplied = "m/applied"
	keyMarks   = "m/marks"
	// keyPartitions holds the cluster's partition count (decimal) the
	// store was first opened with; see checkPartitionCount.
	keyPartitions = "m/partitions"
	// keyHomes holds the HomesID the store was last opened with; see
	// checkHomes.
	keyHomes = "m/homes"
	// keyHomesEpoch counts the changes of keyHomes (decimal).
	keyHomesEpoch = "m/homesepoch"
	// keyHeldBack lists, one a line, the keys held back while the region
	// catches up after damage (holdBackDamaged), so that a restart before
	// it has caught up holds them back still; empty once released.
	keyHeldBack = "m/heldback"
	// keyReflects holds the join of what the stored states may reflect
	// beyond the applied context (Node.extra, answer.go): what whole
	// states from peers (quorum reads, repairs) showed that no claimed
	// delta brought yet. A restart loads it as the extra context every
	// answer covers, so that a token after the restart still covers what
	// the store shows. Empty once the applied context covers it.
	keyReflects = "m/reflects"
	// prefixPeerHomes + PEER holds what peer PEER showed as its homes
	// in the last anti-entropy round completed, after the epoch
	// (keyHomesEpoch) it completed in: "EPOCH HOMES". Records of earlier
	// epochs are left out; see SyncedWith.
	prefixPeerHomes = "m/peerhomes/"
	prefixCart      = crdt.CartPrefix
	prefixItem      = crdt.ItemPrefix
	prefixLedger    = "l/"
	prefixRes       = "r/"
	prefixIdem      = "k/"
	// prefixPending + a cart's or item's key holds the join of the deltas
	// that key received while its stored state was damaged (pending.go).
	prefixPending = "p/"
	// prefixLostRestocks + SKU counts, at the sku's home, units that
	// earlier incarnations of this region put back into its stock, that
	// its store lost (a power loss with everysec) and that catch-up
	// brought back from its peers (noteLostRestocks): some may be the
	// return of a committed reservation whose record was lost with them,
	// which a retried return must not put back again (transition).
	prefixLostRestocks = "m/lostrestocks/"
)

// checkPartitionCount refuses a store written as another partition, or
// by a cluster of another partition count, and records both in a store
// that has none (a new store, or one written before they were recorded):
// "m/partitions" holds "PART/COUNT". A key's partition is its hash modulo
// the count, so under another count, or in another partition's store,
// most of a store's keys belong elsewhere: the region would answer them
// as empty and issue again the dots its peers hold from that partition's
// stream. Every store records them, a region of one partition's too
// ("0/1").
func (n *Node) checkPartitionCount() error {
	count := max(n.opts.Partitions, 1)
	want := fmt.Sprintf("%d/%d", n.opts.Partition, count)
	var have string
	var ok bool
	err := n.store.View([]string{keyPartitions}, func(r store.Reader) error {
		b, found, err := r.Get(keyPartitions)
		have, ok = string(b), found
		return err
	})
	if err != nil {
		return err
	}
	if ok && have == want {
		return nil
	}
	if ok {
		partS, countS, split := strings.Cut(have, "/")
		if !split {
			partS, countS = "", have // the count alone, as first recorded
		}
		c, err := strconv.Atoi(countS)
		if err != nil || c < 1 || c > config.MaxPartitions {
			return &store.CorruptError{Key: keyPartitions}
		}
		if c != count {
			return fmt.Errorf("region: this store (partition %d) was written by a cluster of %d partitions, but the config gives %d: the partitions of a cluster are fixed when it is created (docs/configuration.md); put back the config the data was written with, or move the data away to start afresh", n.opts.Partition, c, count)
		}
		if split {
			p, err := strconv.Atoi(partS)
			if err != nil || p < 0 || p >= c {
				return &store.CorruptError{Key: keyPartitions}
			}
			if p != n.opts.Partition {
				return fmt.Errorf("region: this store holds partition %d, but it is opened as partition %d: a partition's store stays in its own directory (pNNNN); put it back where it came from (docs/operations.md)", p, n.opts.Partition)
			}
		}
	}
	return n.store.Update(nil, func(tx *store.Tx) error { tx.Set(keyPartitions, []byte(want)); return nil })
}

// NewNode opens a region on its store.
func NewNode(opts Options) (*Node, error) {
	if !crdt.ValidID(opts.Name) || strings.Contains(opts.Name, ":") {
		// ':' separates a reservation id's parts (HOME:SEQ).
		return nil, fmt.Errorf("region: invalid region name %q (characters of [A-Za-z0-9._-])", opts.Name)
	}
	if opts.Store == nil {
		return nil, errors.New("region: no store")
	}
	if opts.Store.LockKey(prefixLedger+"x") != prefixItem+"x" || opts.Store.LockKey(keyApplied) != "" {
		return nil, errors.New("region: the store was not opened with region.OpenStore (its keys' locks are not the region's)")
	}
	if opts.Partitions > config.MaxPartitions || opts.Partition < 0 || opts.Partition >= max(opts.Partitions, 1) {
		return nil, fmt.Errorf("region: partition %d of %d partitions", opts.Partition, opts.Partitions)
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.MaxOpenHolds == 0 {
		opts.MaxOpenHolds = DefaultMaxOpenHolds
	}
	if opts.DigestBuckets == 0 {
		opts.DigestBuckets = DefaultDigestBuckets
	}
	if opts.ExpiryInterval == 0 {
		opts.ExpiryInterval = 500 * time.Millisecond
	}
	n := &Node{name: crdt.ReplicaID(opts.Name), self: crdt.Incarnation(opts.Name, opts.Store.Incarnation()), opts: opts, store: opts.Store, clock: &steadyClock{c: opts.Clock},
		log: opts.Logger, m: opts.Metrics,
		inflight: make(map[string]struct{}), stop: make(chan struct{})}
	if err := n.checkPartitionCount(); err != nil {
		return nil, err
	}
	var marksBy crdt.ReplicaID
	err := n.store.View([]string{keyApplied, keyMarks, keyResSeq}, func(r store.Reader) error {
		ctx, by, err := readApplied(r)
		n.applied, n.txApplied, marksBy = ctx, ctx.Clone(), by
		if err != nil {
			return err
		}
		if b, ok, err := r.Get(keyResSeq); err != nil {
			return err
		} else if ok {
			if err := decodeInto(b, &n.resHWM); err != nil {
				return &store.CorruptError{Key: keyResSeq}
			}
		}
		// A new incarnation may have lost the tail that raised resHWM: its
		// reservation numbers start past every earlier incarnation's.
		n.resSeq = max(n.resHWM, resSeqFloor(n.store.Incarnation()))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := n.openApplied(marksBy); err != nil {
		return nil, err
	}
	if err := n.openReflects(); err != nil {
		return nil, err
	}
	if err := n.checkReplicaBudget(); err != nil {
		return nil, err
	}
	if err := n.checkHomes(); err != nil {
		return nil, err
	}
	n.newNodeDigest()
	if err := n.openCarts(); err != nil {
		return nil, err
	}
	if err := n.buildDigest(); err != nil {
		return nil, err
	}
	n.noteDamagedCarts()
	if err := n.renewIfDamaged(marksBy); err != nil {
		return nil, err
	}
	if err := n.buildDueIndex(); err != nil {
		return nil, err
	}
	if err := n.loadSagas(); err != nil {
		return nil, err
	}
	if err := n.holdBackDamaged(); err != nil {
		return nil, err
	}
	if len(opts.PeerRegions) == 0 {
		n.SyncedWith("", "", nil) // nobody to catch up with
	}
	n.startGate()
	n.store.Opened()
	n.wg.Add(1)
	go n.expiryLoop()
	n.wg.Add(1)
	go n.sweepLines()
	return n, nil
}

// Close stops the node's background work. It does not close the store.
func (n *Node) Close() {
	select {
	case <-n.stop:
		return
	default:
	}
	close(n.stop)
	n.wg.Wait()
}

// Region returns the region's name.
func (n *Node) Region() string { return string(n.name) }

// Self returns the replica id of this incarnation of the region, the
// replica of every dot it makes.
func (n *Node) Self() crdt.ReplicaID { return n.self }

// resSeqFloor is where the reservation numbers of incarnation k begin:
// k × 2²⁰, past any number an earlier incarnation handed out: k grows by
// at least one per hundredth of a second and by at least 2¹⁶ from one
// incarnation to the next (store.IncarnationStep), and no incarnation
// issues a million reservations in a hundredth of a second or 2³⁶ in all.
func resSeqFloor(k uint64) uint64 { return k << 20 }

// Partition returns the partition the node holds (0 when the region is
// not partitioned).
func (n *Node) Partition() int { return n.opts.Partition }

// Holds reports whether key (a cart id or a sku) is in the node's
// partition.
func (n *Node) Holds(key string) bool {
	return n.opts.Partitions <= 1 || config.PartitionOf(key, n.opts.Partitions) == n.opts.Partition
}

// decides reports whether the node makes the home decisions of key: key's
// home is this region and key is in the node's partition.
func (n *Node) decides(home, key string) bool { return home == string(n.name) && n.Holds(key) }

// HomeOf returns the home region of sku.
func (n *Node) HomeOf(sku string) string {
	if n.opts.Home == nil {
		return string(n.name)
	}
	return n.opts.Home(sku)
}

// Ready reports whether the store is open and taking writes.
func (n *Node) Ready() bool {
	select {
	case <-n.stop:
		return false
	default:
		return !n.store.Failed()
	}
}

// readApplied reads the stored applied context (a checkpoint, see
// openApplied) and the replica whose dots the store's marks count.
func readApplied(r store.Reader) (crdt.Context, crdt.ReplicaID, error) {
	var by crdt.ReplicaID
	if b, ok, err := r.Get(keyMarks); err != nil {
		return crdt.Context{}, "", err
	} else if ok {
		by = crdt.ReplicaID(b)
	}
	b, ok, err := r.Get(keyApplied)
	if err != nil || !ok {
		return crdt.Context{}, by, err
	}
	ctx, err := crdt.DecodeContext(b)
	return ctx, by, err
}

// checkHomes records the store's HomesID and, when the homes changed
// since the store last recorded them, starts a catch-up (Options.HomesID).
func (n *Node) checkHomes() error {
	id := n.opts.HomesID
	if id == "" {
		n.homesOK.Store(true) // untracked
		return nil
	}
	var stored string
	epoch := uint64(0) // the homes' changes so far
	err := n.store.View(nil, func(r store.Reader) error {
		b, ok, err := r.Get(keyHomes)
		if ok {
			stored = string(b)
		}
		if err != nil {
			return err
		}
		b, ok, err = r.Get(keyHomesEpoch)
		if ok {
			if epoch, err = strconv.ParseUint(string(b), 10, 64); err != nil {
				return fmt.Errorf("region: the store's record %s is damaged: %q", keyHomesEpoch, b)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if stored != id {
		// What the peers showed under other homes says nothing of these:
		// records of earlier epochs are left out.
		epoch++
	}
	n.homesEpoch = epoch
	n.peerHomes = make(map[string]string)
	// A damaged record is left out: that peer is unconfirmed.
	err = n.store.Scan(prefixPeerHomes, func(k string, v []byte, err error) bool {
		if e, homes, ok := strings.Cut(string(v), " "); err == nil && ok && e == strconv.FormatUint(epoch, 10) {
			n.peerHomes[k[len(prefixPeerHomes):]] = homes
		}
		return true
	})
	if err != nil {
		return err
	}
	n.homesOK.Store(n.agreed())
	if stored == id {
		if !n.homesOK.Load() {
			n.log.Warn("the region decides as a home once every peer has shown it the same homes rules and regions in an anti-entropy round",
				"homes", id, "unconfirmed", n.unconfirmedPeers())
		}
		return nil
	}
	// A store with writes but no record (written by a version that kept
	// none) cannot tell either: it catches up too. A store that holds no
	// write yet has decided nothing under other homes.
	if len(n.opts.PeerRegions) > 0 && (stored != "" || !n.applied.Empty()) {
		if err := n.store.BeginCatchUp(); err != nil {
			return err
		}
		n.log.Warn("the homes of skus changed since the last start; the region catches up with its peers before deciding as a home",
			"homes", id, "before", stored)
	}
	return n.store.Update([]string{keyHomes, keyHomesEpoch}, func(tx *store.Tx) error {
		tx.Set(keyHomes, []byte(id))
		tx.Set(keyHomesEpoch, []byte(strconv.FormatUint(epoch, 10)))
		return nil
	})
}

// agreed reports whether every peer showed this region's homes (see
// SyncedWith); true when they are untracked or there is no peer.
func (n *Node) agreed() bool {
	return len(n.unconfirmedPeers()) == 0
}

// unconfirmedPeers returns the peers that have not shown this region's
// homes in an anti-entropy round since they last changed here. The
// caller holds dmu, or runs before the node serves.
func (n *Node) unconfirmedPeers() []string {
	if n.opts.HomesID == "" {
		return nil
	}
	var out []string
	for _, p := range n.opts.PeerRegions {
		if n.peerHomes[p] != n.opts.HomesID {
			out = append(out, p)
		}
	}
	return out
}

// noteHomes records that peer showed homes in a completed anti-entropy
// round. A peer that shows other homes than this region's (its config
// differs: a rolling restart that changes homes or regions is under way)
// makes the region stop deciding as a home at once; it decides again once
// every peer has shown its own homes in a round completed since. So two
// regions that disagree on homes never both decide: a region decides
// only on homes every peer ran at a round since they last changed here,
// and such a round brought it every decision the peer had made until
// then, under its earlier homes too.
func (n *Node) noteHomes(peer, homes string) {
	if n.opts.HomesID == "" || peer == "" {
		return
	}
	// One at a time (rounds and refusals come from two goroutines), so
	// that the store keeps the latest.
	n.homesMu.Lock()
	defer n.homesMu.Unlock()
	n.dmu.Lock()
	if n.peerHomes[peer] == homes {
		n.dmu.Unlock()
		return
	}
	was := n.homesOK.Load()
	n.peerHomes[peer] = homes
	ok := n.agreed()
	n.homesOK.Store(ok)
	unconfirmed := n.unconfirmedPeers()
	n.dmu.Unlock()
	rec := []byte(strconv.FormatUint(n.homesEpoch, 10) + " " + homes)
	if err := n.store.Update([]string{prefixPeerHomes + peer}, func(tx *store.Tx) error {
		tx.Set(prefixPeerHomes+peer, rec)
		return nil
	}); err != nil {
		n.log.Error("could not record the homes a peer runs", "peer", peer, "err", err)
	}
	switch {
	case homes != n.opts.HomesID:
		n.log.Warn("a peer runs other homes rules or regions than this region; the region decides as a home once every peer runs the same",
			"peer", peer, "peer_homes", homes, "homes", n.opts.HomesID)
	case ok && !was:
		n.log.Info("every peer runs the same homes rules and regions as this region", "homes", n.opts.HomesID)
		n.wakeDeciders()
	case !ok:
		n.log.Info("a peer runs the same homes as this region; others are not confirmed yet", "peer", peer, "unconfirmed", unconfirmed)
	}
}

// PeerRefused records that peer turned this region down when it dialled
// (a TLS alert or "unknown region": the peer runs a config without this
// region, as after removing it). Such a peer shows no homes: the region
// stops deciding as a home until a round with the peer shows its homes
// again. Else a region removed from the cluster and started again on its
// store and old config would decide beside the skus' new homes.
func (n *Node) PeerRefused(peer string) {
	if n.opts.HomesID != "" && slices.Contains(n.opts.PeerRegions, peer) {
		n.noteHomes(peer, refusedHomes)
		n.answered(peer)
	}
}

// startGate closes the node's homes until every peer has answered a
// first connection, or Options.StartGate has passed since ArmStartGate.
func (n *Node) startGate() {
	if n.opts.StartGate <= 0 || n.opts.HomesID == "" || len(n.opts.PeerRegions) == 0 {
		n.gateOpen.Store(true)
		return
	}
	n.dmu.Lock()
	n.unanswered = make(map[string]bool, len(n.opts.PeerRegions))
	for _, p := range n.opts.PeerRegions {
		n.unanswered[p] = true
	}
	n.dmu.Unlock()
}

// ArmStartGate starts the start gate's time (Options.StartGate): the
// replication calls it once it dials the peers, so that the time a
// node waits for other partitions' stores to open does not count.
func (n *Node) ArmStartGate() {
	n.armGate.Do(func() {
		if !n.gateOpen.Load() {
			time.AfterFunc(n.opts.StartGate, n.openGate)
		}
	})
}

// openGate opens the start gate (see startGate).
func (n *Node) openGate() {
	if !n.gateOpen.Swap(true) {
		n.wakeDeciders()
	}
}

// PeerReached records that peer took a connection with this region (it
// counts this region among its own): see Options.StartGate.
func (n *Node) PeerReached(peer string) { n.answered(peer) }

// answered removes peer from the peers the start gate waits for.
func (n *Node) answered(peer string) {
	if n.gateOpen.Load() {
		return
	}
	n.dmu.Lock()
	delete(n.unanswered, peer)
	left := len(n.unanswered)
	n.dmu.Unlock()
	if left == 0 {
		n.openGate()
	}
}

// refusedHomes is the homes recorded for a peer that refused this region.
const refusedHomes = "(refused this region)"

// ShowedHomes records the homes peer showed in an anti-entropy round of
// this region's whose pulls are durable: the region holds every decision
// the peer had made by then, whatever the round still has to push
// (protocol.Ready.Homes). See noteHomes.
func (n *Node) ShowedHomes(peer, homes string) { n.noteHomes(peer, homes) }

// wakeDeciders wakes the decisions waiting in waitCaughtUp.
func (n *Node) wakeDeciders() {
	n.dmu.Lock()
	if n.caughtUp != nil {
		close(n.caughtUp)
		n.caughtUp = nil
	}
	n.dmu.Unlock()
}

// decidesAsHome reports whether the region may decide as a home: it is
// not catching up, and every peer showed it the same homes.
func (n *Node) decidesAsHome() bool {
	return !n.store.CatchingUp() && n.homesOK.Load() && n.gateOpen.Load()
}

// HomesID returns Options.HomesID, which the region shows its peers in
// every anti-entropy round (protocol.Config.Homes).
func (n *Node) HomesID() string { return n.opts.HomesID }

// checkReplicaBudget refuses to open a region whose writes would name
// one replica id more than contexts and objects hold (crdt.MaxReplicas):
// the applied context names every replica id that ever wrote, and this
// incarnation's first write would add its own. Opened anyway, the region
// acknowledged a write whose object no region can decode (read as
// damaged, for good).
func (n *Node) checkReplicaBudget() error {
	ids := n.applied.Replicas()
	if _, ok := slices.BinarySearch(ids, n.self); ok || len(ids) < crdt.MaxReplicas {
		return nil
	}
	return fmt.Errorf("region %s: the cluster's replica ids that wrote number %d, the most a causal context holds; "+
		"this incarnation (%s) would be one more, so the region does not open (see the lifetime budget of replica ids in the operations guide)",
		n.name, len(ids), n.self)
}

// openApplied completes the applied context read from the store.
//
// A local write does not store the applied context: its transaction marks
// its values with its dot's counter (store.Tx.Mark), and the store marks
// every later value at least as high. The stored context ("m/applied") is
// a checkpoint, written when the region opens as a replica other than the
// one the marks count ("m/marks", written with it), by every ApplyRemote
// that brings dots and by a local write that sets no cart or item (whose
// values alone could all be deleted later). So the applied context is the
// checkpoint and every dot of the marks' replica up to the highest mark of
// the values written since the checkpoint (that replica's dots are
// consecutive: each is the next of its counter, committed in order, and a
// file only ever loses its tail, after which the store opens as a new
// incarnation, that is as another replica).
func (n *Node) openApplied(by crdt.ReplicaID) error {
	m, err := n.store.MaxMarkSince(keyApplied)
	if err != nil {
		return err
	}
	if by != "" && m > n.txApplied.VV[by] {
		for _, ctx := range []*crdt.Context{&n.applied, &n.txApplied} {
			if ctx.VV == nil {
				ctx.VV = make(map[crdt.ReplicaID]uint64, 1)
			}
			ctx.VV[by] = m
			ctx.Compact()
		}
	}
	n.store.RaiseMark(n.txApplied.Max(n.self))
	if by == n.self {
		return nil
	}
	return n.store.Update(nil, func(tx *store.Tx) error {
		tx.Set(keyApplied, crdt.EncodeContext(&n.txApplied))
		tx.Set(keyMarks, []byte(n.self))
		return nil
	})
}

// renewIfDamaged starts a new incarnation that catches up (see
// store.NewIncarnation) when the start found damage that the store's own
// checksums did not (a cart whose lines disagree with its head, an item
// that does not decode): as for a checksum failure (store.Open), a first
// peer's state that repairs it may lack this region's own writes another
// peer holds, and the region must not issue their dots again nor decide
// from stock that misses its own commits. by is the replica the applied
// context's marks counted (openApplied).
func (n *Node) renewIfDamaged(by crdt.ReplicaID) error {
	n.dg.mu.Lock()
	damaged := len(n.dg.damaged) > 0
	n.dg.mu.Unlock()
	if !damaged || n.store.CatchingUp() {
		return nil
	}
	if err := n.store.NewIncarnation("stored values do not decode or disagree with each other"); err != nil {
		return err
	}
	n.self = crdt.Incarnation(string(n.name), n.store.Incarnation())
	n.resMu.Lock()
	n.resSeq = max(n.resSeq, resSeqFloor(n.store.Incarnation()))
	n.resMu.Unlock()
	if err := n.checkReplicaBudget(); err != nil {
		return err
	}
	// openApplied raised the store's mark for the replica left behind;
	// the new one's marks count from 0 (its checkpoint is written next).
	n.store.ResetMark()
	return n.openApplied(by)
}

// markDot records the local write dot in tx: as the mark of its values,
// or, if it sets no cart or item, also in a checkpoint of the applied
// context (see openApplied). The caller holds the store's commit lock.
func (n *Node) markDot(tx *store.Tx, dot crdt.Dot) {
	tx.Mark(dot.Counter)
	objects := false
	tx.Staged(func(key string, _ []byte) { objects = objects || replicated(key) })
	if !objects {
		tx.Set(keyApplied, crdt.EncodeContext(&n.txApplied))
	}
}

// write runs fn as one store transaction while holding the locks of
// keys, so no other writer touches them between fn's reads and the
// commit. If fn reports a replicated change (a non-empty group), the
// transaction also records the next region-level dot, allocated inside the
// store's write lock so dots follow commit order; once durable, the applied
// context is advanced (by the store, together for the writes one fsync made
// durable) and the delta published (persist before send). The locks are
// released only after that, so a read of the keys (Node.view) never sees
// the write before it is durable and in the applied context.
//
// The state it leaves may also reflect what earlier repairs of keys
// brought beyond the applied context (answer.go): that is added to ctx's
// Answer, under the locks.
func (n *Node) write(ctx context.Context, keys []string, fn func(tx *store.Tx, g *crdt.Group) error) error {
	lk := n.store.Lock(keys...)
	defer lk.Unlock()
	var d Delta
	g := &crdt.Group{}
	err := lk.UpdateLocked(func(tx *store.Tx) error {
		if err := fn(tx, g); err != nil {
			return err
		}
		if g.Len() > 0 {
			// This write issues a dot: the run is recorded, durably, as
			// one that may have handed dots out before the first (an
			// unclean stop then starts a new incarnation). A write that
			// changes nothing (a refusal, a repeat) issues none and
			// leaves the run unmarked. Outside the store's commit lock.
			return n.store.MarkUsed()
		}
		return nil
	}, func(tx *store.Tx) error {
		if g.Len() == 0 {
			n.commitDigest(tx, nil)
			return nil
		}
		dot := n.txApplied.Next(n.self)
		n.txApplied.Insert(dot)
		n.markDot(tx, dot)
		n.commitDigestDot(tx, dot)
		tx.OnDurable(func() { n.noteAppliedDot(dot) })
		d = Delta{Origin: n.self, Seq: dot.Counter, Group: g, At: n.clock.Now()}
		return nil
	})
	if err != nil {
		return n.storeErr(err)
	}
	n.noteShown(ctx, keys...)
	if d.Group == nil {
		// Nothing changed: the request repeats a write already made (a
		// remove of a line already gone, a commit already committed),
		// maybe by an earlier attempt that timed out waiting for its
		// write concern. It is answered as that write, so its concern
		// waits for it: for every write this region has made so far.
		n.noteReplay(ctx)
		return nil
	}
	answerOf(ctx).addWrite(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
	if n.opts.Publisher != nil {
		n.opts.Publisher.Publish(d)
	}
	return nil
}

func (n *Node) storeErr(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, store.ErrWriteUnsure) {
		// Not 503 (which says nothing was decided, and a client may
		// repeat an add elsewhere): the write may be in the file.
		return &Error{Code: CodeInternal, Detail: "this region's store failed while making this write durable: it may or may not have been applied; the region takes no writes until it restarts"}
	}
	if errors.Is(err, store.ErrStoreFailed) {
		return &Error{Code: CodeUnavailable, Detail: "this region's store failed a write to its file and takes no writes until the region restarts"}
	}
	if errors.Is(err, store.ErrStoreClosed) {
		return &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: "this region is stopping: nothing was written"}
	}
	var ce *store.CorruptError
	if errors.As(err, &ce) {
		n.noteDamage(ce.Key)
		return &Error{Code: CodeUnavailable, Detail: fmt.Sprintf("stored state of %s is damaged and awaits repair from a peer", ce.Key), RetryAfter: 5}
	}
	return err
}

// noteDamage records that the stored state of a replicated key (a cart,
// one of its lines, an item) was found damaged while the region runs (a
// read checks every value's checksum; the start checked them all, so
// this is damage since, in memory or on disk): like damage found at the
// start, the key leaves the anti-entropy digest, so that a peer's state
// repairs it, and while any key is damaged the region's digests claim no
// applied context (Snapshot), since its state lacks that key.
func (n *Node) noteDamage(key string) {
	if id, _, ok := cartOfLineKey(key); ok {
		key = prefixCart + id
	}
	if n.isHeldBack(key) {
		return // refused as damaged until caught up: not found damaged now
	}
	switch {
	case strings.HasPrefix(key, prefixCart):
		if id := key[len(prefixCart):]; !n.carts.isDamaged(id) {
			n.noteCartDamaged(id)
		}
	case strings.HasPrefix(key, prefixItem):
		n.dg.mu.Lock()
		if _, ok := n.dg.damaged[key]; !ok {
			n.dg.remove(key)
			n.dg.damaged[key] = struct{}{}
		}
		n.dg.mu.Unlock()
	}
}

func (n *Node) noteApplied(dots *crdt.Context) {
	n.amu.Lock()
	n.applied.Join(dots)
	n.appliedGrew(dots)
	n.amu.Unlock()
}

// noteAppliedDot is noteApplied of the context that holds only dot.
func (n *Node) noteAppliedDot(dot crdt.Dot) {
	n.amu.Lock()
	n.applied.Insert(dot)
	n.wakeReplica(dot.Replica)
	n.token = ""
	n.amu.Unlock()
}

// appliedWait is the channel a replica's waiters wait on and how many
// wait on it.
type appliedWait struct {
	ch      chan struct{}
	waiters int
}

// appliedGrew wakes the waiters on the replicas of dots, which applied
// has just joined, and forgets applied's token; the caller holds n.amu.
// Joining a replica's dots changes only what applied holds of that
// replica (its counter and its out-of-order dots), so the waiters on
// every other replica have nothing new to check.
func (n *Node) appliedGrew(dots *crdt.Context) {
	n.token = ""
	if len(n.appliedWaits) == 0 || dots == nil {
		return
	}
	for r := range dots.VV {
		n.wakeReplica(r)
	}
	for d := range dots.Cloud {
		n.wakeReplica(d.Replica)
	}
}

// wakeReplica wakes the waiters on replica r; the caller holds n.amu.
func (n *Node) wakeReplica(r crdt.ReplicaID) {
	if w := n.appliedWaits[r]; w != nil {
		close(w.ch)
		delete(n.appliedWaits, r)
	}
}

// waitReplica returns the wait on replica r, counting one more waiter;
// the caller holds n.amu.
func (n *Node) waitReplica(r crdt.ReplicaID) *appliedWait {
	w := n.appliedWaits[r]
	if w == nil {
		if n.appliedWaits == nil {
			n.appliedWaits = make(map[crdt.ReplicaID]*appliedWait)
		}
		w = &appliedWait{ch: make(chan struct{})}
		n.appliedWaits[r] = w
	}
	w.waiters++
	return w
}

// leaveWait counts a waiter of w out, dropping w with its last waiter
// unless its replica has grown meanwhile.
func (n *Node) leaveWait(r crdt.ReplicaID, w *appliedWait) {
	n.amu.Lock()
	if n.appliedWaits[r] == w {
		if w.waiters--; w.waiters == 0 {
			delete(n.appliedWaits, r)
		}
	}
	n.amu.Unlock()
}

// Applied returns a copy of the region-level causal context: every write
// (origin, seq) this region has applied.
func (n *Node) Applied() crdt.Context {
	n.amu.Lock()
	defer n.amu.Unlock()
	return n.applied.Clone()
}

// Token returns the causal token of everything this region has applied.
// It is encoded once per state of the applied context.
func (n *Node) Token() string {
	n.amu.Lock()
	defer n.amu.Unlock()
	if n.token == "" {
		n.token = fitToken(&n.applied)
	}
	return n.token
}

// WaitToken waits until the region has applied everything token covers.
func (n *Node) WaitToken(ctx context.Context, token string) error {
	want, err := crdt.ParseToken(token)
	if err != nil {
		return Errorf(CodeInvalidToken, "malformed Lattice-Token: %v", err)
	}
	return n.waitCovers(ctx, &want, true)
}

// waitCovers waits until the region has applied everything want covers.
//
// Checked whole once; if that fails, the wait keeps only what want needs
// as a list (each replica's counter, each out-of-order dot: no maps) and,
// at each write the region applies, checks from the first item still
// missing: a waiter waits on the replica of that item, so only a write of
// that replica wakes it (appliedGrew), and a waiter's checks cost O(its
// token) in all, however many writes it sees.
func (n *Node) waitCovers(ctx context.Context, want *crdt.Context, own bool) error {
	n.amu.Lock()
	if n.applied.Covers(want) {
		n.amu.Unlock()
		return nil
	}
	n.amu.Unlock()
	// Each replica once: its counter (its whole prefix) and its
	// out-of-order dots' counters, a range of one slice.
	type span struct {
		replica  crdt.ReplicaID
		counter  uint64
		from, to int
	}
	cloud := make([]crdt.Dot, 0, len(want.Cloud))
	for d := range want.Cloud {
		cloud = append(cloud, d)
	}
	slices.SortFunc(cloud, func(a, b crdt.Dot) int {
		if c := strings.Compare(string(a.Replica), string(b.Replica)); c != 0 {
			return c
		}
		return cmp.Compare(a.Counter, b.Counter)
	})
	spans := make([]span, 0, len(want.VV))
	counters := make([]uint64, len(cloud))
	at := make(map[crdt.ReplicaID]int, len(want.VV))
	for r, v := range want.VV {
		at[r] = len(spans)
		spans = append(spans, span{replica: r, counter: v})
	}
	for k := 0; k < len(cloud); {
		r := cloud[k].Replica
		i, ok := at[r]
		if !ok {
			i = len(spans)
			spans = append(spans, span{replica: r})
		}
		spans[i].from = k
		for ; k < len(cloud) && cloud[k].Replica == r; k++ {
			counters[k] = cloud[k].Counter
		}
		spans[i].to = k
	}
	if own {
		*want = crdt.Context{} // what waits is the lists above, not the maps
	}
	// Where the checks stand: the prefixes first, then each replica's
	// dots (span si, counter k: k is within spans[si] once started).
	prefixes, si, k, started := 0, 0, 0, false
	for {
		n.amu.Lock()
		for prefixes < len(spans) && n.applied.VV[spans[prefixes].replica] >= spans[prefixes].counter {
			// The applied context is kept compacted: its cloud never
			// holds the dot after its version vector's entry.
			prefixes++
		}
		if prefixes == len(spans) {
			for si < len(spans) {
				sp := &spans[si]
				if !started {
					k, started = sp.from, true
				}
				for k < sp.to && n.applied.Contains(crdt.Dot{Replica: sp.replica, Counter: counters[k]}) {
					k++
				}
				if k < sp.to {
					break
				}
				si, started = si+1, false
			}
		}
		if prefixes == len(spans) && si == len(spans) {
			n.amu.Unlock()
			return nil
		}
		r := spans[si].replica
		if prefixes < len(spans) {
			r = spans[prefixes].replica
		}
		w := n.waitReplica(r)
		n.amu.Unlock()
		select {
		case <-w.ch:
		case <-ctx.Done():
			n.leaveWait(r, w)
			return Errorf(CodeCausalTimeout, "region %s has not yet applied everything the token covers", n.name)
		}
	}
}

// MaxApplyKeys bounds the keys of one ApplyRemote (one store transaction
// sets at most 65,535 keys, the applied context among them).
const MaxApplyKeys = 0xffff - 1

// ApplyRemote joins a delta-group made by another region (or an
// anti-entropy repair) in one transaction and records the dots it carries
// in the applied context. Joins are idempotent, so a duplicate is harmless.
// Like write, it holds the locks of the keys it changes until the
// transaction is durable and its dots are in the applied context, so a
// read (Node.view) never shows the group's changes before the region's
// token covers them.
func (n *Node) ApplyRemote(dots *crdt.Context, g *crdt.Group) error {
	return n.ApplyReflecting(dots, g, nil)
}

// ApplyReflecting is ApplyRemote of a group whose states may reflect, beyond
// dots, the writes reflects covers: an anti-entropy repair (the context
// the sender's states reflected) or a delta whose dots the protocol holds
// unclaimed (its own dots). Until the applied context covers reflects, a
// read or write of a key of g adds reflects to its answer's token
// (answer.go); it is recorded before the keys' locks are released, so no
// read shows the group without it.
//
// A group applied with empty dots is taken for whole states (a repair);
// ApplyGroup says which it is.
func (n *Node) ApplyReflecting(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context) error {
	return n.ApplyGroup(dots, g, reflects, dots == nil || dots.Empty())
}

// ApplyGroup is ApplyReflecting of a group of whole states (state: an
// anti-entropy or read repair, a home's answer) or of deltas. The two
// differ only at a damaged key: a whole state replaces what the damage
// lost, while a delta is kept aside (pending.go) until a whole state
// comes, since joining it into the damaged (empty) state would rewrite
// the key from the delta alone.
func (n *Node) ApplyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool) error {
	return n.applyGroup(dots, g, reflects, state, nil)
}

// applyGroup is ApplyGroup that calls locked, if not nil, once it holds
// the locks of the group's keys and before it reads any of them.
func (n *Node) applyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool, locked func()) error {
	if dots == nil {
		dots = &crdt.Context{}
	}
	if g == nil {
		g = &crdt.Group{}
	}
	keys := make([]string, 0, g.Len())
	for id := range g.Carts {
		keys = append(keys, prefixCart+id)
	}
	for sku := range g.Items {
		keys = append(keys, prefixItem+sku)
	}
	if len(keys) > MaxApplyKeys {
		// Refused before the transaction: its commit step, which advances
		// the applied context and the digest, must not run for a
		// transaction the store then refuses.
		return fmt.Errorf("region: a remote group of %d keys exceeds the %d of one transaction", len(keys), MaxApplyKeys)
	}
	n.checkPartitionOf(g)
	if g, reflects = n.sanitizeRemote(g, reflects); g.Len() < len(keys) {
		// A state refused: which of the group's dots it carried cannot be
		// told, so none is claimed (claiming less is safe: a token naming
		// one waits; claiming a write without its state is not).
		dots = &crdt.Context{}
		keys = keys[:0]
		for id := range g.Carts {
			keys = append(keys, prefixCart+id)
		}
		for sku := range g.Items {
			keys = append(keys, prefixItem+sku)
		}
	}
	lk := n.store.Lock(keys...)
	defer lk.Unlock()
	if locked != nil {
		locked()
	}
	// A cart is stored as a head and a key per line, so a group of many
	// large carts (an anti-entropy repair) may set more keys than one
	// transaction can. The carts then go in several transactions, all
	// under the locks taken above; the items and the dots go with the
	// last, so the applied context claims the group only once all of it
	// is durable (a failure in between leaves joins that a retransmission
	// makes again, harmlessly).
	ids := slices.Sorted(maps.Keys(g.Carts))
	budget := MaxApplyKeys - 2*crdt.JoinCartEntries - len(g.Items) - 2
	for next := 0; ; {
		final := false
		err := lk.UpdateLocked(func(tx *store.Tx) error {
			for next < len(ids) && tx.Sets() <= budget {
				id := ids[next]
				next++
				if err := n.applyCart(tx, id, g.Carts[id], state); err != nil {
					return err
				}
			}
			if next < len(ids) {
				return nil
			}
			final = true
			return n.applyItems(tx, g, dots, state)
		}, func(tx *store.Tx) error {
			if !final {
				n.commitDigest(tx, nil)
				return nil
			}
			if !dots.Empty() {
				n.txApplied.Join(dots)
				tx.Set(keyApplied, crdt.EncodeContext(&n.txApplied))
			}
			n.storeReflects(tx, reflects)
			n.commitDigest(tx, dots)
			return nil
		})
		if err != nil {
			return err
		}
		if final {
			break
		}
	}
	src := "delta"
	if state {
		src = "repair"
	}
	n.m.Merges.WithLabelValues(src).Add(float64(len(keys)))
	// Before the deferred unlock.
	n.amu.Lock()
	n.applied.Join(dots)
	n.appliedGrew(dots)
	n.noteReflects(keys, reflects)
	n.amu.Unlock()
	return nil
}

// storeReflects records, in the commit function of a remote apply (under
// the store's write lock), what the states it stored may reflect beyond
// the applied context (keyReflects), or that the applied context now
// covers what was recorded.
func (n *Node) storeReflects(tx *store.Tx, reflects *crdt.Context) {
	switch {
	case reflects != nil && !reflects.Empty() && !n.txApplied.Covers(reflects) && !n.txReflects.Covers(reflects):
		r := n.txReflects.Clone()
		r.Join(reflects)
		if len(r.Cloud) > maxExtraCloud {
			r = r.Ceil()
		}
		n.txReflects = r
		tx.Set(keyReflects, crdt.EncodeContext(&r))
	case !n.txReflects.Empty() && n.txApplied.Covers(&n.txReflects):
		n.txReflects = crdt.Context{}
		tx.Set(keyReflects, []byte{})
	}
}

// openReflects loads keyReflects as the extra context every answer covers
// (extraState.overflow) until the applied context covers it. A damaged
// record is dropped with a warning: what it held cannot be known (the
// damage also makes the store a new incarnation that catches up).
func (n *Node) openReflects() error {
	return n.store.View([]string{keyReflects}, func(r store.Reader) error {
		b, ok, err := r.Get(keyReflects)
		var c crdt.Context
		if err == nil && ok && len(b) > 0 {
			c, err = crdt.DecodeContext(b)
		}
		if err != nil {
			n.log.Warn("the record of what repaired states show beyond the applied context is damaged; an answer's token may not cover a repaired state until its writes arrive",
				"key", keyReflects, "err", err)
			return nil
		}
		n.txReflects = c
		if !c.Empty() && !n.applied.Covers(&c) {
			o := c.Clone()
			n.extra.overflow = &o
			n.countExtra()
		}
		return nil
	})
}

// maxRemoteCounter bounds the counters a peer's states may carry: no
// replica issues that many writes, and a state past it would leave the
// next write here (a dot, a register version one higher) outside the
// range the codecs accept, so that the key no longer decodes.
const maxRemoteCounter = crdt.MaxCounter / 2

// sanitizeRemote takes out of a peer's group, logging why, what no honest
// region sends and what would damage this region beyond the peer's own
// writes: a cart whose context names counters past maxRemoteCounter
// (the protocol claims no such dot either); an item whose
// held register's version is past it; and, of reflects, the replicas of no cluster region, this region's own dots and
// counters past the bound (a token naming them would never be honoured).
// g and reflects are not changed: the result is a copy where needed.
//
// Grants of escrow rights are kept whoever wrote them: a sku's home may
// have moved since its old home granted them, and they are rights still
// out that the new home must count (a peer that could forge a grant
// could as well forge a restock).
func (n *Node) sanitizeRemote(g *crdt.Group, reflects *crdt.Context) (*crdt.Group, *crdt.Context) {
	badCtx := func(c *crdt.Context) bool {
		for _, v := range c.VV {
			if v > maxRemoteCounter {
				return true
			}
		}
		for d := range c.Cloud {
			if d.Counter > maxRemoteCounter {
				return true
			}
		}
		return false
	}
	var out *crdt.Group
	own := func() *crdt.Group {
		if out == nil {
			out = &crdt.Group{Carts: maps.Clone(g.Carts), Items: maps.Clone(g.Items)}
		}
		return out
	}
	for id, c := range g.Carts {
		if badCtx(&c.Ctx) {
			n.log.Error("refused a peer's cart state: its context names counters past any real one", "key", prefixCart+id)
			delete(own().Carts, id)
		}
	}
	for sku, it := range g.Items {
		if it.Held.Version > maxRemoteCounter {
			n.log.Error("refused a peer's stock state: its held register's version is past any real one", "key", prefixItem+sku)
			delete(own().Items, sku)
		}
	}
	if out != nil {
		g = out
	}
	if reflects != nil && !reflects.Empty() {
		var clean crdt.Context
		for r, v := range reflects.VV {
			if r != n.self && v <= maxRemoteCounter && n.isRegion(r.Region()) {
				if clean.VV == nil {
					clean.VV = make(map[crdt.ReplicaID]uint64, len(reflects.VV))
				}
				clean.VV[r] = v
			}
		}
		for d := range reflects.Cloud {
			if d.Replica != n.self && d.Counter <= maxRemoteCounter && n.isRegion(d.Replica.Region()) {
				clean.Insert(d)
			}
		}
		reflects = &clean
	}
	return g, reflects
}

// checkPartitionOf logs, at most once a minute, a remote group that holds
// keys of other partitions than this node's: a peer that places keys by
// another count of partitions (its config differs) replicates them to
// the wrong node, where no request for them looks. They are joined all
// the same (the peer's claims of its dots hold them); the log says why
// they are not served.
func (n *Node) checkPartitionOf(g *crdt.Group) {
	if n.opts.Partitions <= 1 {
		return
	}
	misplaced, example := 0, ""
	for id := range g.Carts {
		if config.PartitionOf(id, n.opts.Partitions) != n.opts.Partition {
			misplaced, example = misplaced+1, prefixCart+id
		}
	}
	for sku := range g.Items {
		if config.PartitionOf(sku, n.opts.Partitions) != n.opts.Partition {
			misplaced, example = misplaced+1, prefixItem+sku
		}
	}
	if misplaced == 0 {
		return
	}
	now := time.Now().UnixNano()
	if last := n.misplacedLog.Load(); last != 0 && now-last < int64(time.Minute) {
		return
	}
	n.misplacedLog.Store(now)
	n.log.Error("a peer replicates keys of other partitions to this node: do the regions' configs give the cluster the same partitions?",
		"partition", n.opts.Partition, "partitions", n.opts.Partitions, "keys", misplaced, "example", example)
}

// applyCart joins the remote state (whole, from anti-entropy or a read
// repair: state) or delta c of cart id into tx.
//
// A damaged cart takes only a whole state, which replaces what it lost
// (a state without this region's own writes that had not replicated loses
// them: the README's Limitations), joined with the deltas it received
// while damaged. A delta is not joined into it: the cart would be
// rewritten from the delta alone, without this region's own entries and
// dots that the damage hid, and its next write here would take one of
// those dots again, for another entry. The delta is kept aside instead
// (holdPending), so the region holds every write it claims; the cart stays
// damaged, left out of the digest, so anti-entropy brings a peer's whole
// state.
func (n *Node) applyCart(tx *store.Tx, id string, c *crdt.Cart, state bool) error {
	// A held-back cart (holdBackDamaged) may read whole and be noted
	// whole by this very load, at its release: the deltas kept aside for
	// it are taken all the same.
	was := state && n.carts.isDamaged(id)
	cur, part, err := n.loadCartFor(tx, id, c)
	if err != nil && !errors.Is(err, store.ErrCorrupt) {
		return err
	}
	damaged := err != nil || was || n.carts.isDamaged(id)
	if damaged && !state {
		return n.holdPending(tx, prefixCart+id, c, nil)
	}
	if damaged {
		held, err := n.takePending(tx, prefixCart+id)
		if err != nil {
			return err
		}
		if held != nil && held.cart != nil {
			c = c.Clone()
			c.Join(held.cart)
		}
	}
	if cur.Brings(c) && cur.Concurrent(c) {
		// Counted once: a state that brings nothing new (anti-entropy
		// after the delta) shows the same concurrent edit again.
		n.m.Concurrent.Inc()
	}
	if bad := cur.Conflicts(c); len(bad) > 0 {
		n.noteDivergent(prefixCart+id, bad)
	} else if n.ndivergent.Load() > 0 {
		n.clearDivergent(prefixCart + id)
	}
	if cur.Brings(c) || err != nil {
		cur.Join(c)
		return n.saveCart(tx, part, cur)
	}
	return nil
}

// applyItems joins the remote item states of g into tx and, with dots,
// stages the applied context's placeholder.
//
// A damaged item, like a damaged cart (applyCart), takes only a whole
// state, joined with the deltas kept aside meanwhile: an item rewritten
// from a delta alone would lose the counts the damage hid (a home's
// grants and commits, a region's use of its rights) and sell them again.
func (n *Node) applyItems(tx *store.Tx, g *crdt.Group, dots *crdt.Context, state bool) error {
	for sku, it := range g.Items {
		cur, err := loadItem(tx, sku)
		if err != nil && !errors.Is(err, store.ErrCorrupt) {
			return err
		}
		if err != nil && !state {
			if err := n.holdPending(tx, prefixItem+sku, nil, it); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			held, err := n.takePending(tx, prefixItem+sku)
			if err != nil {
				return err
			}
			if held != nil && held.item != nil {
				it = it.Clone()
				it.Join(held.item)
			}
		}
		if cur.Brings(it) || err != nil {
			if err == nil {
				if err := n.noteLostRestocks(tx, sku, cur, it); err != nil {
					return err
				}
			}
			granted := n.granted(sku, cur)
			cur.Join(it)
			tx.Set(prefixItem+sku, crdt.EncodeItem(cur))
			if n.granted(sku, cur) > granted {
				n.noteEscrow(sku, 0) // rights, however they came: returned when idle
			}
		}
	}
	if !dots.Empty() {
		tx.Set(keyApplied, nil) // placeholder: written under the lock
	}
	return nil
}

// noteLostRestocks adds to sku's count of lost restocks (prefixLostRestocks)
// what a peer's state it shows of restocks by this region's earlier
// incarnations beyond the stored item cur, when this region is the sku's
// home and catching up: restocks it made, lost from its store (among
// them, the first a replica made of the sku). A new store catching up for
// the first time (store.Fresh: a region added again under its name on an
// empty store) never had its name's history, so it lost none of it, and
// the returns it decides are its own.
func (n *Node) noteLostRestocks(tx *store.Tx, sku string, cur, it *crdt.Item) error {
	// At every region, not the sku's home only: a return is decided where
	// its reservation was, which may be a region that has since stopped
	// being the home.
	if !n.store.CatchingUp() || n.store.Fresh() {
		return nil
	}
	var lost uint64
	for r, v := range it.Stock.P {
		if had := cur.Stock.P[r]; r != n.self && r.Region() == string(n.name) && v > had {
			lost += v - had
		}
	}
	if lost == 0 {
		return nil
	}
	had, err := loadLostRestocks(tx, sku)
	if err != nil {
		return err
	}
	tx.Set(prefixLostRestocks+sku, []byte(strconv.FormatUint(min(had+lost, crdt.MaxCount), 10)))
	n.log.Warn("catch-up brought back restocks this region made and its store lost; returns of committed reservations of the sku take them as made",
		"sku", sku, "units", lost)
	return nil
}

// loadLostRestocks reads sku's count of lost restocks (0 if none).
func loadLostRestocks(r store.Reader, sku string) (uint64, error) {
	b, ok, err := r.Get(prefixLostRestocks + sku)
	if err != nil || !ok || len(b) == 0 {
		return 0, err
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, &store.CorruptError{Key: prefixLostRestocks + sku}
	}
	return v, nil
}

// view runs fn on a read-only snapshot of the store taken while holding
// the lock of key (shared with other reads, exclusive of writes), for a
// read that fn answers from key's value (and values written under key's
// lock, such as an item's ledger).
//
// Every write of key holds key's lock (exclusively) until it is durable
// and its dots are in n.applied (write, ApplyRemote). So the snapshot
// shows only writes of key that are durable in this region and whose dots
// n.applied holds, and every write of key acknowledged before the view
// began. The causal token of the answer is taken after view returns
// (api: Service.Token once the call is done); n.applied only grows, so
// that token covers everything the snapshot showed and everything the
// region acknowledged before the read. A token read while the lock is
// still held would cover no less, but no more of what fn saw either: the
// lock does not need to be held while it is encoded.
//
// A read waits only for the writes of key (or of a key on the same
// stripe) that hold its lock when it comes, that is for their fsync; reads
// of keys no one is writing do not wait. (A read barrier, which would let a
// read see the store at once and then wait until every transaction it may
// have seen is durable and claimed, made every read wait for an fsync
// while any key was being written: p50 0.4–1.5 ms against 6 µs for reads
// of keys no one wrote, BenchmarkReadsUnderWrites.)
//
// What key's state may reflect beyond n.applied (a repair's, a held
// delta's writes; answer.go) is added to ctx's Answer while the lock is
// held, so TokenFor(ctx) covers it too.
func (n *Node) view(ctx context.Context, key string, fn func(r store.Reader) error) error {
	lk := n.store.RLock(key)
	defer lk.Unlock()
	if err := lk.View(fn); err != nil {
		return err
	}
	n.noteShown(ctx, key)
	return nil
}

// ReadObjects returns the stored states of the given carts and items as a
// group (for anti-entropy). Damaged values are left out.
func (n *Node) ReadObjects(carts, items []string) (*crdt.Group, error) {
	g, _, err := n.readObjects(carts, items, false)
	return g, err
}

// unshippable reports whether a peer would refuse cart c: more entries
// than crdt.MaxCartEntries, or an encoding past crdt.MaxGroupBytes, which
// only a cart of many entries or removed dots may have (below
// unshippableFrom of each, an encoding takes well under it).
func unshippable(c *crdt.Cart) bool {
	n := len(c.Entries)
	if n > crdt.MaxCartEntries {
		return true
	}
	if n <= unshippableFrom && len(c.Ctx.Cloud) <= unshippableFrom {
		return false
	}
	return len(crdt.EncodeCart(c)) > crdt.MaxGroupBytes
}

const unshippableFrom = 8192

// readObjects is ReadObjects that also returns a context covering every
// write the states show: it reads under the keys' locks (shared), so it
// shows only writes that are durable and whose dots are in n.applied or
// in the keys' extra contexts, and takes both before it lets go. With
// strict, a damaged value fails the read (a *store.CorruptError) instead
// of being left out.
func (n *Node) readObjects(carts, items []string, strict bool) (*crdt.Group, crdt.Context, error) {
	keys := make([]string, 0, len(carts)+len(items))
	for _, id := range carts {
		keys = append(keys, prefixCart+id)
	}
	for _, sku := range items {
		keys = append(keys, prefixItem+sku)
	}
	lk := n.store.RLock(keys...)
	defer lk.Unlock()
	g := &crdt.Group{}
	err := lk.View(func(r store.Reader) error {
		for _, id := range carts {
			c, err := loadCart(n.cartReader(r), id)
			switch {
			case err == nil && unshippable(c):
				// More than a peer decodes: a join whose removals lag
				// behind its adds (crdt.MaxCartEntries, or an encoding
				// past crdt.MaxGroupBytes with long skus). It is left out
				// of anti-entropy (the peers that hold the removals
				// repair this region, not the other way round) and
				// refused to a quorum read, which would take its absence
				// for an empty cart.
				if strict {
					return fmt.Errorf("region: cart %s holds %d entries, more than a peer accepts (%d entries, %d bytes), until the removals of its other regions arrive", id, len(c.Entries), crdt.MaxCartEntries, crdt.MaxGroupBytes)
				}
				n.log.Warn("a cart holds more entries than a peer accepts, until the removals of its other regions arrive; anti-entropy leaves it out", "key", prefixCart+id, "entries", len(c.Entries))
			case err == nil && !c.Empty():
				// c is this read's own: the group takes it rather
				// than a copy (AddCart copies).
				if g.Carts == nil {
					g.Carts = make(map[string]*crdt.Cart, len(carts))
				}
				if cur, ok := g.Carts[id]; ok {
					cur.Join(c)
				} else {
					g.Carts[id] = c
				}
			case err != nil && (strict || !errors.Is(err, store.ErrCorrupt)):
				return err
			case err != nil:
				n.noteDamage(prefixCart + id) // left out of what is sent
			}
		}
		for _, sku := range items {
			it, err := loadItem(r, sku)
			switch {
			case err == nil && !it.Empty():
				g.AddItem(sku, it)
			case err != nil && (strict || !errors.Is(err, store.ErrCorrupt)):
				return err
			case err != nil:
				n.noteDamage(prefixItem + sku)
			}
		}
		return nil
	})
	if err != nil {
		return g, crdt.Context{}, err
	}
	c := n.Applied()
	if x := n.shownExtra(keys...); x != nil {
		c.Join(x)
	}
	return g, c, nil
}

func loadItem(r store.Reader, sku string) (*crdt.Item, error) {
	return load(r, prefixItem+sku, crdt.DecodeItemStored)
}

// load reads and decodes the stored state under key: the empty state if
// there is none, a *store.CorruptError (and the empty state) if it is damaged.
func load[T any](r store.Reader, key string, decode func([]byte) (*T, error)) (*T, error) {
	b, ok, err := r.Get(key)
	if err != nil {
		return new(T), err
	}
	if !ok {
		return new(T), nil
	}
	v, err := decode(b)
	if err != nil {
		return new(T), &store.CorruptError{Key: key}
	}
	return v, nil
}

func validateID(field, v string) error {
	if !crdt.ValidID(v) {
		return InvalidField(field, "%s must be 1-128 characters of [A-Za-z0-9._:-]", field)
	}
	return nil
}

// StoreStatus describes the region's store in /v1/cluster.
type StoreStatus struct {
	FileBytes   int64    `json:"file_bytes"`
	LiveBytes   int64    `json:"live_bytes"`
	Durability  string   `json:"durability"`
	CorruptKeys []string `json:"corrupt_keys"`
}

// ClusterStatus is the body of GET /v1/cluster.
type ClusterStatus struct {
	Region string `json:"region"`
	// Replica is the replica id of the region's current incarnation.
	Replica string `json:"replica"`
	// CatchingUp is true while a restored region has not yet completed
	// anti-entropy with every peer (it decides no reservation meanwhile).
	CatchingUp bool `json:"catching_up"`
	// DivergentKeys are keys found holding a dot with other content than
	// a peer's; each peer's unrepaired_keys lists keys anti-entropy
	// shipped again and again in vain. Both should always be empty.
	DivergentKeys []string          `json:"divergent_keys"`
	VersionVector map[string]uint64 `json:"version_vector"`
	Store         StoreStatus       `json:"store"`
	// Peers is each peer's replication state, from the replication layer.
	Peers []PeerStatus `json:"peers"`
	// Node, PartitionCount and Partitions describe a node of a
	// partitioned region (Partitions.Cluster): its name, the cluster's
	// partitions, and the status of each partition it serves. They are
	// left out when the region is not partitioned.
	Node           string            `json:"node,omitempty"`
	PartitionCount int               `json:"partition_count,omitempty"`
	Partitions     []PartitionStatus `json:"partitions,omitempty"`
}

// PartitionStatus is one partition of a partitioned region's node in GET
// /v1/cluster: its number and its status as a replica of its own.
type PartitionStatus struct {
	Partition int `json:"partition"`
	ClusterStatus
}

// Cluster returns this region's status; Options.Peers supplies the
// peers' replication state.
func (n *Node) Cluster() ClusterStatus {
	applied := n.Applied()
	vv := make(map[string]uint64, len(applied.VV))
	for r, c := range applied.VV {
		vv[string(r)] = c
	}
	file, live := n.store.Sizes()
	corrupt := n.store.Corrupt()
	slices.Sort(corrupt)
	st := ClusterStatus{Region: string(n.name), Replica: string(n.self), CatchingUp: n.CatchingUp(), DivergentKeys: n.Divergent(), VersionVector: vv,
		Store: StoreStatus{FileBytes: file, LiveBytes: live, Durability: string(n.store.Durability()), CorruptKeys: corrupt},
		Peers: []PeerStatus{}}
	if n.opts.Peers != nil {
		if peers := n.opts.Peers(); peers != nil {
			st.Peers = peers
		}
	}
	return st
}

// noteDivergent records that key holds entries under dots a peer holds
// with other content: counted, logged and listed in /v1/cluster.
func (n *Node) noteDivergent(key string, dots []crdt.Dot) {
	n.m.DivergentKeys.Inc()
	n.log.Error("a peer holds dots of this key with other content: some replica issued a dot twice; joins cannot repair this",
		"key", key, "dots", fmt.Sprint(dots))
	n.dmu.Lock()
	defer n.dmu.Unlock()
	if n.divergent == nil {
		n.divergent = make(map[string][]crdt.Dot)
	}
	if _, ok := n.divergent[key]; ok || len(n.divergent) < maxDivergent {
		n.divergent[key] = dots
	}
	n.ndivergent.Store(int32(len(n.divergent)))
}

// clearDivergent forgets that key diverged: a later remote state of it
// joined without conflict (a divergence that persists with some peer is
// found again, by its deltas or by anti-entropy's unrepaired keys).
func (n *Node) clearDivergent(key string) {
	n.dmu.Lock()
	defer n.dmu.Unlock()
	delete(n.divergent, key)
	n.ndivergent.Store(int32(len(n.divergent)))
}

// Divergent returns the keys found holding a dot with other content than
// a peer's, sorted.
func (n *Node) Divergent() []string {
	n.dmu.Lock()
	defer n.dmu.Unlock()
	out := make([]string, 0, len(n.divergent))
	for k := range n.divergent {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// CatchingUp reports whether the region began an incarnation that may
// have lost writes (an unclean stop, a damaged file, a restore; see
// store.Store.CatchingUp) and has not yet completed anti-entropy with every
// peer: until then it decides no reservation, commit, release,
// adjustment or checkout, since its ledgers may lack decisions its peers
// already count.
func (n *Node) CatchingUp() bool { return n.store.CatchingUp() }

// SyncedWith records that an anti-entropy round with peer completed (its
// applies durable); peers are all of the region's peers (none: a region
// alone catches up at once). Once a region catching up has synced with
// every peer — its stock counters then include every commit its peers
// hold, also those its store lost — it republishes its ledgers' held
// units and decides again. The holds its ledgers kept stay (each expires
// by its ttl); a hold its store lost is unknown here, so committing it is
// 404 not_found and its units are free again.
func (n *Node) SyncedWith(peer, homes string, peers []string) {
	n.noteHomes(peer, homes)
	if !n.store.CatchingUp() {
		return
	}
	n.dmu.Lock()
	if n.synced == nil {
		n.synced = make(map[string]bool)
	}
	n.synced[peer] = true
	done := true
	for _, p := range peers {
		done = done && n.synced[p]
	}
	n.dmu.Unlock()
	if !done {
		return
	}
	// Every peer has sent its state of the keys held back: a key still
	// damaged is written anew, empty, before the ledgers are read.
	if err := n.releaseHeldBack(); err != nil {
		return // logged; still catching up, the next round tries again
	}
	if err := n.republishHeld(); err != nil {
		n.log.Error("could not republish the held units of the ledgers; still catching up", "err", err)
		return
	}
	if err := n.store.CaughtUp(); err != nil {
		n.log.Error("could not record that the restored region caught up", "err", err)
		return
	}
	n.wakeDeciders()
	if !n.homesOK.Load() {
		n.dmu.Lock()
		peers := n.unconfirmedPeers()
		n.dmu.Unlock()
		n.log.Warn("the region has caught up with every peer but decides as a home only once every peer runs the same homes rules and regions",
			"unconfirmed", peers)
		return
	}
	n.log.Info("the region has caught up with every peer and decides reservations again")
}

// DefaultCatchUpWait is the Options.CatchUpWait of a region that serves:
// a new region's first anti-entropy rounds, with peers as new as itself,
// take a few round trips.
const DefaultCatchUpWait = 2 * time.Second

// DefaultStartGate is the Options.StartGate of a region that serves: a
// peer that is up answers a first connection within a QUIC handshake
// (transport.Config.HandshakeTimeout, 3 s, bounds one that gets no
// packet).
const DefaultStartGate = 3 * time.Second

// waitCaughtUp reports whether the region decides as a home (decidesAsHome),
// waiting for it up to Options.CatchUpWait or a little before ctx's
// deadline.
func (n *Node) waitCaughtUp(ctx context.Context) bool {
	if n.decidesAsHome() {
		return true
	}
	d := n.opts.CatchUpWait
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)*3/4)
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		n.dmu.Lock()
		if n.caughtUp == nil {
			n.caughtUp = make(chan struct{})
		}
		ch := n.caughtUp
		n.dmu.Unlock()
		if n.decidesAsHome() {
			return true // before the channel was made
		}
		select {
		case <-ch:
		case <-t.C:
			return n.decidesAsHome()
		case <-ctx.Done():
			return n.decidesAsHome()
		}
	}
}

// republishHeld publishes the held units of every ledger anew, at a
// version above every version the peers hold (the item was just joined
// with theirs): what an earlier incarnation published last may differ
// from what the ledger now holds. Holds past their expiry expire on the
// way. An item this region decides that shows held units but has no
// ledger here (the ledger was written after the backup the region was
// restored from, or in a lost tail) is republished too, as held by none:
// else the peers would show its lost holds for good, since every region,
// this one included, holds the same stale figure and anti-entropy finds
// no difference.
func (n *Node) republishHeld() error {
	var skus []string
	has := map[string]bool{}
	err := n.store.Scan(prefixLedger, func(k string, _ []byte, _ error) bool {
		skus = append(skus, k[len(prefixLedger):])
		has[k[len(prefixLedger):]] = true
		return true
	})
	if err != nil {
		return err
	}
	err = n.store.Scan(prefixItem, func(k string, v []byte, err error) bool {
		sku := k[len(prefixItem):]
		if err != nil || has[sku] || !n.decides(n.HomeOf(sku), sku) {
			return true
		}
		if it, err := crdt.DecodeItemStored(v); err == nil && it.Held.Value != 0 {
			skus = append(skus, sku)
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, sku := range skus {
		var damaged error
		err := n.write(context.Background(), []string{prefixItem + sku}, func(tx *store.Tx, g *crdt.Group) error {
			it, l, err := n.loadForDecision(tx, g, sku, n.clock.Now())
			if errors.Is(err, store.ErrCorrupt) {
				damaged = err
				return nil
			}
			if err != nil {
				return err
			}
			released := !n.decides(n.HomeOf(sku), sku) && n.releaseUncovered(tx, sku, it, l)
			// Published anew only where it differs from what every region
			// shows (the joined register): a write issues a dot, and a
			// run that issued one starts a new incarnation at its next
			// unclean stop — every restart would, for a home with an
			// open hold.
			if released || g.Len() > 0 || it.Held.Value != l.held() {
				n.saveLedger(tx, g, sku, it, l)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if damaged != nil {
			// A damaged ledger or item: its decisions answer 503 until
			// it is repaired or restored; the region's other skus go on.
			n.log.Warn("could not republish the held units of a damaged sku; its reservations are refused until it is repaired", "sku", sku, "err", damaged)
		}
	}
	return nil
}

// releaseUncovered releases holds of sku, decided here from this
// region's rights, that its rights no longer cover: the newest first,
// until what its ledger holds is within the rights it has outstanding.
// It reports whether it released any (the ledger is then to be saved).
// Every hold takes units of the region's rights, and neither a return nor
// a recall touches held units, so only a lost tail makes a ledger hold
// more: with everysec, a release lost to a power loss while the return of
// its units (which replicated) came back by catch-up; the home may have
// sold those units since. Committing such a hold would sell them twice; a
// hold released here answers its commit 409 released instead, so fewer
// units are sold, never more.
func (n *Node) releaseUncovered(tx *store.Tx, sku string, it *crdt.Item, l *ledger) bool {
	over := l.held() - it.Outstanding(string(n.name))
	if over <= 0 {
		return false
	}
	ids := slices.Collect(maps.Keys(l.Holds))
	slices.SortFunc(ids, func(a, b string) int {
		_, _, sa, _ := parseReservationID(a)
		_, _, sb, _ := parseReservationID(b)
		return cmp.Compare(sb, sa)
	})
	var released []string
	for _, id := range ids {
		if over <= 0 {
			break
		}
		over -= l.Holds[id].Qty
		delete(l.Holds, id)
		released = append(released, id)
		if rec, ok, err := loadRes(tx, id); err == nil && ok && rec.State == StateHeld {
			rec.State = StateReleased
			tx.Set(prefixRes+id, encode(rec))
		}
	}
	n.log.Warn("released holds that this region's rights no longer cover: the store lost transitions that had given their units back",
		"sku", sku, "reservations", released)
	return true
}

// NoteUnrepaired records the keys anti-entropy with peer keeps shipping
// without repairing them (see PeerStatus.UnrepairedKeys).
func (n *Node) NoteUnrepaired(peer string, keys []string) {
	n.dmu.Lock()
	defer n.dmu.Unlock()
	if len(keys) == 0 {
		delete(n.unrepaired, peer)
		return
	}
	if n.unrepaired == nil {
		n.unrepaired = make(map[string][]string)
	}
	n.unrepaired[peer] = slices.Clone(keys)
}

// Warnings returns what an operator should look at although the region
// serves: divergent or unrepaired keys, and a restore still catching up.
// GET /readyz shows them.
func (n *Node) Warnings() []string {
	var out []string
	if n.CatchingUp() {
		out = append(out, "new, new homes, or may have lost writes (an unclean stop, a damaged file or a restore): catching up with its peers; reservations are refused until then")
	}
	if !n.homesOK.Load() {
		n.dmu.Lock()
		peers := n.unconfirmedPeers()
		n.dmu.Unlock()
		out = append(out, fmt.Sprintf("peers not yet seen to run the same homes rules and regions: %s; reservations at this region's homes are refused until every peer has", strings.Join(peers, ", ")))
	}
	if d := n.Divergent(); len(d) > 0 {
		out = append(out, fmt.Sprintf("%d keys hold a dot with other content than a peer's (divergent_keys in /v1/cluster)", len(d)))
	}
	n.dmu.Lock()
	peers := slices.Sorted(maps.Keys(n.unrepaired))
	for _, p := range peers {
		out = append(out, fmt.Sprintf("anti-entropy with %s ships %d keys again and again without repairing them (unrepaired_keys in /v1/cluster)", p, len(n.unrepaired[p])))
	}
	n.dmu.Unlock()
	return out
}
