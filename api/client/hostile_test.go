package client_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/crdt"
)

// hostileTokenDoc mirrors region's partitioned-token encoding (region/ptoken.go,
// docs/api.md "Causal tokens"): "p." + base64url(CBOR [names, [[p, vv, cloud]...]]).
type hostileTokenDoc struct {
	_     struct{} `cbor:",toarray"`
	Names []string
	Parts []hostileTokenPart
}

type hostileTokenPart struct {
	_     struct{} `cbor:",toarray"`
	P     int
	VV    []uint64
	Cloud []uint64
}

// hostilePToken makes a partitioned token: per partition, us-east's counter.
func hostilePToken(t *testing.T, parts ...[2]int) string {
	t.Helper()
	doc := hostileTokenDoc{Names: []string{"us-east"}}
	for _, p := range parts {
		doc.Parts = append(doc.Parts, hostileTokenPart{P: p[0], VV: []uint64{0, uint64(p[1])}})
	}
	b, err := crdt.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return "p." + base64.RawURLEncoding.EncodeToString(b)
}

// hostilePTokenParts decodes a partitioned token: partition -> us-east counter.
func hostilePTokenParts(t *testing.T, tok string) map[int]uint64 {
	t.Helper()
	if !strings.HasPrefix(tok, "p.") {
		t.Fatalf("token %q is not a partitioned token", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[2:])
	if err != nil {
		t.Fatal(err)
	}
	var doc hostileTokenDoc
	if err := crdt.Unmarshal(b, &doc, len(b)); err != nil {
		t.Fatal(err)
	}
	out := map[int]uint64{}
	for _, p := range doc.Parts {
		for i := 0; i+1 < len(p.VV); i += 2 {
			if doc.Names[p.VV[i]] == "us-east" {
				out[p.P] = p.VV[i+1]
			}
		}
	}
	return out
}

func hostileCart(w http.ResponseWriter, tok, id string) {
	if tok != "" {
		w.Header().Set("Lattice-Token", tok)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"cart_id": id, "region": "us-east", "items": []any{}})
}

// TestPartitionTokensJoined: in a partitioned cluster two concurrent
// writes of one session to carts of different partitions each answer a
// token of their own partition; the client keeps both, joined partition by
// partition, so that the next request covers both writes.
func TestPartitionTokensJoined(t *testing.T) {
	tokA := hostilePToken(t, [2]int{1, 7}) // answer of the write to cart a (partition 1)
	tokB := hostilePToken(t, [2]int{2, 9}) // answer of the write to cart b (partition 2)
	releaseA := make(chan struct{})
	var mu sync.Mutex
	var readToken string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/carts/a/items":
			<-releaseA // answered after b's write
			hostileCart(w, tokA, "a")
		case r.Method == http.MethodPost && r.URL.Path == "/v1/carts/b/items":
			hostileCart(w, tokB, "b")
		case r.Method == http.MethodGet:
			mu.Lock()
			readToken = r.Header.Get("Lattice-Token")
			mu.Unlock()
			hostileCart(w, r.Header.Get("Lattice-Token"), "a")
		}
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if _, err := cl.AddItem(ctx, "a", "book", 1); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		if _, err := cl.AddItem(ctx, "b", "pen", 1); err != nil {
			t.Error(err)
		}
		close(releaseA)
	}()
	wg.Wait()
	if _, err := cl.Cart(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := hostilePTokenParts(t, readToken)
	mu.Unlock()
	if got[1] < 7 || got[2] < 9 {
		t.Fatalf("after writes answered %v (partition 1) and %v (partition 2), the session sends a token covering %v: "+
			"it lost a write of its own (no read-your-writes)", hostilePTokenParts(t, tokA), hostilePTokenParts(t, tokB), got)
	}
}

// TestPartitionTokenDoesNotRegress: SetToken of an older partitioned
// token (a web session's, kept before the last write) does not take the
// client's token back: it is joined, and the token only moves forward.
func TestPartitionTokenDoesNotRegress(t *testing.T) {
	cl, err := client.New([]string{"http://127.0.0.1:1"}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	newer := hostilePToken(t, [2]int{3, 10})
	older := hostilePToken(t, [2]int{3, 4})
	cl.SetToken(newer)
	cl.SetToken(older)
	if got := hostilePTokenParts(t, cl.Token()); got[3] < 10 {
		t.Fatalf("token went back from partition 3 at 10 to %v", got)
	}
}

// TestOwnRetryInProgressWaits: a Reserve's first attempt reaches the home
// but its answer is late (the per-attempt HTTPClient.Timeout ends it); the
// client repeats it with the same key at the next region, and the home
// answers 409 request_in_progress while the first still runs. That is the
// call's own earlier attempt: the client waits and asks again, and returns
// its outcome, rather than a 409 about a key the caller never saw.
func TestOwnRetryInProgressWaits(t *testing.T) {
	// One home, reached through two regions.
	var mu sync.Mutex
	done := map[string]time.Time{} // key -> when the decision is made
	var decisions atomic.Int32
	home := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		at, seen := done[key]
		if !seen {
			at = time.Now().Add(600 * time.Millisecond)
			done[key] = at
			decisions.Add(1)
		}
		mu.Unlock()
		if seen && time.Now().Before(at) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"type":"urn:lattice:problem:request_in_progress","title":"Request in progress","status":409,"code":"request_in_progress","detail":"a request with this Idempotency-Key is running"}`)
			return
		}
		time.Sleep(time.Until(at)) // the scripted home answers the first attempt late
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Lattice-Token", "gQ")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"reservation_id":"us-east:1","sku":"book","qty":1,"home":"us-east","state":"held","expires_at":"2030-01-01T00:00:00Z"}`)
	}
	a := httptest.NewServer(http.HandlerFunc(home))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(home))
	defer b.Close()
	cl, err := client.New([]string{a.URL, b.URL}, client.Options{
		HTTPClient: &http.Client{Timeout: 200 * time.Millisecond}, MaxAttempts: 8, Backoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Reserve(ctxT(t, 10*time.Second), "book", 1, client.KeyOptions{})
	if err != nil {
		t.Fatalf("Reserve (one call, one decision made at the home: %d) failed with %v: the reservation is held, "+
			"but the caller got its own retry's request_in_progress and does not know the key", decisions.Load(), err)
	}
	if res.ID != "us-east:1" {
		t.Fatalf("got %+v", res)
	}
}

// TestMinimalAnsweredWithCart: WithoutCart sends Prefer: return=minimal,
// a preference a server (or a proxy that drops the header, or a region of
// another version) may ignore and answer 200 with the cart: the write was
// applied, and the client answers it as such, token kept.
func TestMinimalAnsweredWithCart(t *testing.T) {
	var adds atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		adds.Add(1)
		hostileCart(w, "gQ", "c1") // 200 with the cart, Prefer ignored
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.AddItem(client.WithoutCart(ctxT(t, 5*time.Second)), "c1", "book", 1)
	if err != nil {
		t.Fatalf("an add the region applied and answered 200 (Prefer ignored) returned %v", err)
	}
	if cl.Token() != "gQ" {
		t.Fatalf("the answer's token was not kept: %q", cl.Token())
	}
}

// TestMalformedTokenKeepsGood: a success answered with a Lattice-Token
// that is no token does not replace the good token the client had (it
// would be sent, and refused, on every later call).
func TestMalformedTokenKeepsGood(t *testing.T) {
	good := crdt.FormatToken(&crdt.Context{VV: map[crdt.ReplicaID]uint64{"us-east": 5}})
	var mu sync.Mutex
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		sent = append(sent, r.Header.Get("Lattice-Token"))
		n := len(sent)
		mu.Unlock()
		switch n {
		case 1:
			hostileCart(w, good, "c1")
		case 2:
			hostileCart(w, "garbage!", "c1")
		default:
			hostileCart(w, "", "c1")
		}
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 5*time.Second)
	for range 3 {
		if _, err := cl.Cart(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if sent[2] != good {
		t.Fatalf("after an answer with token %q and one with a malformed token, the client sends %q", good, sent[2])
	}
}

// TestHugeAnswerIsAnError: an answer larger than the client's 64 MiB read
// limit is an error, not cut at the limit and returned as a success.
func TestHugeAnswerIsAnError(t *testing.T) {
	const size = 64<<20 + 4096
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		chunk := []byte(strings.Repeat("lattice_probe_metric 1\n", 1<<16)[:1<<20])
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), size-n)]); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cl.Metrics(ctxT(t, 60*time.Second))
	if err == nil {
		t.Fatalf("a %d-byte answer came back as %d bytes and no error (last bytes %q)", size, len(m), m[len(m)-20:])
	}
}

// TestAddNotRetriedAfterProxy503: behind a load balancer, an add reaches
// the region and is applied, then the proxy answers a 503 of its own (not
// one of the API's problems, which say that nothing was applied). The
// client does not repeat the add elsewhere, which would apply it twice.
func TestAddNotRetriedAfterProxy503(t *testing.T) {
	var applied atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		applied.Add(1) // the region behind the proxy applied the add
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
	}))
	defer proxy.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		applied.Add(1)
		hostileCart(w, "gQ", "c1")
	}))
	defer other.Close()
	cl, err := client.New([]string{proxy.URL, other.URL}, client.Options{MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	cl.AddItem(ctxT(t, 5*time.Second), "c1", "book", 1)
	if n := applied.Load(); n != 1 {
		t.Fatalf("one AddItem call was applied %d times", n)
	}
}
