package protocol

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Kind is a message's type.
type Kind uint8

// Message kinds.
const (
	// KindDelta carries a delta-group and the region-level dots it holds;
	// Tag is the sender's buffer position, acknowledged by KindAck.
	KindDelta Kind = 1
	// KindAck carries acknowledgements (Acks) and/or the sender's applied
	// context, when no delta is going that way to carry them.
	KindAck Kind = 2
	// KindDigest carries nodes of the initiator's anti-entropy tree
	// (Nodes; antientropy.go): step 1 opens a round with the root's split
	// and the initiator's applied context, from one snapshot. (The
	// version before sent every bucket's digest in Buckets; such a digest
	// is not answered.)
	KindDigest Kind = 3
	// KindDiff answers a digest, from a snapshot of the responder's: its
	// answers for the nodes that differ, the responder's run, and on step
	// 1 its applied context; Of names the digest it answers (requestID).
	KindDiff Kind = 4
	// KindObjects carries the states of keys that differ (a push), asks
	// for them (a pull: Pull names keys, Spans ranges of slots), answers a
	// pull (Reply, which belongs to the receiver's own round: both regions
	// may run rounds with each other at once), or, with no states, ends a
	// round: Final says the round covered every difference, so the
	// receiver may adopt Applied.
	KindObjects Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindDelta:
		return "delta"
	case KindAck:
		return "ack"
	case KindDigest:
		return "digest"
	case KindDiff:
		return "diff"
	case KindObjects:
		return "objects"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// DotRange is the region-level dots From..To of one origin, with the
// origin's time of the first of them (Unix microseconds), used to measure
// convergence. An empty Origin is the sender.
type DotRange struct {
	_      struct{} `cbor:",toarray"`
	Origin string
	From   uint64
	To     uint64
	AtUs   int64
}

// KeyHash is the hash of one key's stored state.
type KeyHash struct {
	_    struct{} `cbor:",toarray"`
	Key  string
	Hash uint64
}

// Message is one protocol message between two regions.
type Message struct {
	Kind    Kind        `cbor:"1,keyasint,omitempty"`
	Tag     uint64      `cbor:"2,keyasint,omitempty"`
	Dots    []DotRange  `cbor:"3,keyasint,omitempty"`
	Group   *crdt.Group `cbor:"4,keyasint,omitempty"`
	Round   uint64      `cbor:"5,keyasint,omitempty"`
	Buckets []uint64    `cbor:"6,keyasint,omitempty"`
	Diff    []uint32    `cbor:"7,keyasint,omitempty"`
	Keys    []KeyHash   `cbor:"8,keyasint,omitempty"`
	Pull    []string    `cbor:"9,keyasint,omitempty"`
	Applied []byte      `cbor:"10,keyasint,omitempty"`
	Final   bool        `cbor:"11,keyasint,omitempty"`
	// Acks acknowledges the receiver's delta messages with these tags.
	Acks []uint64 `cbor:"12,keyasint,omitempty"`
	// Reply marks objects that answer the receiver's own round.
	Reply bool `cbor:"13,keyasint,omitempty"`
	// Of names what an anti-entropy message answers: on a diff or a
	// reply, the requestID of the digest or pull; on a push, its pushID;
	// on the objects that end a round, the XOR of its pushes' pushIDs.
	Of uint64 `cbor:"14,keyasint,omitempty"`
	// Reflects, on objects, is a context covering every write their
	// states show, read with them (see Apply.Reflects); encoded like
	// Applied, and bounded like it.
	Reflects []byte `cbor:"15,keyasint,omitempty"`
	// Urgent, on a delta or an acknowledgement, asks the receiver to
	// acknowledge what it has of the sender's delta messages at once
	// rather than with its next message or tick: a client waits for
	// the write to reach several regions (see Protocol.Urge).
	Urgent bool `cbor:"16,keyasint,omitempty"`

	// Anti-entropy over the tree of slots (tree.go, antientropy.go).
	//
	// Nodes, on a digest, are the initiator's splits of nodes (and
	// requests for lists); on a diff, the responder's answers. Step
	// numbers a digest and the diff that answers it; on objects, a push
	// or a pull (whose reply bears it too); on the objects that close a
	// round (Final), the number of digests the round sent. Run names the
	// responder's run on its diffs and replies, so that an initiator
	// notices a restart within a round, and on the objects that close a
	// round the run whose answers it compared against, so that a
	// responder that restarted since does not adopt on its behalf. Spans, on a pull, are ranges of
	// slots whose keys the sender wants; Next, on the reply, is where it
	// stopped (the slot of a span, or the count of pulled keys, it did
	// not reach). Pushes, on the objects that close a round, is the
	// number of pushes the round sent.
	Nodes  []RangeNode `cbor:"30,keyasint,omitempty"`
	Step   uint64      `cbor:"31,keyasint,omitempty"`
	Run    uint64      `cbor:"32,keyasint,omitempty"`
	Spans  []Span      `cbor:"33,keyasint,omitempty"`
	Next   uint64      `cbor:"34,keyasint,omitempty"`
	Pushes uint64      `cbor:"35,keyasint,omitempty"`

	// Ranges, on a digest, are ranges of whole buckets with their
	// buckets' fingerprints, cut and salted, and counts (BucketRange);
	// a round of this version opens with them. Sketches, on the diff that
	// answers them, are the responder's set sketches of buckets that
	// differ (sketch.go; Nodes carries the other answers: lists, whole
	// buckets one side lacks, splits), one answer a differing bucket; Eq
	// holds, for each range answered (Next of them), the XOR of the
	// responder's whole fingerprints of the buckets it found equal, so
	// that the initiator, which XORs its own, notices a coincidence of
	// cut fingerprints. SpanRuns is how a pull of such a round sends its
	// Spans (sorted, disjoint): unsigned varints of each span's distance
	// from the end of the one before and its length − 1; Decode turns it
	// back into Spans. The version before this one refuses these keys.
	Ranges   []BucketRange `cbor:"36,keyasint,omitempty"`
	Sketches []Sketch      `cbor:"37,keyasint,omitempty"`
	Eq       []uint64      `cbor:"38,keyasint,omitempty"`
	SpanRuns []byte        `cbor:"39,keyasint,omitempty"`

	// Homes names what decides the home of every sku at the sender
	// (Config.Homes): on the diff answering step 1 of a round, the
	// responder's; on the objects that close a round complete (Final),
	// the initiator's. A region decides as a home only once every peer
	// has shown it the same (region.Node.SyncedWith).
	Homes string `cbor:"40,keyasint,omitempty"`

	// AckRuns is how Encode writes Acks: the tags sorted, as runs of
	// consecutive tags, [first tag, run length − 1, then per further run
	// its gap − 1 after the previous run, its length − 1]. Decode checks
	// it and keeps it (AckTags lists the tags of either form); a message
	// carries Acks (12) or AckRuns, not both.
	AckRuns []uint64 `cbor:"20,keyasint,omitempty"`
	// DotRuns is how a region sends a delta's dots: Dots with each
	// range's length − 1 instead of its end and, instead of its origin
	// time, its age when the message left. The receiver dates the range
	// back by that age and half the round trip it measures to the sender
	// (Protocol.Step), which needs no clock agreement between regions
	// and saves the bytes of an absolute time. A message carries Dots (3)
	// or DotRuns, not both.
	DotRuns []DotRun `cbor:"21,keyasint,omitempty"`
	// GroupRefs is how a region sends a delta's Group: its canonical
	// encoding (crdt.EncodeGroup) with every text string that names an
	// entry of the message's replica table replaced by a one-byte CBOR
	// simple value, the entry's index. The table is the sender's region
	// name, then the distinct non-empty origins of the message's dot
	// ranges in their order (at most maxRefs entries). The canonical
	// encoding has no simple values, so the substitution is undone
	// exactly; the receiver, which knows the sender, does it (Resolve).
	// A message carries Group (4) or GroupRefs, not both; a delta with
	// GroupRefs leaves out its Kind.
	GroupRefs []byte `cbor:"22,keyasint,omitempty"`

	// sender is the region sending the message, for Encode.
	sender string
	// groupEnc, when not nil, is Group's canonical encoding, which Encode
	// then need not make again.
	groupEnc []byte
	// compactSpans makes Encode send Spans as SpanRuns.
	compactSpans bool
	// wire is the size of the encoding Decode read the message from; 0
	// for a message made in this process. It bounds the dots a delta
	// may have expanded one by one (deltaContext).
	wire int
}

// DotRun is the wire form of a DotRange (Message.DotRuns): AgeUs is the
// microseconds between the origin's time of the range's first dot and
// the sending of the message.
type DotRun struct {
	_      struct{} `cbor:",toarray"`
	Origin string
	From   uint64
	Span   uint64
	AgeUs  int64
}

// Limits on a decoded message.
const (
	// MaxMessageBytes bounds one encoded message.
	MaxMessageBytes = crdt.MaxGroupBytes + 1<<20
	// MaxDotRanges bounds the dot ranges of one message.
	MaxDotRanges = 4096
	// MaxKeys bounds the key hashes or pulled keys of one message.
	MaxKeys = 8192
	// MaxBuckets bounds the digest buckets a cluster may use.
	MaxBuckets = 1 << 16
	// MaxRangeLen bounds the dots of one range.
	MaxRangeLen = 1 << 16
	// MaxAppliedBytes bounds an encoded applied context. A region sends
	// its context bounded (cluster regions only, at most MaxCloudDots dots
	// out of order), well under this; a larger one would only make the
	// receiver decode (twice) and hold a large context for nothing.
	MaxAppliedBytes = 64 << 10
)

// Encode returns the message's CBOR encoding, with Acks in their compact
// form (AckRuns) when that is shorter and, on a delta the protocol made,
// the group with replica names as references (GroupRefs).
func Encode(m *Message) ([]byte, error) {
	if len(m.Acks) == 0 && (m.sender == "" || m.Group == nil) && !(m.compactSpans && len(m.Spans) > 0) {
		return crdt.Marshal(m)
	}
	w := *m
	if m.compactSpans && len(m.Spans) > 0 {
		w.SpanRuns, w.Spans = appendSpanRuns(nil, m.Spans), nil
	}
	if runs := ackRuns(m.Acks); len(runs) < len(m.Acks) {
		w.AckRuns, w.Acks = runs, nil // else Acks are as short
	}
	if m.Kind == KindDelta && m.sender != "" && m.Group != nil {
		enc := m.groupEnc
		if enc == nil {
			enc = crdt.EncodeGroup(m.Group)
		}
		w.GroupRefs, w.Group, w.Kind = groupRefs(enc, refTable(m.sender, m)), nil, 0
	}
	return crdt.Marshal(&w)
}

// Decode decodes and validates a message from an untrusted peer.
func Decode(b []byte, buckets int) (*Message, error) {
	var m Message
	if err := crdt.UnmarshalCarrier(b, &m, MaxMessageBytes); err != nil {
		return nil, fmt.Errorf("protocol: %w", err)
	}
	if err := m.checkAckRuns(); err != nil {
		return nil, err
	}
	if m.SpanRuns != nil {
		if m.Spans != nil {
			return nil, errors.New("protocol: both span forms")
		}
		ss, err := spanRuns(m.SpanRuns, buckets)
		if err != nil {
			return nil, err
		}
		m.Spans, m.SpanRuns = ss, nil
	}
	if m.GroupRefs != nil {
		if m.Group != nil {
			return nil, errors.New("protocol: both group forms")
		}
		if m.Kind == 0 {
			m.Kind = KindDelta
		}
		if m.Kind != KindDelta {
			return nil, fmt.Errorf("protocol: a %s with a group", m.Kind)
		}
		if err := scanRefs(m.GroupRefs, len(refTable("-", &m))); err != nil {
			return nil, err
		}
	}
	if err := m.validate(buckets); err != nil {
		return nil, err
	}
	m.wire = len(b)
	return &m, nil
}

// maxRefs bounds a replica table (Message.GroupRefs): the simple values
// 0–19 take one byte.
const maxRefs = 20

// refTable returns the replica table of m sent by region sender
// (Message.GroupRefs).
func refTable(sender string, m *Message) []string {
	t := []string{sender}
	add := func(o string) {
		if o != "" && len(t) < maxRefs && !slices.Contains(t, o) {
			t = append(t, o)
		}
	}
	for _, r := range m.Dots {
		add(r.Origin)
	}
	for _, r := range m.DotRuns {
		add(r.Origin)
	}
	return t
}

// CBOR major types and the head of simple value 0.
const (
	cborUint, cborNeg, cborText, cborArray, cborSimple = 0, 1, 3, 4, 7
	simple0                                            = cborSimple << 5
)

// cborHead decodes the head at b[i:]: major type, argument and where the
// content starts (ok false if truncated, malformed or not definite).
func cborHead(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	major, info := b[i]>>5, b[i]&0x1f
	if info < 24 {
		return major, uint64(info), i + 1, true
	}
	if info > 27 {
		return 0, 0, 0, false
	}
	n := 1 << (info - 24)
	if len(b)-i-1 < n {
		return 0, 0, 0, false
	}
	for _, c := range b[i+1 : i+1+n] {
		arg = arg<<8 | uint64(c)
	}
	return major, arg, i + 1 + n, true
}

// groupRefs returns enc, a canonical group encoding, with every text
// string equal to an entry of table replaced by a reference to it.
func groupRefs(enc []byte, table []string) []byte {
	out := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); {
		major, arg, next, ok := cborHead(enc, i)
		if !ok {
			return enc // not canonical CBOR: cannot happen
		}
		if major != cborText {
			out = append(out, enc[i:next]...)
			i = next
			continue
		}
		end := next + int(arg)
		if k := slices.Index(table, string(enc[next:end])); k >= 0 {
			out = append(out, simple0|byte(k))
		} else {
			out = append(out, enc[i:end]...)
		}
		i = end
	}
	return out
}

// scanRefs checks that b is a sequence of the items a canonical group
// encoding has (unsigned and negative integers, text strings, arrays),
// with references to a table of n entries, and that it resolves within
// crdt.MaxGroupBytes whatever the names.
func scanRefs(b []byte, n int) error {
	size := 0
	for i := 0; i < len(b); {
		major, arg, next, ok := cborHead(b, i)
		if !ok {
			return fmt.Errorf("protocol: group references: malformed item at byte %d", i)
		}
		switch major {
		case cborUint, cborNeg, cborArray:
			size += next - i
		case cborText:
			if arg > uint64(len(b)-next) {
				return errors.New("protocol: group references: truncated")
			}
			size += next - i + int(arg)
			next += int(arg)
		case cborSimple:
			if next != i+1 || int(arg) >= n {
				return fmt.Errorf("protocol: group references: bad reference at byte %d", i)
			}
			size += 2 + crdt.MaxReplicaIDLen + 1 + crdt.MaxIncarnationDigits
		default:
			return fmt.Errorf("protocol: group references: unexpected item at byte %d", i)
		}
		if size > crdt.MaxGroupBytes {
			return errors.New("protocol: group references: group too large")
		}
		i = next
	}
	return nil
}

// resolveRefs returns the canonical group encoding b (Message.GroupRefs,
// checked by scanRefs) refers to, with table's names.
func resolveRefs(b []byte, table []string) []byte {
	out := make([]byte, 0, len(b)+64)
	for i := 0; i < len(b); {
		major, arg, next, _ := cborHead(b, i)
		switch major {
		case cborText:
			next += int(arg)
			out = append(out, b[i:next]...)
		case cborSimple:
			name := table[arg]
			out = append(appendTextHead(out, len(name)), name...)
		default:
			out = append(out, b[i:next]...)
		}
		i = next
	}
	return out
}

// appendTextHead appends the head of a text string of n bytes.
func appendTextHead(b []byte, n int) []byte {
	const m = cborText << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	}
	return append(b, m|25, byte(n>>8), byte(n)) // names are short
}

// Resolve makes m's group whole (Message.GroupRefs) now that the region it
// came from is known; Step does it. A message whose references do not
// resolve to a valid group is refused.
func (m *Message) Resolve(from crdt.ReplicaID) error {
	if m.GroupRefs == nil {
		return nil
	}
	// Decode checked the references against a table whose first entry
	// stood in for the sender; the sender's region may also be among the
	// origins, which makes the real table shorter.
	table := refTable(from.Region(), m)
	if err := scanRefs(m.GroupRefs, len(table)); err != nil {
		return err
	}
	g, err := crdt.DecodeGroup(resolveRefs(m.GroupRefs, table))
	if err != nil {
		return fmt.Errorf("protocol: group references: %w", err)
	}
	m.Group, m.GroupRefs = g, nil
	return nil
}

// ackRuns returns the compact form of tags (Message.AckRuns).
func ackRuns(tags []uint64) []uint64 {
	if len(tags) == 0 {
		return nil
	}
	s := slices.Clone(tags)
	slices.Sort(s)
	s = slices.Compact(s)
	out := []uint64{s[0], 0}
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1]+1 {
			out[len(out)-1]++
			continue
		}
		out = append(out, s[i]-s[i-1]-2, 0) // s[i] ≥ s[i-1]+2
	}
	return out
}

// dotRuns returns the wire form of rs sent at now (Message.DotRuns).
func dotRuns(rs []DotRange, now time.Time) []DotRun {
	out := make([]DotRun, len(rs))
	for i, r := range rs {
		out[i] = DotRun{Origin: r.Origin, From: r.From, Span: r.To - r.From, AgeUs: now.UnixMicro() - r.AtUs}
	}
	return out
}

// runDots returns the dot ranges of runs received at now over a path of
// one-way delay oneWay.
func runDots(runs []DotRun, now time.Time, oneWay time.Duration) []DotRange {
	out := make([]DotRange, len(runs))
	for i, r := range runs {
		out[i] = DotRange{Origin: r.Origin, From: r.From, To: r.From + r.Span, AtUs: now.UnixMicro() - oneWay.Microseconds() - r.AgeUs}
	}
	return out
}

// checkAckRuns checks AckRuns within the bounds validate checks for Acks
// (at most MaxKeys tags, no overflow) without expanding them: a run of
// MaxKeys tags takes a few bytes, and its tags are walked where they are
// used (eachAck), so that decoding costs in proportion to the message.
func (m *Message) checkAckRuns() error {
	if len(m.AckRuns) == 0 {
		return nil
	}
	if len(m.Acks) > 0 {
		return errors.New("protocol: both acknowledgement forms")
	}
	if len(m.AckRuns)%2 != 0 {
		return errors.New("protocol: acknowledgement runs of odd length")
	}
	return m.eachAckRun(func(start, n uint64) {})
}

// eachAckRun calls fn with each run of AckRuns: its first tag and its
// length − 1. It returns an error, having called fn only for the runs
// before it, when the runs overflow or name more than MaxKeys tags.
func (m *Message) eachAckRun(fn func(start, n uint64)) error {
	var count uint64
	var end uint64 // of the previous run
	for i := 0; i+1 < len(m.AckRuns); i += 2 {
		start := m.AckRuns[0]
		if i > 0 {
			gap := m.AckRuns[i]
			if end > math.MaxUint64-2 || gap > math.MaxUint64-2-end {
				return errors.New("protocol: acknowledgement runs overflow")
			}
			start = end + 2 + gap
		}
		n := m.AckRuns[i+1]
		if n >= MaxKeys || count+n+1 > MaxKeys {
			return fmt.Errorf("protocol: more than %d acknowledgements", MaxKeys)
		}
		if n > math.MaxUint64-start {
			return errors.New("protocol: acknowledgement runs overflow")
		}
		count += n + 1
		fn(start, n)
		end = start + n
	}
	return nil
}

// eachAck calls fn with each tag the message acknowledges, in Acks or in
// AckRuns (checked by Decode).
func (m *Message) eachAck(fn func(tag uint64)) {
	for _, t := range m.Acks {
		fn(t)
	}
	_ = m.eachAckRun(func(start, n uint64) {
		for k := uint64(0); k <= n; k++ {
			fn(start + k)
		}
	})
}

// AckTags returns the tags the message acknowledges, whichever form it
// carries them in.
func (m *Message) AckTags() []uint64 {
	var tags []uint64
	m.eachAck(func(t uint64) { tags = append(tags, t) })
	return tags
}

// MaxHomesBytes bounds Message.Homes (a config.Config.HomesID is 32).
const MaxHomesBytes = 64

// ValidKey reports whether k names a replicated object (crdt.ValidKey).
func ValidKey(k string) bool { return crdt.ValidKey(k) }

func (m *Message) validate(buckets int) error {
	if m.Kind < KindDelta || m.Kind > KindObjects {
		return fmt.Errorf("protocol: unknown message kind %d", m.Kind)
	}
	if len(m.Dots) > 0 && len(m.DotRuns) > 0 {
		return errors.New("protocol: both dot range forms")
	}
	if len(m.Homes) > MaxHomesBytes {
		return fmt.Errorf("protocol: homes name of %d bytes, limit %d", len(m.Homes), MaxHomesBytes)
	}
	if n := len(m.Dots) + len(m.DotRuns); n > MaxDotRanges {
		return fmt.Errorf("protocol: %d dot ranges, limit %d", n, MaxDotRanges)
	}
	ranges := m.Dots
	for _, r := range m.DotRuns {
		if r.Span >= MaxRangeLen {
			return fmt.Errorf("protocol: invalid dot range %s:%d+%d", clip(r.Origin), r.From, r.Span)
		}
		ranges = append(ranges, DotRange{Origin: r.Origin, From: r.From, To: r.From + r.Span})
	}
	var dots uint64
	for _, r := range ranges {
		if r.Origin != "" && !crdt.ValidReplica(crdt.ReplicaID(r.Origin)) {
			return fmt.Errorf("protocol: invalid origin %q", clip(r.Origin))
		}
		if r.From == 0 || r.To < r.From || r.To-r.From >= MaxRangeLen || r.To > crdt.MaxCounter {
			return fmt.Errorf("protocol: invalid dot range %s:%d..%d", clip(r.Origin), r.From, r.To)
		}
		if dots += r.To - r.From + 1; dots > MaxRangeLen {
			return fmt.Errorf("protocol: message names more than %d dots", MaxRangeLen)
		}
	}
	if len(m.Buckets) != 0 && len(m.Buckets) != buckets {
		return fmt.Errorf("protocol: digest of %d buckets, want %d", len(m.Buckets), buckets)
	}
	for i, b := range m.Diff {
		if int(b) >= buckets || (i > 0 && m.Diff[i-1] >= b) {
			return errors.New("protocol: diff buckets out of range or unsorted")
		}
	}
	if len(m.Keys) > MaxKeys || len(m.Pull) > MaxKeys || len(m.Acks) > MaxKeys {
		return fmt.Errorf("protocol: more than %d keys", MaxKeys)
	}
	for _, k := range m.Keys {
		if !ValidKey(k.Key) {
			return fmt.Errorf("protocol: invalid key %q", clip(k.Key))
		}
	}
	for _, k := range m.Pull {
		if !ValidKey(k) {
			return fmt.Errorf("protocol: invalid key %q", clip(k))
		}
	}
	if m.Applied != nil {
		if len(m.Applied) > MaxAppliedBytes {
			return fmt.Errorf("protocol: applied context of %d bytes, limit %d", len(m.Applied), MaxAppliedBytes)
		}
		if _, err := crdt.DecodeContext(m.Applied); err != nil {
			return fmt.Errorf("protocol: applied context: %w", err)
		}
	}
	if m.Reflects != nil {
		if len(m.Reflects) > MaxAppliedBytes {
			return fmt.Errorf("protocol: reflected context of %d bytes, limit %d", len(m.Reflects), MaxAppliedBytes)
		}
		if _, err := crdt.DecodeContext(m.Reflects); err != nil {
			return fmt.Errorf("protocol: reflected context: %w", err)
		}
	}
	if err := validateNodes(m.Nodes, buckets); err != nil {
		return err
	}
	if err := validateSpans(m.Spans, buckets); err != nil {
		return err
	}
	if err := validateRanges(m.Ranges, buckets); err != nil {
		return err
	}
	if err := validateSketches(m.Sketches, buckets); err != nil {
		return err
	}
	if len(m.Eq) > MaxRangeBuckets {
		return errTooManyNodes
	}
	switch m.Kind {
	case KindDelta:
		if (m.Group == nil && m.GroupRefs == nil) || len(m.Dots)+len(m.DotRuns) == 0 || m.Tag == 0 {
			return errors.New("protocol: delta without group, dots or tag")
		}
	case KindAck:
		if len(m.Acks) == 0 && len(m.AckRuns) == 0 && m.Applied == nil && !m.Urgent {
			return errors.New("protocol: ack without acknowledgements, applied context or request for them")
		}
	case KindDigest:
		if m.Round == 0 || (len(m.Nodes) == 0 && len(m.Ranges) == 0 && (len(m.Buckets) != buckets || m.Applied == nil)) {
			return errors.New("protocol: digest without buckets, applied context or round")
		}
	case KindDiff, KindObjects:
		if m.Round == 0 {
			return errors.New("protocol: anti-entropy message without round")
		}
	}
	return nil
}

// rangesToContext returns the dots of ranges as a causal context (dots
// from 1 go to the version vector, the others to the cloud; one
// compaction at the end).
func rangesToContext(rs []DotRange) crdt.Context {
	c, _ := dotsContext(rs, &crdt.Context{}, -1)
	return c
}

// bytesPerGapDot is how many bytes of a received message each dot it
// names past a gap may cost (dotsContext): a delta carries a write's
// state for each of its dots, which takes more than that.
const bytesPerGapDot = 8

// minAckDots is the least number of dots past a gap that an acknowledged
// entry of the buffer has counted (dotsContext).
const minAckDots = 16

// dotsContext returns the dots of ranges as a causal context to be joined
// into base, or into a context whose version vector holds base's: a range
// that starts at most one past base's version vector, or past the ranges
// of its origin taken before it, goes to the version vector whole (the
// dots below it are there already, so the join is the same) at no cost per
// dot; the dots of the other ranges go to the cloud one by one, at most
// budget of them in all (no bound if budget < 0). A range is three
// integers on the wire and may name 65,536 dots: without the bound, a
// message of a few bytes would cost megabytes. over reports that dots
// were left out.
func dotsContext(rs []DotRange, base *crdt.Context, budget int) (c crdt.Context, over bool) {
	for _, r := range rs {
		o := crdt.ReplicaID(r.Origin)
		if r.From <= max(base.VV[o], c.VV[o])+1 {
			if r.To > c.VV[o] {
				if c.VV == nil {
					c.VV = make(map[crdt.ReplicaID]uint64)
				}
				c.VV[o] = r.To
			}
			continue
		}
		for k := r.From; k <= r.To; k++ {
			if budget == 0 {
				over = true
				break
			}
			if c.Cloud == nil {
				c.Cloud = make(map[crdt.Dot]struct{})
			}
			c.Cloud[crdt.Dot{Replica: o, Counter: k}] = struct{}{}
			budget--
		}
	}
	c.Compact()
	return c, over
}

// coveredBy reports whether every dot of ranges is in c.
func coveredBy(rs []DotRange, c *crdt.Context) bool {
	for _, r := range rs {
		for k := r.From; k <= r.To; k++ {
			if !c.Contains(crdt.Dot{Replica: crdt.ReplicaID(r.Origin), Counter: k}) {
				return false
			}
		}
	}
	return true
}

// mergeRanges appends rs to dst, extending the last range of an origin
// when contiguous.
func mergeRanges(dst []DotRange, rs ...DotRange) []DotRange {
next:
	for _, r := range rs {
		for i := len(dst) - 1; i >= 0; i-- {
			if dst[i].Origin == r.Origin && dst[i].To+1 == r.From {
				dst[i].To = r.To
				continue next
			}
		}
		dst = append(dst, r)
	}
	return dst
}

// clip shortens a peer-chosen string for an error (which is logged): a
// message of a few MiB must not make a log record of its size.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:max], len(s))
}
