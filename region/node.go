package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Clock tells the time. The home ledger reads it for reservation expiry;
// tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

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
	Home      func(sku string) string
	Store     *Store
	Clock     Clock
	Logger    *slog.Logger
	Metrics   *Metrics
	Publisher Publisher
	Forwarder Forwarder
	// ExpiryInterval is how often held reservations past their expiry are
	// released in the background (they are also expired lazily on use).
	ExpiryInterval time.Duration
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
	name  crdt.ReplicaID
	opts  Options
	store *Store
	clock Clock
	log   *slog.Logger
	m     *Metrics

	amu       sync.Mutex
	applied   crdt.Context
	appliedCh chan struct{} // closed and replaced when applied grows

	imu      sync.Mutex
	inflight map[string]struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

// Store keys.
const (
	keyApplied   = "m/applied"
	prefixCart   = "c/"
	prefixItem   = "i/"
	prefixLedger = "l/"
	prefixRes    = "r/"
	prefixIdem   = "k/"
)

// NewNode opens a region on its store.
func NewNode(opts Options) (*Node, error) {
	if !crdt.ValidID(opts.Name) {
		return nil, fmt.Errorf("region: invalid region name %q", opts.Name)
	}
	if opts.Store == nil {
		return nil, errors.New("region: no store")
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = opts.Store.metrics
	}
	if opts.ExpiryInterval == 0 {
		opts.ExpiryInterval = 500 * time.Millisecond
	}
	n := &Node{name: crdt.ReplicaID(opts.Name), opts: opts, store: opts.Store, clock: opts.Clock,
		log: opts.Logger, m: opts.Metrics, appliedCh: make(chan struct{}),
		inflight: make(map[string]struct{}), stop: make(chan struct{})}
	err := n.store.View(func(r Reader) error {
		ctx, err := readApplied(r)
		n.applied = ctx
		return err
	})
	if err != nil {
		return nil, err
	}
	n.wg.Add(1)
	go n.expiryLoop()
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

// HomeOf returns the home region of sku.
func (n *Node) HomeOf(sku string) string {
	if n.opts.Home == nil {
		return string(n.name)
	}
	return n.opts.Home(sku)
}

// Ready reports whether the store is open.
func (n *Node) Ready() bool {
	select {
	case <-n.stop:
		return false
	default:
		return true
	}
}

func readApplied(r Reader) (crdt.Context, error) {
	b, ok, err := r.Get(keyApplied)
	if err != nil || !ok {
		return crdt.Context{}, err
	}
	return crdt.DecodeContext(b)
}

// write runs fn in one store transaction. If fn reports that it made a
// replicated change (a non-empty group), the transaction also records the
// next region-level dot; once durable, the applied context is advanced and
// the delta published.
func (n *Node) write(fn func(tx *Tx, g *crdt.Group) error) error {
	var d Delta
	err := n.store.Update(func(tx *Tx) error {
		g := &crdt.Group{}
		if err := fn(tx, g); err != nil {
			return err
		}
		if g.Len() == 0 {
			return nil
		}
		applied, err := readApplied(tx)
		if err != nil {
			return err
		}
		dot := applied.Next(n.name)
		applied.Insert(dot)
		tx.Set(keyApplied, crdt.EncodeContext(&applied))
		d = Delta{Origin: n.name, Seq: dot.Counter, Group: g, At: n.clock.Now()}
		return nil
	})
	if err != nil {
		return n.storeErr(err)
	}
	if d.Group != nil {
		n.noteApplied(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		if n.opts.Publisher != nil {
			n.opts.Publisher.Publish(d)
		}
	}
	return nil
}

func (n *Node) storeErr(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var ce *CorruptError
	if errors.As(err, &ce) {
		return &Error{Code: CodeUnavailable, Detail: fmt.Sprintf("stored state of %s is damaged and awaits repair from a peer", ce.Key), RetryAfter: 5}
	}
	return err
}

func (n *Node) noteApplied(dots ...crdt.Dot) {
	n.amu.Lock()
	for _, d := range dots {
		n.applied.Insert(d)
	}
	close(n.appliedCh)
	n.appliedCh = make(chan struct{})
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
func (n *Node) Token() string {
	n.amu.Lock()
	defer n.amu.Unlock()
	return crdt.FormatToken(&n.applied)
}

// WaitToken waits until the region has applied everything token covers.
func (n *Node) WaitToken(ctx context.Context, token string) error {
	want, err := crdt.ParseToken(token)
	if err != nil {
		return Errorf(CodeInvalidToken, "malformed Lattice-Token: %v", err)
	}
	for {
		n.amu.Lock()
		ok, ch := n.applied.Covers(&want), n.appliedCh
		n.amu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return Errorf(CodeCausalTimeout, "region %s has not yet applied everything the token covers", n.name)
		}
	}
}

// ApplyRemote joins a delta-group made by another region (or an
// anti-entropy repair) in one transaction and records the dots it carries
// in the applied context. Joins are idempotent, so a duplicate is harmless.
func (n *Node) ApplyRemote(dots []crdt.Dot, g *crdt.Group) error {
	err := n.store.Update(func(tx *Tx) error {
		for id, c := range g.Carts {
			cur, err := loadCart(tx, id)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				return err
			}
			if cur.Brings(c) || err != nil {
				cur.Join(c)
				tx.Set(prefixCart+id, crdt.EncodeCart(cur))
			}
		}
		for sku, it := range g.Items {
			cur, err := loadItem(tx, sku)
			if err != nil && !errors.Is(err, ErrCorrupt) {
				return err
			}
			if cur.Brings(it) || err != nil {
				cur.Join(it)
				tx.Set(prefixItem+sku, crdt.EncodeItem(cur))
			}
		}
		if len(dots) == 0 {
			return nil
		}
		applied, err := readApplied(tx)
		if err != nil {
			return err
		}
		for _, d := range dots {
			applied.Insert(d)
		}
		tx.Set(keyApplied, crdt.EncodeContext(&applied))
		return nil
	})
	if err != nil {
		return err
	}
	n.noteApplied(dots...)
	return nil
}

// ReadObjects returns the stored states of the given carts and items as a
// group (for anti-entropy). Damaged values are left out.
func (n *Node) ReadObjects(carts, items []string) (*crdt.Group, error) {
	g := &crdt.Group{}
	err := n.store.View(func(r Reader) error {
		for _, id := range carts {
			if c, err := loadCart(r, id); err == nil && !c.Empty() {
				g.AddCart(id, c)
			} else if err != nil && !errors.Is(err, ErrCorrupt) {
				return err
			}
		}
		for _, sku := range items {
			if it, err := loadItem(r, sku); err == nil {
				g.AddItem(sku, it)
			} else if !errors.Is(err, ErrCorrupt) {
				return err
			}
		}
		return nil
	})
	return g, err
}

func loadCart(r Reader, id string) (*crdt.Cart, error) {
	b, ok, err := r.Get(prefixCart + id)
	if err != nil {
		return &crdt.Cart{}, err
	}
	if !ok {
		return &crdt.Cart{}, nil
	}
	c, err := crdt.DecodeCart(b)
	if err != nil {
		return &crdt.Cart{}, &CorruptError{Key: prefixCart + id}
	}
	return c, nil
}

func loadItem(r Reader, sku string) (*crdt.Item, error) {
	b, ok, err := r.Get(prefixItem + sku)
	if err != nil {
		return &crdt.Item{}, err
	}
	if !ok {
		return &crdt.Item{}, nil
	}
	it, err := crdt.DecodeItem(b)
	if err != nil {
		return &crdt.Item{}, &CorruptError{Key: prefixItem + sku}
	}
	return it, nil
}

func validateID(field, v string) error {
	if !crdt.ValidID(v) {
		return InvalidField(field, "%s must be 1-128 characters of [A-Za-z0-9._:-]", field)
	}
	return nil
}
