package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/latticedb/lattice/region"
)

// Header and query parameter of the write and read concerns.
const (
	headerReplicas = "Lattice-Replicas"
	queryQuorum    = "quorum"
)

// Concern is a number of regions, for a write concern (WithReplicas) or
// a read concern (WithQuorum): Regions(n), Majority or All, as the API
// takes them (docs/api.md, "Write and read concerns"). The regions
// check that a number is at most their count (else 400
// invalid_request).
type Concern string

// Concerns that follow the cluster's size.
const (
	// Majority is ⌊R/2⌋+1 of the cluster's R regions.
	Majority Concern = "majority"
	// All is every region of the cluster.
	All Concern = "all"
)

// Regions returns the concern of n regions (n ≥ 1), the answering one
// included.
func Regions(n int) Concern { return Concern(fmt.Sprint(n)) }

// maxConcernDigits bounds the digits of a number of regions.
const maxConcernDigits = 4

// ParseConcern reads a concern as the API and the lattice command take
// it: a number of regions from 1, majority or all.
func ParseConcern(s string) (Concern, error) {
	c := Concern(s)
	if !c.valid() {
		return "", fmt.Errorf("lattice client: concern %q: want a number of regions from 1, majority or all", s)
	}
	return c, nil
}

func (c Concern) valid() bool {
	if c == Majority || c == All {
		return true
	}
	if c == "" || len(c) > maxConcernDigits || c[0] == '0' {
		return false
	}
	for _, ch := range []byte(c) {
		if ch < '0' || ch > '9' {
			return false
		}
	}
	return true
}

type concernKey struct{}

// concerns are what a context asks of the calls made with it.
type concerns struct {
	replicas, quorum Concern
	minimal          bool
}

func concernsOf(ctx context.Context) concerns {
	c, _ := ctx.Value(concernKey{}).(concerns)
	return c
}

// WithReplicas returns ctx asking that every write made with it (cart
// writes, restock, adjust, reserve, commit, release, checkout) be
// answered only once n regions, the answering one included, hold it
// durably: the Lattice-Replicas header. Reads made with it are
// unaffected. A write that does not reach n regions within the
// request's deadline fails with ErrReplicationTimeout, but it WAS
// applied and still replicates: see ErrReplicationTimeout for what the
// client retries.
func WithReplicas(ctx context.Context, n Concern) context.Context {
	c := concernsOf(ctx)
	c.replicas = n
	return context.WithValue(ctx, concernKey{}, c)
}

// WithoutCart returns ctx asking that the cart writes made with it
// (AddItem, SetItem, RemoveItem, ClearCart) be answered without the cart
// (the Prefer: return=minimal header, answered 204): they then return a
// nil cart and no error when applied. For a cart of many lines this
// saves the region most of the write's cost, which is listing every
// line. Other calls made with it are unaffected.
func WithoutCart(ctx context.Context) context.Context {
	c := concernsOf(ctx)
	c.minimal = true
	return context.WithValue(ctx, concernKey{}, c)
}

// WithQuorum returns ctx asking that the cart and stock reads made with
// it (Cart, Item) answer the join of n regions' states, the answering
// one included (?quorum=n), repairing the regions found behind. Other
// calls made with it are unaffected. Too few regions answering fails
// with ErrQuorumUnavailable, which, like any 503 of a read, the client
// retries (at the next region) within its attempts.
func WithQuorum(ctx context.Context, n Concern) context.Context {
	c := concernsOf(ctx)
	c.quorum = n
	return context.WithValue(ctx, concernKey{}, c)
}

// Errors that a *Problem matches with errors.Is, by its code.
var (
	// ErrReplicationTimeout is a 503 replication_timeout: the write was
	// applied at the answering region and will still replicate, but it
	// did not reach the regions WithReplicas asked for in time (or too
	// few were connected to). It is not rolled back. The client never
	// repeats such a call, at the same region or another, whatever the
	// operation: a repeat of a cart add or a restock would apply it
	// twice, a repeat of a set, removal or clear would be a new write
	// that may undo others made since, and a repeat of a keyed
	// operation answers its recorded outcome at once, which would hide
	// that the write concern was not met. The caller decides: read with
	// WithQuorum to see where the write is, or go on knowing it will
	// replicate.
	ErrReplicationTimeout = errors.New("lattice client: " + region.CodeReplicationTimeout)
	// ErrQuorumUnavailable is a 503 quorum_unavailable: fewer regions
	// than WithQuorum asked for answered a read. Nothing was changed.
	ErrQuorumUnavailable = errors.New("lattice client: " + region.CodeQuorumUnavailable)
)

// Is reports whether p is the problem target names: ErrReplicationTimeout
// or ErrQuorumUnavailable.
func (p *Problem) Is(target error) bool {
	switch target {
	case ErrReplicationTimeout:
		return p.Code == region.CodeReplicationTimeout
	case ErrQuorumUnavailable:
		return p.Code == region.CodeQuorumUnavailable
	}
	return false
}

// applyConcerns checks ctx's concerns and returns cl with them: the
// write concern on a write, the read concern on a read that takes it.
func applyConcerns(ctx context.Context, cl call) (call, error) {
	c := concernsOf(ctx)
	if c.replicas != "" && cl.method != http.MethodGet {
		if !c.replicas.valid() {
			return cl, fmt.Errorf("lattice client: write concern %q: want a number of regions from 1, majority or all", c.replicas)
		}
		cl.replicas = c.replicas
	}
	if c.minimal && cl.cartWrite {
		cl.minimal, cl.want = true, http.StatusNoContent
	}
	if c.quorum != "" && cl.quorum {
		if !c.quorum.valid() {
			return cl, fmt.Errorf("lattice client: read concern %q: want a number of regions from 1, majority or all", c.quorum)
		}
		q := url.Values{}
		for k, v := range cl.query {
			q[k] = v
		}
		q.Set(queryQuorum, string(c.quorum))
		cl.query = q
	}
	return cl, nil
}
