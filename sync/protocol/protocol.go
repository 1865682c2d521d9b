// Package protocol is Lattice's replication protocol as a single-threaded
// state machine with no I/O, no clock and no goroutines: inputs are local
// deltas (Local), messages from peers (Step), connectivity (PeerUp,
// PeerDown) and time (Tick); outputs, collected by Ready, are deltas to
// apply to the store and messages to send.
//
// The driver's loop is: feed inputs, call Ready, apply every Apply to the
// store durably, THEN send every message (an acknowledgement must never
// leave before the delta it acknowledges is stored), and repeat. The
// protocol reads the store only through Storage.
//
// Deltas. Every local write is a delta-group named by one region-level dot
// (origin, seq). A region keeps recent deltas in a bounded buffer and sends
// each to every peer that still needs it, batching what is pending into one
// delta-group per message, within a window of unacknowledged bytes sized
// to the path, and with retransmission after a timeout. Deltas received from a peer are never
// sent back to it (back-propagation), and a delta whose dots this region
// has all seen is neither applied nor relayed (redundancy).
//
// Window. Each peer's window is twice its bandwidth-delay product: the
// smoothed round trip of its acknowledgements (from a message's sending to
// its acknowledgement, never for a message sent again) times the rate at
// which deltas for it enter the buffer, bounded by MinWindowBytes below
// and MaxWindowBytes above; whatever the bytes, Window messages may always
// be in flight and MaxWindow never more. A delta is sent the moment it is
// written unless the window is full; while it is, pending deltas wait and
// leave batched. A window sized to the demand rather than to what was sent
// cannot lock itself small.
//
// Pacing. Each message costs its envelope (tag, dots, acknowledgements)
// on top of its deltas. When deltas for a peer come faster than one per
// BatchDelay (the last message to it left less than BatchDelay ago), the
// next one waits up to BatchDelay for others to leave with it; a delta a
// client waits on (Urge) never waits, nor does a batch of holdBytes. The
// protocol has no clock: Due says when a held batch comes due, and the
// driver calls Flush then.
//
// Relays. A delta is relayed from one peer to another only after
// RelayDelay, and only if the other peer has not reported (in the applied
// context it piggybacks on acknowledgements) that it has those dots. In a
// healthy full mesh each delta thus crosses the network R−1 times; a region
// cut off from the origin still gets it through a third region.
//
// Anti-entropy. After a peer reconnects, when the buffer dropped deltas a
// peer still needed, and every AntiEntropyEvery, the regions compare
// their key spaces as a tree of fingerprints (tree.go), descending only
// into the nodes that differ, and ship only the keys that differ, both
// ways (push-pull), at most AntiEntropyRate bytes a second. Each side's
// applied context is taken no later than the first fingerprint it gives
// (states only grow, so every later one describes at least that state),
// so once a round has covered every differing node each side may adopt
// the other's applied context (the dots its state reflects).
//
// Claims. Every dot the protocol takes as applied (a delta's, an adopted
// context's) reaches the store's applied context, which tokens promise
// and peers adopt. The protocol claims dots of cluster regions only, and
// of each only those within a window past its version vector entry, so
// every context it keeps, stores or sends stays bounded and decodable.
// Claiming fewer dots than a region holds is always safe: a delta whose
// dots are not claimed is applied again if it comes again, and a later
// anti-entropy round claims them.
package protocol

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Snapshot is a consistent view of a region's replicated key space
// (crdt.KeyBucket places keys in buckets, crdt.StateHash hashes states).
type Snapshot = crdt.Digest

// Storage is what the protocol reads of its region. It never writes:
// writes leave as Applies.
type Storage interface {
	// Snapshot computes the digest and applied context and, in the same
	// instant, the key hashes of the buckets choose picks from the digest
	// (choose may be nil for none).
	Snapshot(choose func(digest []uint64) []uint32) (*Snapshot, error)
	// Read returns the current states of keys (absent or damaged keys are
	// left out) and a context that covers every write those states show
	// (the region's applied context, and more where a state reflects
	// writes whose dots it has not claimed), taken consistently with them.
	Read(keys []string) (*crdt.Group, crdt.Context, error)
}

// Config tunes the protocol. DefaultConfig gives values for WAN links.
type Config struct {
	// Buckets is the number of digest buckets (same in every region).
	Buckets int
	// Homes names what decides the homes of skus here
	// (config.Config.HomesID), shown to each peer in every anti-entropy
	// round (Message.Homes); "" shows none.
	Homes string
	// MaxBufferEntries and MaxBufferBytes bound the delta buffer; a peer
	// that still needed a dropped delta is repaired by anti-entropy.
	// MaxBufferBytes bounds its memory: each delta counts its encoding
	// and the group it keeps decoded (estimated, entryMem).
	MaxBufferEntries int
	MaxBufferBytes   int
	// MaxMessageBytes bounds the delta-group of one message.
	MaxMessageBytes int
	// Window is the number of unacknowledged delta messages a peer may
	// always have in flight, however small its window in bytes;
	// MaxWindow bounds them whatever the window.
	Window    int
	MaxWindow int
	// MaxWindowBytes bounds the bytes of unacknowledged delta-groups in
	// flight to a peer (see the package doc for the window between).
	MaxWindowBytes int
	// RetransmitAfter is when an unacknowledged message is sent again.
	RetransmitAfter time.Duration
	// BatchDelay bounds how long a delta may wait for others to leave
	// with it in one message, when deltas for a peer come faster than
	// one per BatchDelay (0: never).
	BatchDelay time.Duration
	// RelayDelay is how long a delta from one peer waits before it is
	// relayed to another that has not reported it.
	RelayDelay time.Duration
	// AckDelay is how long acknowledgements owed to a peer wait for a
	// delta to that peer to ride on before they leave on their own (at
	// the first Tick after it); acknowledgements a peer asked for at
	// once (Message.Urgent) never wait. The window's round trip includes
	// the wait.
	AckDelay time.Duration
	// StatusInterval bounds how often a region's applied context rides on
	// its acknowledgements (or travels alone when it changed).
	StatusInterval time.Duration
	// AntiEntropyEvery is the period of anti-entropy with each peer.
	AntiEntropyEvery time.Duration
	// AntiEntropyTimeout abandons a round that got no answer.
	AntiEntropyTimeout time.Duration
	// MaxRoundKeys bounds the keys an anti-entropy tree node may hold
	// for a region to list them (at most ListKeys); it splits a larger
	// one.
	MaxRoundKeys int
	// AntiEntropyRate bounds the bytes of states anti-entropy ships and
	// pulls per second with each peer (0: no bound), so that a large
	// repair does not crowd out the live path.
	AntiEntropyRate int
}

// Validate reports the first setting out of range, or nil.
func (c Config) Validate() error {
	switch {
	case c.Buckets < 1 || c.Buckets > MaxBuckets:
		return fmt.Errorf("protocol: Buckets %d out of 1..%d", c.Buckets, MaxBuckets)
	case c.MaxBufferEntries < 1 || c.MaxBufferBytes < 1:
		return fmt.Errorf("protocol: the delta buffer must hold at least one delta (entries %d, bytes %d)", c.MaxBufferEntries, c.MaxBufferBytes)
	case c.MaxMessageBytes < 1 || c.MaxMessageBytes > MaxMessageBytes:
		return fmt.Errorf("protocol: MaxMessageBytes %d out of 1..%d", c.MaxMessageBytes, MaxMessageBytes)
	case c.Window < 1:
		return fmt.Errorf("protocol: Window %d must be at least 1", c.Window)
	case c.MaxWindow < c.Window || c.MaxWindow > MaxWindow:
		return fmt.Errorf("protocol: MaxWindow %d out of Window (%d)..%d", c.MaxWindow, c.Window, MaxWindow)
	case c.MaxWindowBytes < MinWindowBytes:
		return fmt.Errorf("protocol: MaxWindowBytes %d below %d", c.MaxWindowBytes, MinWindowBytes)
	case c.RetransmitAfter <= 0 || c.StatusInterval <= 0 || c.AntiEntropyEvery <= 0 || c.AntiEntropyTimeout <= 0:
		return errors.New("protocol: RetransmitAfter, StatusInterval, AntiEntropyEvery and AntiEntropyTimeout must be positive")
	case c.RelayDelay < 0 || c.AckDelay < 0:
		return errors.New("protocol: RelayDelay and AckDelay must not be negative")
	case c.BatchDelay < 0 || c.BatchDelay > MaxBatchDelay:
		return fmt.Errorf("protocol: BatchDelay %s out of 0..%s", c.BatchDelay, MaxBatchDelay)
	case c.AckDelay >= c.RetransmitAfter/2:
		return fmt.Errorf("protocol: AckDelay %s must be under half of RetransmitAfter (%s)", c.AckDelay, c.RetransmitAfter)
	case c.MaxRoundKeys < 1 || c.MaxRoundKeys > MaxKeys:
		return fmt.Errorf("protocol: MaxRoundKeys %d out of 1..%d", c.MaxRoundKeys, MaxKeys)
	case c.AntiEntropyRate < 0:
		return fmt.Errorf("protocol: AntiEntropyRate %d must not be negative", c.AntiEntropyRate)
	}
	return nil
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Buckets:          1024,
		MaxBufferEntries: 1 << 16,
		MaxBufferBytes:   64 << 20,
		MaxMessageBytes:  1 << 20,
		Window:           16,
		MaxWindow:        4096,
		MaxWindowBytes:   16 << 20,
		RetransmitAfter:  2 * time.Second,
		// 500 µs: at 2,000 ops/s over three regions a 1 ms delay held
		// deltas long enough to put convergence p50 at the one-way delay
		// + 1.9–2.3 ms; 500 µs gave + 1.5–1.9 ms for 7 % more bytes
		// (bench/RESULTS.md), and 1.12 × the deltas at 10,000 updates/s.
		BatchDelay:         500 * time.Microsecond,
		RelayDelay:         500 * time.Millisecond,
		AckDelay:           50 * time.Millisecond,
		StatusInterval:     250 * time.Millisecond,
		AntiEntropyEvery:   30 * time.Second,
		AntiEntropyTimeout: 10 * time.Second,
		MaxRoundKeys:       MaxKeys,
		AntiEntropyRate:    DefaultAntiEntropyRate,
	}
}

// Apply is a change to make durable before the Ready's messages are sent:
// join Group into the store and Dots into the applied context.
type Apply struct {
	From  crdt.ReplicaID
	Dots  crdt.Context
	Group *crdt.Group
	// Ranges are the delta's new dots with their origin times, for
	// convergence measurement (empty for anti-entropy repairs).
	Ranges []DotRange
	// Reflects covers the writes Group's states may show beyond Dots:
	// for an anti-entropy repair, the context the sender's states
	// reflected (Message.Reflects); for a delta whose dots lie past the
	// claims window, its own dots, which the protocol holds unclaimed.
	// It is NOT a claim: the store does not join it into its applied
	// context, which tokens promise and peers adopt; a region only
	// answers a read of those keys with a token that covers it too, so
	// that the next region serving that token waits until it has those
	// writes (region.Node.ApplyReflecting).
	Reflects crdt.Context
	// State says that Group holds whole states (an anti-entropy repair),
	// not deltas; a store takes only whole states into a key whose value
	// is damaged (region.Node.ApplyGroup). Dots alone do not tell: a
	// delta past the claims window is applied with none.
	State bool
}

// Envelope is a message for one peer.
type Envelope struct {
	To  crdt.ReplicaID
	Msg *Message
}

// Ready is the protocol's output since the last call. The driver must
// make every Apply durable in the region's store BEFORE it sends any of
// Messages (an acknowledgement, a reported context or an anti-entropy
// answer must never promise what the store does not hold), and tell the
// protocol with Discard if it could not, sending none of Messages then
// (the peers retransmit). replication.Driver.Process carries out a Ready
// in this order, for the replicator and for the seeded simulation alike.
type Ready struct {
	Applies  []Apply
	Messages []Envelope
	// Synced lists the peers with which an anti-entropy round completed:
	// once the Applies are durable, this region's state includes
	// everything the peer's state held when the round began.
	Synced []Synced
	// Homes lists the peers whose homes a round of ours has shown, once
	// everything the round pulls from them is among the Applies (before
	// it pushes what they lack, which Synced waits for): once the
	// Applies are durable, this region holds every decision the peer
	// had made when it showed those homes.
	Homes []Synced
}

// Synced is a peer with which an anti-entropy round completed, and the
// homes it showed in that round (Message.Homes; "" from a peer that
// shows none).
type Synced struct {
	Peer  crdt.ReplicaID
	Homes string
}

// LocalDelta is a durable local write.
type LocalDelta struct {
	Seq   uint64
	Group *crdt.Group
	At    time.Time
}

// MaxCloudDots bounds the dots beyond the version vector (received out of
// order) of the contexts the protocol keeps and sends: each cluster
// region's share is a window of MaxCloudDots/R dots past its version
// vector entry. The applied context is the region's causal token, which
// must stay within crdt.MaxTokenBytes (8 KiB) however its dots fall, and
// the store's applied context must stay decodable when the region
// restarts.
const MaxCloudDots = 512

type entry struct {
	seq     uint64
	from    crdt.ReplicaID // "" for a local delta
	dots    []DotRange
	group   *crdt.Group
	enc     []byte    // group's canonical encoding (crdt.EncodeGroup)
	size    int       // len(enc)
	mem     int       // what it holds in memory (entryMem)
	at      time.Time // when it entered the buffer
	pending uint64    // peers (by index) that still need it
	sent    uint64    // peers it is in flight to
	urgent  bool      // a client waits for its acknowledgements
}

type inflight struct {
	seqs   []uint64
	size   int // bytes of its delta-groups
	sentAt time.Time
	batch  uint64 // the Ready it left in
}

// Window sizing and pacing (see the package doc).
const (
	// MaxBatchDelay bounds Config.BatchDelay.
	MaxBatchDelay = 10 * time.Millisecond
	// holdBytes is the size of a batch that leaves without waiting.
	holdBytes = 1200
	// MinWindowBytes is the least window in bytes of a peer.
	MinWindowBytes = 16 << 10
	// MaxWindow bounds Config.MaxWindow.
	MaxWindow = MaxKeys
	// windowGain is the window's multiple of the bandwidth-delay product.
	windowGain = 2
	// rateEvery is how often a peer's offered rate is sampled, and
	// rateHorizon the time constant of its moving average.
	rateEvery   = 100 * time.Millisecond
	rateHorizon = 500 * time.Millisecond
)

// PeerStatus is what the protocol knows of its replication to one peer.
// The replication driver composes region.PeerStatus, the peer's entry in
// GET /v1/cluster, from it.
type PeerStatus struct {
	Region        string
	Connected     bool
	PendingDeltas int
	PendingBytes  int
	InflightMsgs  int
	LagMs         int64
	LastAck       *time.Time
	PeerApplied   map[string]uint64
	AntiEntropy   string
	AERounds      uint64
	// UnrepairedKeys are keys that anti-entropy with the peer shipped
	// UnrepairedRounds rounds in a row without either side's state
	// changing: a divergence joins cannot repair (at most MaxUnrepaired
	// are listed).
	UnrepairedKeys []string
	AEKeysPushed   uint64
	AEKeysPulled   uint64
	// AERate is the bound on the bytes a second anti-entropy ships and
	// pulls with the peer (Config.AntiEntropyRate, 0: none).
	AERate          int
	LastAntiEntropy *time.Time
	BytesSent       uint64
	DeltasSent      uint64
	// RTT is the smoothed round trip of acknowledgements (0 before the
	// first), InflightBytes the bytes of delta-groups unacknowledged, and
	// WindowBytes the window they may fill.
	RTT           time.Duration
	InflightBytes int
	WindowBytes   int
}

type peer struct {
	// aeTokens is the anti-entropy rate's balance of bytes with the
	// peer, refilled to aeRefilled, kept across rounds.
	aeTokens   float64
	aeRefilled time.Time

	// claimed are the rounds of the peer's whose step 1 we answered with
	// our applied context (noteClaim), the latest maxClaimedRounds.
	claimed []uint64

	id       crdt.ReplicaID
	bit      uint64
	up       bool
	nextMsg  uint64
	inflight map[uint64]*inflight
	// resent holds the buffer positions of the last messages sent again
	// (by tag, oldest first in resentTags): a late acknowledgement of one
	// still counts, the peer did apply it.
	resent     map[uint64][]uint64
	resentTags []uint64
	applied    crdt.Context // as the peer last reported it
	lastAck    time.Time

	// The window: bytes in flight, the smoothed round trip (0 until an
	// acknowledgement measured it), and the rate (bytes per second) at
	// which deltas for the peer enter the buffer, averaged from offered
	// bytes counted since rateAt.
	inflightBytes int
	srtt          time.Duration
	rate          float64
	offered       int
	rateAt        time.Time

	// next holds, for the buffer's local deltas and relays (bufLocal,
	// bufRelay), a position (seq) before which every entry is in flight
	// to the peer or not pending for it: flush and holding look from
	// there, so that a message costs in proportion to what it sends, not
	// to the buffer. Whatever clears an entry's sent bit moves it back.
	next [2]uint64

	// lastDelta is when the last delta message to it left; holdUntil,
	// when a held batch for it comes due (zero: none held).
	lastDelta time.Time
	holdUntil time.Time

	reported     crdt.Context // our applied context as last reported to it
	lastReported time.Time
	acks         []uint64 // tags of its delta messages we owe an ack
	acksSince    time.Time
	ackNow       bool // it asked for them at once (Message.Urgent)

	needAE bool
	// dropped is when the oldest delta the buffer dropped while it was
	// still pending for the peer was made, until an anti-entropy round
	// covers every difference (zero: none): its lag counts from there.
	dropped time.Time
	ae      *aeRound
	resp    *aeResp // the peer's round we answer
	lastAE  time.Time
	aeCount uint64
	pushed  uint64
	pulled  uint64

	bytesSent  uint64
	deltasSent uint64

	// shipped are the keys the last anti-entropy round with the peer
	// shipped, with the pair of hashes (ours, theirs) they had; a key that
	// differs again with the same pair has gained nothing from the
	// exchange. unrepaired counts, per key, how many rounds in a row that
	// happened.
	shipped    map[string][2]uint64
	unrepaired map[string]int

	// answered are the rounds of the peer's digests this run answered
	// (the latest few): only the objects of such a round may make it
	// adopt the peer's context, since only then were the keys pushed
	// chosen against this run's state (a run after a restart that lost
	// writes must not adopt a round its predecessor answered).
	answered []uint64
}

// Protocol is one region's replication state machine. It is not safe for
// concurrent use.
type Protocol struct {
	// self is this region's current incarnation (crdt.Incarnation), the
	// replica of its local dots; region is its name.
	self   crdt.ReplicaID
	region string
	// latest is the highest incarnation seen of each region: only its
	// dots may be claimed out of order (older incarnations issue no more
	// dots, so theirs are claimed in order), which keeps the dots out of
	// order within MaxCloudDots however many incarnations a region had.
	latest map[string]uint64
	cfg    Config
	st     Storage
	peers  []*peer
	byID   map[crdt.ReplicaID]*peer

	seen crdt.Context // every dot this region has (or is about to have) applied
	// held are dots of deltas this region has applied (or is about to)
	// without claiming them, past the window of out-of-order dots; they
	// are claimed when the version vector comes near.
	held   map[crdt.Dot]struct{}
	heldVV map[crdt.ReplicaID]uint64 // seen.VV when held was last tried
	// The buffer: local deltas (buf) and deltas from peers kept for
	// relaying (relays), each in the order of seq, and their bytes.
	buf    []*entry
	relays []*entry
	bufLen int // the buffer's memory (entry.mem)
	seq    uint64
	// localBytes counts the bytes of the canonical encodings of this
	// region's own deltas (Local), for LocalBytes.
	localBytes uint64
	round      uint64
	run        uint64 // names this run to peers (anti-entropy), from the clock
	batch      uint64 // Ready calls so far
	now        time.Time

	out Ready
	err error
}

// New returns the protocol of region self with the given peers. seen is
// the applied context of the region's store. Every peer starts in need of
// anti-entropy: a restarted region's buffers are gone.
func New(self crdt.ReplicaID, peers []crdt.ReplicaID, seen crdt.Context, st Storage, cfg Config) *Protocol {
	p := &Protocol{self: self, region: self.Region(), cfg: cfg, st: st, byID: make(map[crdt.ReplicaID]*peer),
		latest: map[string]uint64{self.Region(): self.Incarnation()}}
	ids := slices.Clone(peers)
	slices.Sort(ids)
	for i, id := range ids {
		if string(id) == p.region || i >= 64 {
			continue
		}
		pr := &peer{id: id, bit: 1 << uint(len(p.peers)), inflight: make(map[uint64]*inflight),
			resent: make(map[uint64][]uint64), needAE: true}
		p.peers = append(p.peers, pr)
		p.byID[id] = pr
	}
	p.seen = seen // its own dots are this region's: bounded keeps them
	p.seen = p.bounded(&seen)
	return p
}

// Ready returns and clears the outputs collected so far. Acknowledgements
// a peer asked for at once (Message.Urgent) leave in it, one message per
// peer however many of its deltas came since the last call.
func (p *Protocol) Ready() Ready {
	for _, pr := range p.peers {
		if pr.ackNow && pr.up && len(pr.acks) > 0 {
			p.send(pr, &Message{Kind: KindAck})
		}
		pr.ackNow = false
	}
	r := p.out
	p.out = Ready{}
	p.batch++
	return r
}

// Discard tells the protocol that the driver could not make the Applies
// of the last Ready durable and sent none of its messages; applied is the
// applied context the region's store holds. The protocol forgets the dots
// it took for applied beyond it, so that the peers' retransmissions are
// applied instead of being dropped as redundant; it sends the lost delta
// messages again, reports its applied context again, and runs
// anti-entropy with every peer (an adopted context may have been lost).
func (p *Protocol) Discard(applied crdt.Context, now time.Time) {
	p.now = now
	p.seen = applied // as in New
	p.seen = p.bounded(&applied)
	p.held = nil // their deltas may not have been applied
	lost := p.batch - 1
	for _, pr := range p.peers {
		p.requeue(pr, func(f *inflight) bool { return f.batch == lost })
		pr.reported = crdt.Context{}
		pr.lastReported = time.Time{}
		pr.needAE = true
		pr.ae = nil
		pr.resp = nil // what it recorded may not be durable
		// Acknowledgements owed for deltas received since the last one
		// sent: some of them were in the batch whose apply failed, and an
		// acknowledgement says a delta is durable here. The peer sends
		// them again (joins repeat harmlessly).
		pr.acks, pr.acksSince, pr.ackNow = nil, time.Time{}, false
	}
}

// member reports whether r is an incarnation of a region of the cluster.
func (p *Protocol) member(r crdt.ReplicaID) bool {
	reg := r.Region()
	return reg == p.region || p.byID[crdt.ReplicaID(reg)] != nil
}

// outOfOrder reports whether dots of r may be claimed out of order: r is
// the latest incarnation of its region seen so far.
func (p *Protocol) outOfOrder(r crdt.ReplicaID) bool {
	reg, k := r.Region(), r.Incarnation()
	if k > p.latest[reg] {
		if reg != p.region || k <= p.self.Incarnation() {
			p.latest[reg] = k
		}
	}
	return k >= p.latest[reg]
}

// capCounters returns c without the dots past maxClaim (c itself if it
// has none). A version vector entry past it keeps nothing of its replica.
func capCounters(c *crdt.Context) *crdt.Context {
	over := false
	for _, v := range c.VV {
		over = over || v > maxClaim
	}
	for d := range c.Cloud {
		over = over || d.Counter > maxClaim
	}
	if !over {
		return c
	}
	out := crdt.Context{VV: make(map[crdt.ReplicaID]uint64, len(c.VV))}
	for r, v := range c.VV {
		if v <= maxClaim {
			out.VV[r] = v
		}
	}
	for d := range c.Cloud {
		if d.Counter <= maxClaim && c.VV[d.Replica] <= maxClaim {
			if out.Cloud == nil {
				out.Cloud = make(map[crdt.Dot]struct{})
			}
			out.Cloud[d] = struct{}{}
		}
	}
	return &out
}

// admit returns the part of c that may be joined into base: dots of
// cluster regions only and, of each region r, only dots up to
// base.VV[r] + cloudWindow beyond its version vector (dots that extend
// the version vector count as its part). A context kept that way never
// holds more than MaxCloudDots dots out of order, however many peers
// send, and dots claimed far ahead of what a region has of their origin
// cannot crowd out the ones that will fill its gaps.
func (p *Protocol) admit(base, c *crdt.Context) crdt.Context {
	out, _ := p.admitAll(base, c)
	return out
}

// maxClaim bounds the counters admit takes from a peer: no replica issues
// that many writes, and a claim past it (a buggy or hostile peer's) would
// leave the next dot issued under it outside the range the codecs accept.
const maxClaim = crdt.MaxCounter / 2

// admitAll is admit that also returns the dots of cluster regions it left
// out (past the window). Counters past maxClaim are left out too, and so
// are dots of this region's own incarnation it never issued (a peer can
// tell it nothing new of those: every dot it issued is in seen) and the
// dots of replicas past crdt.MaxReplicas in all (base's and the new ones
// c names, taken in id order), so that a context kept, stored or sent
// always decodes.
func (p *Protocol) admitAll(base, c *crdt.Context) (out crdt.Context, left []crdt.Dot) {
	c = p.withinReplicas(base, p.withoutUnissued(capCounters(c)))
	if len(c.Cloud) == 0 {
		for r, v := range c.VV {
			if p.member(r) && v > base.VV[r] {
				if out.VV == nil {
					out.VV = make(map[crdt.ReplicaID]uint64, len(c.VV))
				}
				out.VV[r] = v
			}
		}
		return out, nil
	}
	// merged is base joined with what is admitted so far, kept for the
	// replicas c names only (each has an entry in merged.VV, 0 if base
	// has none): whether a dot of a replica is contained, and what
	// Compact does, depend on that replica's part alone, and a copy of
	// the whole of base (every replica ever seen) per message was most of
	// what a delta's receipt allocated.
	merged := crdt.Context{VV: make(map[crdt.ReplicaID]uint64, len(c.VV)+1)}
	for r := range c.VV {
		merged.VV[r] = base.VV[r]
	}
	for d := range c.Cloud {
		merged.VV[d.Replica] = base.VV[d.Replica]
	}
	for d := range base.Cloud {
		if _, ok := merged.VV[d.Replica]; ok {
			if merged.Cloud == nil {
				merged.Cloud = make(map[crdt.Dot]struct{})
			}
			merged.Cloud[d] = struct{}{}
		}
	}
	extend := func(r crdt.ReplicaID, v uint64) {
		if out.VV == nil {
			out.VV = make(map[crdt.ReplicaID]uint64, len(merged.VV))
		}
		if merged.VV == nil {
			merged.VV = make(map[crdt.ReplicaID]uint64)
		}
		out.VV[r], merged.VV[r] = v, v
	}
	for r, v := range c.VV {
		if p.member(r) && v > merged.VV[r] {
			extend(r, v)
		}
	}
	merged.Compact()
	extra := make([]crdt.Dot, 0, len(c.Cloud))
	for d := range c.Cloud {
		if p.member(d.Replica) && !merged.Contains(d) {
			extra = append(extra, d)
		}
	}
	slices.SortFunc(extra, func(a, b crdt.Dot) int {
		if a.Counter != b.Counter {
			return cmp.Compare(a.Counter, b.Counter)
		}
		return cmp.Compare(a.Replica, b.Replica)
	})
	window := uint64(MaxCloudDots / (len(p.peers) + 1))
	for _, d := range extra {
		switch v := merged.VV[d.Replica]; {
		case d.Counter == v+1:
			extend(d.Replica, d.Counter)
		case d.Counter <= v+window && p.outOfOrder(d.Replica):
			if out.Cloud == nil {
				out.Cloud = make(map[crdt.Dot]struct{})
			}
			out.Cloud[d] = struct{}{}
		default:
			left = append(left, d)
		}
	}
	out.Compact()
	return out, left
}

// withoutUnissued returns c without the dots of this region's own
// incarnation that seen does not hold (c itself if it has none): dots not
// issued yet, which a buggy or hostile peer may name. Claimed, they would
// leave a gap in the version vector that no dot of ours ever fills; noted
// as a peer's, they would count that peer as holding writes not yet made.
func (p *Protocol) withoutUnissued(c *crdt.Context) *crdt.Context {
	issued := p.seen.VV[p.self]
	unissued := func(d crdt.Dot) bool { return d.Replica == p.self && d.Counter > issued && !p.seen.Contains(d) }
	over := c.VV[p.self] > issued
	for d := range c.Cloud {
		over = over || unissued(d)
	}
	if !over {
		return c
	}
	out := crdt.Context{VV: maps.Clone(c.VV)}
	if v, ok := out.VV[p.self]; ok && v > issued {
		if issued == 0 {
			delete(out.VV, p.self)
		} else {
			out.VV[p.self] = issued
		}
	}
	for d := range c.Cloud {
		if !unissued(d) {
			if out.Cloud == nil {
				out.Cloud = make(map[crdt.Dot]struct{})
			}
			out.Cloud[d] = struct{}{}
		}
	}
	return &out
}

// withinReplicas returns c without the replicas that base does not name
// past crdt.MaxReplicas in all (base's and c's new ones, the new ones
// taken in id order), c itself if it names none too many. A context of
// more replicas does not decode.
func (p *Protocol) withinReplicas(base, c *crdt.Context) *crdt.Context {
	// Replicas c names that base's version vector does not: the usual
	// delta names none.
	var cand []crdt.ReplicaID
	var listed map[crdt.ReplicaID]bool
	note := func(r crdt.ReplicaID) {
		if _, ok := base.VV[r]; ok || listed[r] {
			return
		}
		if listed == nil {
			listed = make(map[crdt.ReplicaID]bool)
		}
		listed[r] = true
		cand = append(cand, r)
	}
	for r := range c.VV {
		note(r)
	}
	for d := range c.Cloud {
		note(d.Replica)
	}
	if len(cand) == 0 {
		return c
	}
	inCloud := make(map[crdt.ReplicaID]bool)
	for d := range base.Cloud {
		if _, ok := base.VV[d.Replica]; !ok {
			inCloud[d.Replica] = true
		}
	}
	fresh := slices.DeleteFunc(cand, func(r crdt.ReplicaID) bool { return inCloud[r] })
	have := len(base.VV) + len(inCloud)
	if have+len(fresh) <= crdt.MaxReplicas {
		return c
	}
	slices.Sort(fresh)
	drop := make(map[crdt.ReplicaID]bool, len(fresh))
	for _, r := range fresh[max(0, crdt.MaxReplicas-have):] {
		drop[r] = true
	}
	out := crdt.Context{VV: make(map[crdt.ReplicaID]uint64, len(c.VV))}
	for r, v := range c.VV {
		if !drop[r] {
			out.VV[r] = v
		}
	}
	for d := range c.Cloud {
		if !drop[d.Replica] {
			if out.Cloud == nil {
				out.Cloud = make(map[crdt.Dot]struct{})
			}
			out.Cloud[d] = struct{}{}
		}
	}
	return &out
}

// maxHeld bounds the dots a region holds unclaimed; past it, anti-entropy
// claims them.
const maxHeld = 1 << 14

// hold records dots whose deltas were applied without being claimed.
// Dots more than maxHeld past the version vector, and the highest when
// there are more than maxHeld, are forgotten, and pr, which sent them,
// runs anti-entropy with us, whose adoption claims them.
func (p *Protocol) hold(pr *peer, dots []crdt.Dot) {
	if len(dots) == 0 {
		return
	}
	if p.held == nil {
		p.held = make(map[crdt.Dot]struct{})
	}
	for _, d := range dots {
		if d.Counter-p.seen.VV[d.Replica] > maxHeld {
			pr.needAE = true
			continue
		}
		p.held[d] = struct{}{}
	}
	if len(p.held) <= maxHeld {
		return
	}
	all := slices.SortedFunc(maps.Keys(p.held), func(a, b crdt.Dot) int { return cmp.Compare(a.Counter, b.Counter) })
	for _, d := range all[maxHeld:] {
		delete(p.held, d)
	}
	pr.needAE = true
}

// claimHeld claims the held dots the version vector has come near enough
// to (their deltas were applied before, or earlier in this Ready).
func (p *Protocol) claimHeld(pr *peer) {
	if len(p.held) == 0 || maps.Equal(p.heldVV, p.seen.VV) {
		return
	}
	claim := p.admit(&p.seen, &crdt.Context{Cloud: p.held})
	if !claim.Empty() {
		p.seen.Join(&claim)
		p.out.Applies = append(p.out.Applies, Apply{From: pr.id, Dots: claim})
	}
	for d := range p.held {
		if p.seen.Contains(d) {
			delete(p.held, d)
		}
	}
	p.heldVV = maps.Clone(p.seen.VV)
}

// bounded returns c as it may be sent or kept: bounded as admit bounds
// claims.
func (p *Protocol) bounded(c *crdt.Context) crdt.Context { return p.admit(&crdt.Context{}, c) }

// wire returns the encoding of c bounded.
func (p *Protocol) wire(c *crdt.Context) []byte {
	b := p.bounded(c)
	return crdt.EncodeContext(&b)
}

// Err returns and clears the last storage error the protocol met.
func (p *Protocol) Err() error {
	err := p.err
	p.err = nil
	return err
}

// send queues m for a peer, with the acknowledgements we owe it and, at
// most every StatusInterval, our applied context riding along.
func (p *Protocol) send(to *peer, m *Message) {
	if m.Kind == KindDelta || m.Kind == KindAck {
		n := min(len(to.acks), MaxKeys) // the rest go with the next
		m.Acks = append(m.Acks, to.acks[:n]...)
		to.acks = slices.Clone(to.acks[n:])
		if m.Applied == nil && p.statusDue(to) {
			m.Applied = p.report(to)
		}
	}
	p.out.Messages = append(p.out.Messages, Envelope{To: to.id, Msg: m})
}

// Local buffers a durable local delta and sends it to every connected
// peer at once.
func (p *Protocol) Local(d LocalDelta, now time.Time) {
	p.now = now
	dot := crdt.Dot{Replica: p.self, Counter: d.Seq}
	p.seen.Insert(dot)
	e := &entry{from: "", dots: []DotRange{{Origin: string(p.self), From: d.Seq, To: d.Seq, AtUs: d.At.UnixMicro()}}, group: d.Group}
	p.push(e)
	p.localBytes += uint64(e.size)
	p.flushAll()
}

// LocalBytes returns the bytes of the canonical encodings
// (crdt.EncodeGroup) of every delta Local took so far: what an ideal
// replication would send each peer, against which the bytes it does send
// are measured.
func (p *Protocol) LocalBytes() uint64 { return p.localBytes }

// entryMem estimates the memory of a buffered delta whose encoding is
// size bytes: the entry, its encoding and its group kept decoded (maps of
// keys, dots and lines), measured at about 1.5 KiB for a one-line cart
// add (81 bytes encoded) and 5.7 times the encoding for a delta of 30
// lines. What the encoding does not tell is counted apart: the keys past
// the first and the cloud dots of carts' contexts (crdt.DecodedMem: a
// group of 16,384 small items holds 38 times its encoding, a cloud dot of
// 1-5 bytes a map entry), and the dot ranges a relayed delta keeps.
func entryMem(size int, g *crdt.Group, dots []DotRange) int {
	n := 1536 - crdt.KeyMem + 6*size + g.DecodedMem()
	if g.Len() == 0 {
		n += crdt.KeyMem
	}
	for _, r := range dots {
		n += 48 + len(r.Origin)
	}
	return n
}

// push adds e to the buffer for every peer but the one it came from.
func (p *Protocol) push(e *entry) {
	p.seq++
	e.seq = p.seq
	e.at = p.now
	e.enc = crdt.EncodeGroup(e.group)
	e.size = len(e.enc)
	e.mem = entryMem(e.size, e.group, e.dots)
	for _, pr := range p.peers {
		// Not to the peer it came from, nor to a peer whose own writes
		// are all it holds (a relay of that peer's deltas through a
		// third region): take never sends those, and pending for them
		// they would count as its backlog and, dropped, ask for a repair
		// it does not need.
		if pr.id != e.from && !onlyFrom(e.dots, pr.id) {
			e.pending |= pr.bit
			pr.offered += e.size
		}
	}
	if e.pending == 0 {
		return
	}
	b := p.bufferOf(e.from)
	*b = append(*b, e)
	p.bufLen += e.mem
	for len(p.buf)+len(p.relays) > p.cfg.MaxBufferEntries || p.bufLen > p.cfg.MaxBufferBytes {
		// Drop the oldest entry of the two.
		b := &p.buf
		if len(p.buf) == 0 || len(p.relays) > 0 && p.relays[0].seq < p.buf[0].seq {
			b = &p.relays
		}
		old := (*b)[0]
		(*b)[0] = nil // not kept reachable by the slice's array
		*b = (*b)[1:]
		p.bufLen -= old.mem
		for _, pr := range p.peers {
			if old.pending&pr.bit != 0 {
				pr.needAE = true
				// Its lag counts from the oldest delta it never got,
				// until a repair covers it (finishAE).
				if pr.dropped.IsZero() || old.at.Before(pr.dropped) {
					pr.dropped = old.at
				}
			}
		}
	}
}

// Buffers of the delta buffer (peer.next).
const (
	bufLocal = iota
	bufRelay
)

// bufferOf returns the buffer of the entries from (local ones: from "").
func (p *Protocol) bufferOf(from crdt.ReplicaID) *[]*entry {
	if from == "" {
		return &p.buf
	}
	return &p.relays
}

// buffers returns the local deltas and the relays, indexed by bufLocal
// and bufRelay.
func (p *Protocol) buffers() [2][]*entry { return [2][]*entry{p.buf, p.relays} }

// find returns the entry with seq in the buffer, or nil.
func (p *Protocol) find(seq uint64) (*entry, int) {
	for k, b := range p.buffers() {
		if i, ok := slices.BinarySearchFunc(b, seq, func(e *entry, s uint64) int { return cmp.Compare(e.seq, s) }); ok {
			return b[i], k
		}
	}
	return nil, 0
}

// from returns the index in b of the first entry at or after seq.
func from(b []*entry, seq uint64) int {
	i, _ := slices.BinarySearchFunc(b, seq, func(e *entry, s uint64) int { return cmp.Compare(e.seq, s) })
	return i
}

// gc drops buffer entries no peer needs any more.
func (p *Protocol) gc() {
	for _, b := range []*[]*entry{&p.buf, &p.relays} {
		i := 0
		for i < len(*b) && (*b)[i].pending == 0 {
			p.bufLen -= (*b)[i].mem
			i++
		}
		if i > 0 {
			*b = slices.Delete(*b, 0, i)
		}
	}
}

func (p *Protocol) flushAll() {
	for _, pr := range p.peers {
		p.flush(pr)
	}
	p.gc()
}

// flush sends pr what it still needs, in batches, within the window.
func (p *Protocol) flush(pr *peer) {
	pr.holdUntil = time.Time{}
	if !pr.up {
		return
	}
	if pr.nextMsg == 0 {
		// Tags go on from the clock, so that an acknowledgement still on
		// its way from before a restart names no message of this run.
		pr.nextMsg = uint64(p.now.UnixMicro()) & (1<<32 - 1)
	}
	if p.holding(pr) {
		return
	}
	for p.canSend(pr) {
		// Beyond the floor of Window messages, a batch fills what is left
		// of the window (and takes one delta however large).
		limit := p.cfg.MaxMessageBytes
		if len(pr.inflight) >= p.cfg.Window {
			limit = min(limit, p.windowBytes(pr)-pr.inflightBytes)
		}
		var seqs []uint64
		// The batch's group: the first entry's own (entries' groups are
		// not changed once buffered, and a message only reads its group),
		// copied into a group of the batch's own once a second joins it.
		var g *crdt.Group
		var only []byte // the encoding of g while it is the first entry's
		var dots []DotRange
		size, ndots, urgent := 0, uint64(0), false
		add := func(e *entry) bool {
			// A batch stays within what a peer's decoder accepts; one
			// entry always does (it came in a valid message, or is a
			// local write).
			n := dotCount(e.dots)
			if len(seqs) > 0 && (size+e.size > limit || g.Len()+e.group.Len() > crdt.MaxGroupKeys ||
				ndots+n > MaxRangeLen || len(dots)+len(e.dots) > MaxDotRanges) {
				return false
			}
			switch {
			case g == nil:
				g, only = e.group, e.enc
			case len(seqs) == 1:
				own := &crdt.Group{}
				own.Join(g)
				own.Join(e.group)
				g = own
			default:
				g.Join(e.group)
			}
			urgent = urgent || e.urgent
			dots = mergeRanges(dots, e.dots...)
			size, ndots = size+e.size, ndots+n
			seqs = append(seqs, e.seq)
			e.sent |= pr.bit
			return true
		}
		if p.take(pr, bufRelay, add) {
			p.take(pr, bufLocal, add)
		}
		if len(seqs) == 0 {
			return
		}
		pr.nextMsg++
		pr.inflight[pr.nextMsg] = &inflight{seqs: seqs, size: size, sentAt: p.now, batch: p.batch}
		pr.inflightBytes += size
		pr.lastDelta = p.now
		for i := range dots {
			if dots[i].Origin == p.region {
				dots[i].Origin = "" // the receiver reads the sender (its incarnation 0)
			}
		}
		m := &Message{Kind: KindDelta, Tag: pr.nextMsg, DotRuns: dotRuns(dots, p.now), Group: g, Urgent: urgent, sender: p.region}
		if len(seqs) == 1 {
			m.groupEnc = only // the lone entry's encoding is the group's
		}
		p.send(pr, m)
	}
}

// take offers add, in order, the entries of buffer k that pr needs and
// may be sent now, until add refuses one (a full batch: take then
// returns false). A relay may be sent once RelayDelay has passed, and
// only if the peer lacks it (else it is no longer pending for the peer);
// relays come due in the order they came, so the first not yet due ends
// the relays offered. It moves pr.next[k] past the entries it leaves
// sent or not pending.
func (p *Protocol) take(pr *peer, k int, add func(*entry) bool) bool {
	b := p.buffers()[k]
	front := true
	for _, e := range b[from(b, pr.next[k]):] {
		switch {
		case e.pending&pr.bit == 0 || e.sent&pr.bit != 0:
		case k == bufRelay && p.now.Sub(e.at) < p.cfg.RelayDelay:
			return true
		case covered(e.dots, &pr.applied) || k == bufRelay && onlyFrom(e.dots, pr.id):
			// The peer holds it already (its applied context, as it
			// reported it: through a third region or anti-entropy).
			e.pending &^= pr.bit
		case !add(e):
			return false
		}
		if front = front && (e.pending&pr.bit == 0 || e.sent&pr.bit != 0); front {
			pr.next[k] = e.seq + 1
		}
	}
	return true
}

// unsend marks e as not in flight to pr.
func (p *Protocol) unsend(pr *peer, e *entry, k int) {
	e.sent &^= pr.bit
	pr.next[k] = min(pr.next[k], e.seq)
}

// holding reports whether what pr needs waits for more deltas (Pacing in
// the package doc), and notes when it comes due.
func (p *Protocol) holding(pr *peer) bool {
	d := p.cfg.BatchDelay
	if d <= 0 || pr.lastDelta.IsZero() || p.now.Sub(pr.lastDelta) >= d || !p.canSend(pr) {
		return false
	}
	var first time.Time
	size := 0
	for k, b := range p.buffers() {
		for _, e := range b[from(b, pr.next[k]):] {
			if e.pending&pr.bit == 0 || e.sent&pr.bit != 0 {
				continue
			}
			ready := e.at
			if k == bufRelay {
				if ready = e.at.Add(p.cfg.RelayDelay); p.now.Before(ready) {
					break // the relays after it are not due either
				}
			}
			if e.urgent {
				return false
			}
			if first.IsZero() || ready.Before(first) {
				first = ready
			}
			if size += e.size; size >= holdBytes {
				return false
			}
		}
	}
	if first.IsZero() || !p.now.Before(first.Add(d)) {
		return false
	}
	pr.holdUntil = first.Add(d)
	return true
}

// Due returns when a batch held for a peer comes due (Pacing in the
// package doc), or the zero time if none is held. The driver calls Flush
// then.
func (p *Protocol) Due() time.Time {
	var due time.Time
	for _, pr := range p.peers {
		if !pr.holdUntil.IsZero() && (due.IsZero() || pr.holdUntil.Before(due)) {
			due = pr.holdUntil
		}
	}
	return due
}

// Flush sends the held batches that are due.
func (p *Protocol) Flush(now time.Time) {
	p.now = now
	for _, pr := range p.peers {
		if !pr.holdUntil.IsZero() && !now.Before(pr.holdUntil) {
			p.flush(pr)
		}
	}
	p.gc()
}

// canSend reports whether pr's window has room for another message.
func (p *Protocol) canSend(pr *peer) bool {
	switch n := len(pr.inflight); {
	case n < p.cfg.Window:
		return true
	case n >= p.cfg.MaxWindow:
		return false
	}
	return pr.inflightBytes < p.windowBytes(pr)
}

// windowBytes returns pr's window in bytes: windowGain times the
// bandwidth-delay product of its path, within MinWindowBytes and
// MaxWindowBytes.
func (p *Protocol) windowBytes(pr *peer) int {
	bdp := pr.rate * pr.srtt.Seconds()
	w := float64(p.cfg.MaxWindowBytes)
	if g := windowGain * bdp; g < w {
		w = g
	}
	return max(int(w), MinWindowBytes)
}

// sampleRate folds the bytes offered to pr since the last sample into its
// rate, a moving average over about rateHorizon.
func (p *Protocol) sampleRate(pr *peer) {
	dt := p.now.Sub(pr.rateAt)
	if pr.rateAt.IsZero() || dt < 0 {
		pr.rateAt, pr.offered = p.now, 0
		return
	}
	if dt < rateEvery {
		return
	}
	sample := float64(pr.offered) / dt.Seconds()
	pr.rate += (sample - pr.rate) * min(1, float64(dt)/float64(rateHorizon))
	pr.rateAt, pr.offered = p.now, 0
}

// untrack forgets an in-flight message (acknowledged or to be sent
// again).
func (pr *peer) untrack(tag uint64, f *inflight) {
	delete(pr.inflight, tag)
	pr.inflightBytes -= f.size
}

func covered(rs []DotRange, c *crdt.Context) bool { return coveredBy(rs, c) }

// dotCount returns how many dots rs name.
func dotCount(rs []DotRange) uint64 {
	var n uint64
	for _, r := range rs {
		n += r.To - r.From + 1
	}
	return n
}

// onlyFrom reports whether every dot of rs is the peer's own (of any of
// its incarnations): it made them durable before sending them anywhere,
// so it does not need them back (one that a restart lost comes back by
// anti-entropy).
func onlyFrom(rs []DotRange, id crdt.ReplicaID) bool {
	for _, r := range rs {
		if crdt.ReplicaID(r.Origin).Region() != string(id) {
			return false
		}
	}
	return true
}

// PeerUp records that a connection to the peer is up. Anti-entropy runs
// on every (re)connection.
func (p *Protocol) PeerUp(id crdt.ReplicaID, now time.Time) {
	p.now = now
	if pr := p.byID[id]; pr != nil && !pr.up {
		pr.up = true
		pr.needAE = true
		p.flush(pr)
	}
}

// PeerDown records that the connection to the peer is down: what was in
// flight will be sent again.
func (p *Protocol) PeerDown(id crdt.ReplicaID, now time.Time) {
	p.now = now
	pr := p.byID[id]
	if pr == nil || !pr.up {
		return
	}
	pr.up = false
	p.requeue(pr, func(*inflight) bool { return true })
	pr.ae = nil
	pr.acks = pr.acks[:0] // see onDelta
}

// requeue marks the in-flight messages that match as not sent.
func (p *Protocol) requeue(pr *peer, match func(*inflight) bool) {
	var seqs []uint64
	for tag, f := range pr.inflight {
		if match(f) {
			seqs = append(seqs, f.seqs...)
			pr.untrack(tag, f)
			pr.resent[tag] = f.seqs
			pr.resentTags = append(pr.resentTags, tag)
		}
	}
	for len(pr.resentTags) > 2*p.cfg.MaxWindow {
		delete(pr.resent, pr.resentTags[0])
		pr.resentTags = pr.resentTags[1:]
	}
	if len(seqs) == 0 {
		return
	}
	for _, seq := range seqs {
		if e, k := p.find(seq); e != nil {
			p.unsend(pr, e, k)
		}
	}
}

// Tick advances time: retransmissions, relays that came due, status
// reports and anti-entropy.
func (p *Protocol) Tick(now time.Time) {
	p.now = now
	for _, pr := range p.peers {
		if !pr.up {
			continue
		}
		p.sampleRate(pr)
		p.requeue(pr, func(f *inflight) bool { return now.Sub(f.sentAt) >= p.cfg.RetransmitAfter })
		p.flush(pr)
		// A report that is due rides on the next delta to pr; it leaves
		// alone only once none came for AckDelay more.
		if (len(pr.acks) > 0 && now.Sub(pr.acksSince) >= p.cfg.AckDelay) ||
			(now.Sub(pr.lastReported) >= p.cfg.StatusInterval+p.cfg.AckDelay && p.statusDue(pr)) {
			p.send(pr, &Message{Kind: KindAck})
		}
		p.tickAE(pr)
	}
	p.gc()
}

// statusDue reports whether pr should hear our applied context: it is
// StatusInterval since the last report and we have new dots of an origin
// other than pr and us (the only dots pr could ever relay to us).
func (p *Protocol) statusDue(pr *peer) bool {
	if p.now.Sub(pr.lastReported) < p.cfg.StatusInterval {
		return false
	}
	for r, v := range p.seen.VV {
		if reg := r.Region(); reg != string(pr.id) && reg != p.region && v > pr.reported.VV[r] {
			return true
		}
	}
	for d := range p.seen.Cloud {
		if reg := d.Replica.Region(); reg != string(pr.id) && reg != p.region && !pr.reported.Contains(d) {
			return true
		}
	}
	return false
}

// report returns our applied context for pr and notes that it was sent.
//
// Only the dots of other regions than pr and us go: pr could relay no
// other dots to us (statusDue), and what it learns from a report only
// spares relays.
func (p *Protocol) report(pr *peer) []byte {
	pr.reported = p.seen.Clone()
	pr.lastReported = p.now
	var c crdt.Context
	third := func(r crdt.ReplicaID) bool { reg := r.Region(); return reg != string(pr.id) && reg != p.region }
	for r, v := range p.seen.VV {
		if third(r) {
			if c.VV == nil {
				c.VV = make(map[crdt.ReplicaID]uint64)
			}
			c.VV[r] = v
		}
	}
	for d := range p.seen.Cloud {
		if third(d.Replica) {
			if c.Cloud == nil {
				c.Cloud = make(map[crdt.Dot]struct{})
			}
			c.Cloud[d] = struct{}{}
		}
	}
	return p.wire(&c)
}

// Step handles a message from a peer. Messages from unknown peers are
// ignored.
func (p *Protocol) Step(from crdt.ReplicaID, m *Message, now time.Time) {
	p.now = now
	pr := p.byID[from]
	if pr == nil || m.Resolve(from) != nil {
		return
	}
	if len(m.DotRuns) > 0 {
		// Dated back by their age and half the round trip to the peer
		// (0 before it is measured).
		m.Dots, m.DotRuns = runDots(m.DotRuns, now, pr.srtt/2), nil
	}
	for i := range m.Dots {
		if m.Dots[i].Origin == "" {
			m.Dots[i].Origin = string(from)
		}
	}
	if m.Applied != nil && (m.Kind == KindAck || m.Kind == KindDelta) {
		if c, err := crdt.DecodeContext(m.Applied); err == nil {
			p.noteHas(pr, &c)
		}
	}
	p.onAcks(pr, m)
	if m.Urgent && (m.Kind == KindDelta || m.Kind == KindAck) {
		pr.ackNow = true
	}
	switch m.Kind {
	case KindDelta:
		p.onDelta(pr, m)
	case KindAck:
		// Acks and applied context were handled above.
	case KindDigest:
		p.onDigest(pr, m)
	case KindDiff:
		p.onDiff(pr, m)
	case KindObjects:
		p.onObjects(pr, m)
	}
	p.flushAll()
}

func (p *Protocol) onDelta(pr *peer, m *Message) {
	var fresh []DotRange
	for _, r := range m.Dots {
		if !p.has(r) {
			fresh = append(fresh, r)
		}
	}
	// Note what the sender has: its delta's dots.
	budget := -1
	if m.wire > 0 {
		budget = m.wire / bytesPerGapDot
	}
	has, _ := dotsContext(m.Dots, &pr.applied, budget)
	p.noteHas(pr, &has)
	if len(fresh) > 0 {
		c, over := dotsContext(m.Dots, &p.seen, budget)
		if over {
			// Dots left out are neither claimed nor held: a repair
			// claims them.
			pr.needAE = true
		}
		claim, left := p.admitAll(&p.seen, &c)
		// claim is this call's own, and joining it into seen only reads it.
		a := Apply{From: pr.id, Dots: claim, Group: m.Group, Ranges: fresh}
		if len(left) > 0 {
			a.Reflects = c // the held dots are among them
		}
		p.out.Applies = append(p.out.Applies, a)
		p.seen.Join(&claim)
		p.hold(pr, left)
		p.claimHeld(pr)
		p.push(&entry{from: pr.id, dots: slices.Clone(m.Dots), group: m.Group})
	}
	// Acknowledged on the next message to the sender, or at the first
	// tick AckDelay after the oldest owed. Not while our connection to
	// the sender is down (it may still reach us, one way): nothing can
	// carry them, and the sender sends again what stays unacknowledged,
	// under new tags, which are acknowledged once the connection is back.
	// The sender remembers at most 2 × MaxWindow of its tags: older ones
	// are dropped here too.
	if !pr.up {
		return
	}
	if len(pr.acks) == 0 {
		pr.acksSince = p.now
	}
	pr.acks = append(pr.acks, m.Tag)
	if keep := 2 * p.cfg.MaxWindow; len(pr.acks) > keep {
		pr.acks = append(pr.acks[:0], pr.acks[len(pr.acks)-keep:]...)
	}
}

// has reports whether every dot of r was applied here, claimed or held.
// The dots up to the version vector are; past it, it looks at dots until
// the first it lacks, at most as many as the cloud and the held dots
// hold, plus one.
func (p *Protocol) has(r DotRange) bool {
	for k := max(r.From, p.seen.VV[crdt.ReplicaID(r.Origin)]+1); k <= r.To; k++ {
		d := crdt.Dot{Replica: crdt.ReplicaID(r.Origin), Counter: k}
		if _, ok := p.held[d]; !ok && !p.seen.Contains(d) {
			return false
		}
	}
	return true
}

// noteHas records that pr has the dots of c (bounded like our own
// claims: what is left out only costs a relay).
func (p *Protocol) noteHas(pr *peer, c *crdt.Context) {
	has, left := p.admitAll(&pr.applied, c)
	pr.applied.Join(&has)
	// Our own dots past the window are kept all the same, up to
	// maxOwnCloud of them: the write concern counts holders by them, and
	// after a restart of ours pr.applied starts empty, so the first
	// acknowledgements are far past its version vector until a round of
	// anti-entropy brings the peer's applied context (onDiff).
	for _, d := range left {
		if d.Replica == p.self && len(pr.applied.Cloud) < maxOwnCloud {
			pr.applied.Insert(d)
		}
	}
}

// maxOwnCloud bounds the dots of our own past the window that a peer's
// applied context keeps (noteHas): the deltas our buffer holds at most.
const maxOwnCloud = 1 << 16

func (p *Protocol) onAcks(pr *peer, m *Message) {
	var seqs []uint64
	m.eachAck(func(tag uint64) {
		if f := pr.inflight[tag]; f != nil {
			pr.untrack(tag, f)
			seqs = append(seqs, f.seqs...)
			// A round trip: this message was sent once, under this tag
			// (a message sent again has a new one), so the sample is
			// unambiguous.
			if rtt := p.now.Sub(f.sentAt); rtt >= 0 {
				if pr.srtt == 0 {
					pr.srtt = rtt
				} else {
					pr.srtt += (rtt - pr.srtt) / 8
				}
			}
		} else if s, ok := pr.resent[tag]; ok {
			delete(pr.resent, tag)
			seqs = append(seqs, s...)
		}
	})
	if len(seqs) == 0 {
		return
	}
	pr.lastAck = p.now
	slices.Sort(seqs)
	for _, seq := range seqs {
		if e, _ := p.find(seq); e != nil {
			e.pending &^= pr.bit
			e.sent &^= pr.bit
			// The peer acknowledges only what it made durable: it has
			// these dots (Holders).
			c, _ := dotsContext(e.dots, &pr.applied, max(minAckDots, e.size/bytesPerGapDot))
			p.noteHas(pr, &c)
		}
	}
}

// Status returns the replication state of each peer.
func (p *Protocol) Status() []PeerStatus {
	out := make([]PeerStatus, 0, len(p.peers))
	for _, pr := range p.peers {
		s := PeerStatus{Region: string(pr.id), Connected: pr.up, InflightMsgs: len(pr.inflight), UnrepairedKeys: pr.unrepairedKeys(),
			PeerApplied: vvOf(&pr.applied), AERounds: pr.aeCount, AEKeysPushed: pr.pushed, AEKeysPulled: pr.pulled, AERate: p.cfg.AntiEntropyRate,
			BytesSent: pr.bytesSent, DeltasSent: pr.deltasSent,
			RTT: pr.srtt, InflightBytes: pr.inflightBytes, WindowBytes: p.windowBytes(pr)}
		if !pr.lastAck.IsZero() {
			t := pr.lastAck
			s.LastAck = &t
		}
		if !pr.lastAE.IsZero() {
			t := pr.lastAE
			s.LastAntiEntropy = &t
		}
		var oldest time.Time
		for _, b := range p.buffers() {
			for _, e := range b {
				if e.pending&pr.bit != 0 {
					s.PendingDeltas++
					s.PendingBytes += e.size
					if oldest.IsZero() || e.at.Before(oldest) {
						oldest = e.at
					}
				}
			}
		}
		if !pr.dropped.IsZero() && (oldest.IsZero() || pr.dropped.Before(oldest)) {
			oldest = pr.dropped
		}
		if !oldest.IsZero() {
			s.LagMs = p.now.Sub(oldest).Milliseconds()
		}
		switch {
		case pr.ae != nil:
			s.AntiEntropy = "running"
		case pr.needAE:
			s.AntiEntropy = "needed"
		default:
			s.AntiEntropy = "idle"
		}
		out = append(out, s)
	}
	return out
}

// NoteSent records a message of kind, n bytes, sent to a peer (the
// driver counts what the transport took; a message it refused, or one of
// a Ready that failed, is not counted).
func (p *Protocol) NoteSent(id crdt.ReplicaID, n int, kind Kind) {
	if pr := p.byID[id]; pr != nil {
		pr.bytesSent += uint64(n)
		if kind == KindDelta {
			pr.deltasSent++
		}
	}
}

// Seen returns the dots this region has applied or is applying.
func (p *Protocol) Seen() crdt.Context { return p.seen.Clone() }

// vvOf returns the version vector of c (its contiguous part) by region.
func vvOf(c *crdt.Context) map[string]uint64 {
	out := make(map[string]uint64, len(c.VV))
	for r, v := range c.VV {
		out[string(r)] = v
	}
	return out
}
