package region

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"

	"github.com/latticedb/lattice/crdt"
)

// A partitioned cluster's causal token covers only the partitions the
// client touched, each with its own context (each partition of a region is
// a replica with its own dots). It is "p." followed by the URL-safe
// base64 of a CBOR array of [partition, context] pairs, the partition most
// recently touched first; an unpartitioned cluster's token is the plain
// context token (crdt.FormatToken) and has no '.'.
//
// Bounds: at most MaxTokenPartitions entries and MaxPartitionTokenChars
// characters. Past either, the entries' contexts are first reduced to
// their version vector ceilings (crdt.Context.Ceil: still covering
// everything, at the price of waiting for a few more dots), then the
// least recently touched entries are dropped: read-your-writes then holds
// for the MaxTokenPartitions partitions a client touched last. A
// three-region cluster's entry takes about 60–90 characters, so a token
// of a session that touched 32 partitions stays under 3 KiB.

// MaxTokenPartitions bounds the partitions one causal token covers.
const MaxTokenPartitions = 64

// MaxPartitionTokenChars bounds the length of a partitioned cluster's
// causal token.
const MaxPartitionTokenChars = 6 << 10

const partitionTokenPrefix = "p."

type tokenEntry struct {
	_   struct{} `cbor:",toarray"`
	P   int
	Ctx []byte
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
	b, err := base64.RawURLEncoding.DecodeString(s[len(partitionTokenPrefix):])
	if err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	var entries []tokenEntry
	if err := crdt.Unmarshal(b, &entries, len(b)); err != nil {
		return t, fmt.Errorf("token: %w", err)
	}
	if len(entries) > MaxTokenPartitions {
		return t, fmt.Errorf("token covers %d partitions, at most %d", len(entries), MaxTokenPartitions)
	}
	for _, e := range entries {
		if e.P < 0 || e.P >= partitions {
			return t, fmt.Errorf("token names partition %d of a cluster of %d", e.P, partitions)
		}
		if slices.Contains(t.parts, e.P) {
			return t, fmt.Errorf("token names partition %d twice", e.P)
		}
		c, err := crdt.DecodeContext(e.Ctx)
		if err != nil {
			return t, fmt.Errorf("token, partition %d: %w", e.P, err)
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
		entries := make([]tokenEntry, n)
		for i := range n {
			c := &t.ctxs[i]
			if ceil {
				cc := c.Ceil()
				c = &cc
			}
			entries[i] = tokenEntry{P: t.parts[i], Ctx: crdt.EncodeContext(c)}
		}
		b, err := crdt.Marshal(entries)
		if err != nil {
			panic(fmt.Sprintf("region: encode token: %v", err))
		}
		return partitionTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	}
	s := enc(n, false)
	for ceil := false; len(s) > MaxPartitionTokenChars; {
		if !ceil {
			ceil = true
		} else {
			n--
		}
		s = enc(n, ceil)
	}
	return s
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
