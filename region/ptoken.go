package region

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
)

// A partitioned cluster's causal token covers only the partitions the
// client touched, each with its own context (each partition of a region is
// a replica with its own dots). It is "p." followed by the URL-safe
// base64 of a CBOR array (tokenDoc): the replica ids it names, once, then
// per partition, the one most recently touched first, its number, version
// vector and out-of-order dots as (replica index, counter) pairs. An
// unpartitioned cluster's token is the plain context token
// (crdt.FormatToken) and has no '.'.
//
// Bounds: at most MaxTokenPartitions entries and MaxPartitionTokenChars
// characters. Past either, the document is first compressed (DEFLATE:
// compressedPartitionTokenPrefix), then the entries' contexts reduced to
// their version vector ceilings (crdt.Context.Ceil: still covering
// everything, at the price of waiting for a few more dots), then the
// least recently touched entries are dropped: read-your-writes then holds
// for the MaxTokenPartitions partitions a client touched last. The
// partitions past MaxTokenVVEntries version vector entries in all are
// dropped the same way (before any is reduced to its ceiling, which would
// not make fewer), and a parse keeps no more. In a three-region cluster
// an entry takes about 25 characters and the replica ids about 80 once: a
// session that touched 32 partitions sends a token of under 1 KiB
// (TestPartitionTokenBounds: 778 characters).

// MaxTokenPartitions bounds the partitions one causal token covers.
const MaxTokenPartitions = 64

// MaxPartitionTokenChars bounds the length of a partitioned cluster's
// causal token: its prefix and the base64 of crdt.MaxTokenBytes, the
// bound of an unpartitioned cluster's token. A partition's context may
// name as many replica ids as an unpartitioned region's, and the
// partition a client touched last must fit (format drops the others
// first).
const MaxPartitionTokenChars = len(compressedPartitionTokenPrefix) + (crdt.MaxTokenBytes*4+2)/3

// MaxTokenVVEntries bounds the version vector entries of all the
// partitions of one parsed partitioned token (a map entry each, some 50
// bytes with the map's slack, for a byte or two of a compressed token:
// partitions that repeat one version vector deflate to almost nothing).
// A partition's context names at most crdt.MaxReplicas replica ids, so
// the partition touched last always fits; a cluster's partition names its
// regions' incarnations that wrote to it, a few per region: twice
// crdt.MaxReplicas holds 64 partitions of 8 replica ids each (a
// three-region cluster's after a restart of every region has 6). Past it,
// format drops the partitions touched longest ago, and a parse (of a
// token no region made) does the same. The out-of-order dots kept one by
// one are bounded apart (crdt.MaxTokenCloudDots in all).
const MaxTokenVVEntries = 2 * crdt.MaxReplicas

const partitionTokenPrefix = "p."

// MaxPartitionTokenDoc bounds what a compressed partitioned token
// inflates to, as crdt.MaxTokenContextBytes bounds an unpartitioned one:
// what parsing it costs is a small multiple of that.
const MaxPartitionTokenDoc = crdt.MaxTokenContextBytes

// compressedPartitionTokenPrefix starts a partitioned token whose
// document is compressed (DEFLATE): "p." then "z.", which no base64 holds.
const compressedPartitionTokenPrefix = partitionTokenPrefix + "z."

// tokenDoc is the encoded form: the replica ids once, then per partition
// its version vector and cloud as flat (name index, counter) pairs.
type tokenDoc struct {
	_     struct{} `cbor:",toarray"`
	Names []string
	Parts []tokenPart
}

type tokenPart struct {
	_     struct{} `cbor:",toarray"`
	P     int
	VV    []uint64
	Cloud []uint64
}

// tokenDocIn is tokenDoc as parsePartitionToken reads it: each version
// vector and cloud is kept as its encoding and read pair by pair, since a
// number of one byte on the wire would take eight in a []uint64 (a
// compressed token of a few hundred characters made a region allocate
// half a megabyte).
type tokenDocIn struct {
	_     struct{} `cbor:",toarray"`
	Names []string
	Parts []tokenPartIn
}

type tokenPartIn struct {
	_     struct{} `cbor:",toarray"`
	P     int
	VV    rawUints
	Cloud rawUints
}

// rawUints is a CBOR array of unsigned integers kept as the encoding of
// its elements (a slice of the decoded document: valid while it is), n of
// them.
type rawUints struct {
	n int
	b []byte
}

// UnmarshalCBOR checks that data is a definite-length array of unsigned
// integers and keeps it.
func (r *rawUints) UnmarshalCBOR(data []byte) error {
	n, rest, err := cborHead(data, 4)
	if err != nil {
		return err
	}
	b := rest
	var i uint64
	for ; i < n && len(b) > 0; i++ {
		if _, b, err = cborHead(b, 0); err != nil {
			return err
		}
	}
	if i != n || len(b) != 0 {
		return errors.New("token: malformed array")
	}
	r.n, r.b = int(n), rest
	return nil
}

// each calls fn with each element in turn.
func (r rawUints) each(fn func(v uint64) error) error {
	b := r.b
	for range r.n {
		var v uint64
		var err error
		if v, b, err = cborHead(b, 0); err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return nil
}

// cborHead reads the head of a CBOR data item of major type major with a
// definite argument and returns the argument and what follows.
func cborHead(b []byte, major byte) (uint64, []byte, error) {
	if len(b) == 0 || b[0]>>5 != major {
		return 0, nil, errors.New("token: unexpected item")
	}
	info := b[0] & 31
	if info < 24 {
		return uint64(info), b[1:], nil
	}
	size := 0
	switch info {
	case 24:
		size = 1
	case 25:
		size = 2
	case 26:
		size = 4
	case 27:
		size = 8
	default:
		return 0, nil, errors.New("token: indefinite or reserved length")
	}
	if len(b) < 1+size {
		return 0, nil, errors.New("token: truncated item")
	}
	var v uint64
	for _, c := range b[1 : 1+size] {
		v = v<<8 | uint64(c)
	}
	return v, b[1+size:], nil
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// partToken is a decoded partitioned token: its entries, most recently
// touched first, each partition at most once.
type partToken struct {
	parts []int
	ctxs  []crdt.Context
}

// parsePartitionToken decodes a token of a cluster of partitions
// partitions.
func parsePartitionToken(s string, partitions int) (partToken, error) {
	var t partToken
	if !strings.HasPrefix(s, partitionTokenPrefix) {
		return t, fmt.Errorf("a token of a partitioned cluster starts with %q (this one is of an unpartitioned cluster)", partitionTokenPrefix)
	}
	if len(s) > MaxPartitionTokenChars {
		return t, fmt.Errorf("token longer than %d characters", MaxPartitionTokenChars)
	}
	body, compressed := strings.CutPrefix(s, compressedPartitionTokenPrefix)
	if !compressed {
		body = s[len(partitionTokenPrefix):]
	}
	if err := crdt.CheckTokenAlphabet(body); err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	if compressed {
		if b, err = crdt.InflateToken(b, MaxPartitionTokenDoc); err != nil {
			return t, fmt.Errorf("token: %w", err)
		}
	}
	var doc tokenDocIn
	if err := crdt.Unmarshal(b, &doc, len(b)); err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	if len(doc.Parts) > MaxTokenPartitions {
		return t, fmt.Errorf("token covers %d partitions, at most %d", len(doc.Parts), MaxTokenPartitions)
	}
	for _, n := range doc.Names {
		if !crdt.ValidReplica(crdt.ReplicaID(n)) {
			return t, fmt.Errorf("token names replica %q", n)
		}
	}
	pairs := func(p int, xs rawUints, add func(name, c uint64)) error {
		if xs.n%2 != 0 {
			return fmt.Errorf("token, partition %d: odd pairs", p)
		}
		var name uint64
		first := true
		return xs.each(func(v uint64) error {
			if first {
				name, first = v, false
				return nil
			}
			first = true
			if name >= uint64(len(doc.Names)) || v == 0 {
				return fmt.Errorf("token, partition %d: bad entry", p)
			}
			add(name, v)
			return nil
		})
	}
	// Out-of-order dots are kept one by one up to crdt.MaxTokenCloudDots
	// in all (as a plain token keeps them); past that every entry is read
	// as its ceiling, which covers it: a set of dots costs many times
	// its encoding, and a compressed token many times its size.
	clouds := 0
	for _, e := range doc.Parts {
		clouds += e.Cloud.n / 2
		if e.VV.n/2 > len(doc.Names) {
			// A version vector names each replica once.
			return t, fmt.Errorf("token, partition %d: %d version vector entries for %d replicas", e.P, e.VV.n/2, len(doc.Names))
		}
	}
	ceil := clouds > crdt.MaxTokenCloudDots
	// The version vector entries the partitions' contexts will hold (the
	// replicas each names, with its cloud's when read as ceilings) are
	// counted before any is built, and kept within MaxTokenVVEntries in
	// all: the partitions touched longest ago past it are dropped, as
	// format drops them (which never makes such a token).
	keep, total := len(doc.Parts), 0
	seen := make([]uint64, (len(doc.Names)+63)/64)
	var ps []int
	for i, e := range doc.Parts {
		if e.P < 0 || e.P >= partitions {
			return t, fmt.Errorf("token names partition %d of a cluster of %d", e.P, partitions)
		}
		if slices.Contains(ps, e.P) {
			return t, fmt.Errorf("token names partition %d twice", e.P)
		}
		ps = append(ps, e.P)
		clear(seen)
		n := 0
		mark := func(name, _ uint64) {
			if bit := uint64(1) << (name % 64); seen[name/64]&bit == 0 {
				seen[name/64] |= bit
				n++
			}
		}
		err := pairs(e.P, e.VV, mark)
		if err == nil && ceil {
			err = pairs(e.P, e.Cloud, mark)
		} else if err == nil {
			err = pairs(e.P, e.Cloud, func(_, _ uint64) {})
		}
		if err != nil {
			return t, err
		}
		if i == 0 && n > MaxTokenVVEntries {
			return t, fmt.Errorf("token, partition %d: %d version vector entries, at most %d", e.P, n, MaxTokenVVEntries)
		}
		if total += n; total > MaxTokenVVEntries && i < keep {
			keep = i
		}
	}
	for _, e := range doc.Parts[:keep] {
		var c crdt.Context
		err := pairs(e.P, e.VV, func(name, n uint64) {
			if c.VV == nil {
				c.VV = map[crdt.ReplicaID]uint64{}
			}
			r := crdt.ReplicaID(doc.Names[name])
			c.VV[r] = max(c.VV[r], n)
		})
		if err == nil && ceil {
			err = pairs(e.P, e.Cloud, func(name, n uint64) {
				if c.VV == nil {
					c.VV = map[crdt.ReplicaID]uint64{}
				}
				r := crdt.ReplicaID(doc.Names[name])
				c.VV[r] = max(c.VV[r], n)
			})
		} else if err == nil {
			// One compaction at the end: inserting one by one would
			// compact after each dot.
			err = pairs(e.P, e.Cloud, func(name, n uint64) {
				if c.Cloud == nil {
					c.Cloud = map[crdt.Dot]struct{}{}
				}
				c.Cloud[crdt.Dot{Replica: crdt.ReplicaID(doc.Names[name]), Counter: n}] = struct{}{}
			})
			c.Compact()
		}
		if err != nil {
			return t, err
		}
		t.parts = append(t.parts, e.P)
		t.ctxs = append(t.ctxs, c)
	}
	return t, nil
}

// get returns the context of partition p, nil when the token does not
// cover it.
func (t *partToken) get(p int) *crdt.Context {
	if i := slices.Index(t.parts, p); i >= 0 {
		return &t.ctxs[i]
	}
	return nil
}

// touch joins c into partition p's context and makes p the most recently
// touched.
func (t *partToken) touch(p int, c *crdt.Context) {
	var cur crdt.Context
	if i := slices.Index(t.parts, p); i >= 0 {
		cur = t.ctxs[i]
		t.parts = slices.Delete(t.parts, i, i+1)
		t.ctxs = slices.Delete(t.ctxs, i, i+1)
	}
	if c != nil {
		cur.Join(c)
	}
	t.parts = slices.Insert(t.parts, 0, p)
	t.ctxs = slices.Insert(t.ctxs, 0, cur)
}

// format encodes the token within its bounds (see above).
func (t *partToken) format() string {
	n := min(len(t.parts), MaxTokenPartitions)
	enc := func(n int, ceil bool) string {
		var doc tokenDoc
		index := map[crdt.ReplicaID]uint64{}
		name := func(r crdt.ReplicaID) uint64 {
			i, ok := index[r]
			if !ok {
				i = uint64(len(doc.Names))
				index[r] = i
				doc.Names = append(doc.Names, string(r))
			}
			return i
		}
		for i := range n {
			c := &t.ctxs[i]
			if ceil {
				cc := c.Ceil()
				c = &cc
			}
			part := tokenPart{P: t.parts[i]}
			for _, r := range slices.Sorted(maps.Keys(c.VV)) {
				part.VV = append(part.VV, name(r), c.VV[r])
			}
			dots := slices.SortedFunc(maps.Keys(c.Cloud), func(a, b crdt.Dot) int {
				return strings.Compare(string(a.Replica), string(b.Replica))*2 + cmpU(a.Counter, b.Counter)
			})
			for _, d := range dots {
				part.Cloud = append(part.Cloud, name(d.Replica), d.Counter)
			}
			doc.Parts = append(doc.Parts, part)
		}
		b, err := crdt.Marshal(doc)
		if err != nil {
			panic(fmt.Sprintf("region: encode token: %v", err))
		}
		return partitionTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	}
	// The version vector entries a parse of the first n entries holds
	// (parsePartitionToken): each context's replicas, with those of its
	// cloud when the token reads clouds as ceilings (past
	// crdt.MaxTokenCloudDots in all) or the context goes as its ceiling.
	vv, both, clouds := make([]int, n), make([]int, n), make([]int, n)
	for i := range n {
		c := &t.ctxs[i]
		vv[i], both[i], clouds[i] = len(c.VV), len(c.VV), len(c.Cloud)
		var extra map[crdt.ReplicaID]struct{}
		for d := range c.Cloud {
			if _, ok := c.VV[d.Replica]; !ok {
				if extra == nil {
					extra = map[crdt.ReplicaID]struct{}{}
				}
				extra[d.Replica] = struct{}{}
			}
		}
		both[i] += len(extra)
	}
	within := func(n int, ceil bool) bool {
		dots, total := 0, 0
		for i := range n {
			dots += clouds[i]
		}
		for i := range n {
			if ceil || dots > crdt.MaxTokenCloudDots {
				total += both[i]
			} else {
				total += vv[i]
			}
		}
		return total <= MaxTokenVVEntries
	}
	// The partitions past MaxTokenVVEntries are dropped first: reading
	// the clouds as ceilings would not make fewer entries.
	for n > 0 && !within(n, false) {
		n--
	}
	// Too long plain, the document goes compressed: replica ids share
	// their regions' names, which compress well (a partition's context
	// after many incarnations of long names).
	fit := func(n int, ceil bool) (string, bool) {
		if !within(n, ceil) {
			return "", false
		}
		s := enc(n, ceil)
		if len(s) <= MaxPartitionTokenChars {
			return s, true
		}
		b, _ := base64.RawURLEncoding.DecodeString(s[len(partitionTokenPrefix):])
		if len(b) > MaxPartitionTokenDoc {
			return "", false // more than a compressed token may inflate to
		}
		s = compressedPartitionTokenPrefix + base64.RawURLEncoding.EncodeToString(crdt.Deflate(b))
		return s, len(s) <= MaxPartitionTokenChars
	}
	s, ok := fit(n, false)
	for ceil := false; !ok && n > 0; {
		if !ceil {
			ceil = true
		} else {
			n--
		}
		s, ok = fit(n, ceil)
	}
	return s
}

// JoinPartitionTokens returns the join of two causal tokens of a
// partitioned cluster: each partition's context joined, next's partitions
// the most recently touched, within the token's bounds (a client that
// keeps the newest token of a session joins them so). ok is false when
// either is not such a token.
func JoinPartitionTokens(cur, next string) (joined string, ok bool) {
	a, err := parsePartitionToken(cur, config.MaxPartitions)
	if err != nil {
		return "", false
	}
	b, err := parsePartitionToken(next, config.MaxPartitions)
	if err != nil {
		return "", false
	}
	for i := len(b.parts) - 1; i >= 0; i-- {
		a.touch(b.parts[i], &b.ctxs[i])
	}
	return a.format(), true
}

// IsPartitionToken reports whether tok is a well-formed causal token of a
// partitioned cluster.
func IsPartitionToken(tok string) bool {
	_, err := parsePartitionToken(tok, config.MaxPartitions)
	return err == nil
}

type partitionKey struct{}

// WithPartition returns ctx naming the partition a request is for, which
// a partitioned region's WaitToken waits on (the API sets it when it
// routes the request).
func WithPartition(ctx context.Context, p int) context.Context {
	return context.WithValue(ctx, partitionKey{}, p)
}

// PartitionOf returns the partition WithPartition set in ctx.
func PartitionOf(ctx context.Context) (int, bool) {
	p, ok := ctx.Value(partitionKey{}).(int)
	return p, ok
}

// NoteHomeToken records, in the Answer of ctx, a home's token of
// partition p (another partition than the forwarding node's): the
// answer's partitioned token covers it. A malformed token is ignored, as
// Answer.addToken does.
func NoteHomeToken(ctx context.Context, p int, tok string) {
	a := answerOf(ctx)
	if a == nil || tok == "" {
		return
	}
	c, err := crdt.ParseToken(tok)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.parts == nil {
		a.parts = map[int]*crdt.Context{}
	}
	if cur, ok := a.parts[p]; ok {
		cur.Join(&c)
	} else {
		a.parts[p] = &c
	}
}

// partTokensOf returns the tokens of other partitions that ctx's Answer
// recorded (NoteHomeToken), for a forwarded answer (HomeResponse.PartTokens).
func partTokensOf(ctx context.Context) map[int]string {
	a := answerOf(ctx)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.parts) == 0 {
		return nil
	}
	out := make(map[int]string, len(a.parts))
	for p, c := range a.parts {
		if len(out) == MaxTokenPartitions {
			break
		}
		out[p] = fitToken(c)
	}
	return out
}

// NoteToken records, in the Answer of ctx, a token of the answering
// node's own partition (or of its region, unpartitioned) that a home's
// answer carried; a malformed one is ignored.
func NoteToken(ctx context.Context, tok string) {
	answerOf(ctx).addToken(tok)
}

// TakePartitionAnswer records what a home's answer to a request forwarded
// by the node of partition part (to the node of partition target) carries
// for the request's partitioned token, and returns the answer to use: the
// home's tokens of other partitions (PartTokens) are recorded for those
// partitions, and its token, if target is another partition than part's,
// for target (taken off the answer, so that it is not mixed into part's).
func TakePartitionAnswer(ctx context.Context, resp *HomeResponse, part, target, partitions int) *HomeResponse {
	for p, tok := range resp.PartTokens {
		switch {
		case p < 0 || p >= partitions || p == target:
		case p == part:
			NoteToken(ctx, tok)
		default:
			NoteHomeToken(ctx, p, tok)
		}
	}
	if target == part || resp.Token == "" {
		return resp
	}
	NoteHomeToken(ctx, target, resp.Token)
	out := *resp
	out.Token = ""
	return &out
}
