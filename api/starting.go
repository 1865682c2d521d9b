package api

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/latticedb/lattice/region"
)

// StartingRetryAfter is the Retry-After, in seconds, of a 503 starting.
const StartingRetryAfter = 5

// Starting returns the handler a region's process serves while it opens
// its store, before it can serve the API: GET /healthz answers 200 (the
// process is alive) and every other request 503 starting, a problem with
// Retry-After, whose detail is what the process is doing (detail()).
// Nothing else is read or written, so every request gets a whole answer.
// With tokens, a request is first checked as it is once the region
// serves (Options.Tokens and ProtectProbes): 401 or 403 without a token
// that allows it.
func Starting(regionName string, detail func() string, tokens *Tokens, protectProbes bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestIDOf(r)
		hdr := w.Header()
		hdr.Set(HeaderRequestID, id)
		if err := checkToken(tokens, protectProbes, r, hdr); err != nil {
			p := ProblemFor(err)
			p.RequestID = id
			b, _ := json.Marshal(p) // a Problem always encodes
			hdr.Set("Content-Type", ProblemContentType)
			w.WriteHeader(p.Status)
			if r.Method != http.MethodHead {
				_, _ = w.Write(b)
			}
			return
		}
		if r.URL.Path == "/healthz" && r.Method == http.MethodGet {
			// GET only, as once the region serves (HEAD is 405 then).
			hdr.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok", "region": regionName})
			return
		}
		if r.URL.Path == "/healthz" && r.Method == http.MethodOptions {
			// As once the region serves: 204 with the path's methods.
			hdr.Set("Allow", "OPTIONS, GET")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.URL.Path == "/healthz" {
			p := problem(CodeMethodNotAllowed, "this path does not support the request method")
			p.RequestID = id
			b, _ := json.Marshal(p) // a Problem always encodes
			hdr.Set("Content-Type", ProblemContentType)
			hdr.Set("Allow", "OPTIONS, GET")
			w.WriteHeader(p.Status)
			if r.Method != http.MethodHead {
				_, _ = w.Write(b)
			}
			return
		}
		p := ProblemFor(&region.Error{Code: CodeStarting, Detail: detail(), RetryAfter: StartingRetryAfter})
		p.RequestID = id
		b, _ := json.Marshal(p) // a Problem always encodes
		hdr.Set("Content-Type", ProblemContentType)
		hdr.Set("Retry-After", strconv.Itoa(p.RetryAfter))
		w.WriteHeader(p.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	})
}
