package client_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
)

// TestRedirectToUnconfiguredHostCarriesNoCredentials: a configured region
// (or whatever answers at its address: a proxy, a hijacked listener)
// answers an add with a 307 to another server on the same machine, a
// host:port the client was not given. The client's bearer token and
// causal token are for its configured regions only: the other server must
// get neither (and the add must not be applied there).
func TestRedirectToUnconfiguredHostCarriesNoCredentials(t *testing.T) {
	const bearer = "client-write-0123456789"
	var mu sync.Mutex
	type got struct{ auth, token, method string }
	var elsewhere []got
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		elsewhere = append(elsewhere, got{r.Header.Get("Authorization"), r.Header.Get("Lattice-Token"), r.Method})
		mu.Unlock()
		hostileCart(w, goodToken(9), "c1")
	}))
	defer other.Close()
	configured := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Redirect(w, r, other.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer configured.Close()

	cl, err := client.New([]string{configured.URL}, client.Options{MaxAttempts: 1, BearerToken: bearer})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken(goodToken(5))
	cl.AddItem(ctxT(t, 5*time.Second), "c1", "book", 1)

	mu.Lock()
	defer mu.Unlock()
	for _, g := range elsewhere {
		if g.auth != "" || g.token != "" {
			t.Fatalf("a redirect from %s sent a %s to %s, a host the client was not given, with Authorization %q and Lattice-Token %q",
				configured.URL, g.method, other.URL, g.auth, g.token)
		}
	}
	if len(elsewhere) != 0 {
		t.Fatalf("an add was sent %d times to %s, a host the client was not given", len(elsewhere), other.URL)
	}
}
