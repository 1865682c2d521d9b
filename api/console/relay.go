package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/crdt"
)

// relayRoute is a route of the API the console carries to a chosen
// region: an edit of a cart or of stock.
type relayRoute struct {
	method string
	// segments of the path after /v1; "{id}" is a cart id or sku.
	segments []string
}

// relayRoutes are the only requests /console/api/regions/{name}/v1/...
// carries.
var relayRoutes = []relayRoute{
	{http.MethodPost, []string{"carts", "{id}", "items"}},
	{http.MethodPut, []string{"carts", "{id}", "items", "{id}"}},
	{http.MethodDelete, []string{"carts", "{id}", "items", "{id}"}},
	{http.MethodDelete, []string{"carts", "{id}"}},
	{http.MethodPost, []string{"inventory", "{id}", "restock"}},
	{http.MethodPost, []string{"inventory", "{id}", "adjust"}},
}

// matchRelay returns the API path of segs (the path after /v1, split) for
// method, escaped, or why it is not relayed, with, for a path relayed
// with other methods only (405), those methods.
func matchRelay(method string, segs []string) (string, int, []string, error) {
	var allow []string
	for _, rr := range relayRoutes {
		if len(rr.segments) != len(segs) {
			continue
		}
		ok := true
		for i, s := range rr.segments {
			if s == "{id}" {
				ok = ok && segs[i] != ""
			} else {
				ok = ok && segs[i] == s
			}
		}
		if !ok {
			continue
		}
		if rr.method != method {
			allow = append(allow, rr.method)
			continue
		}
		var b strings.Builder
		b.WriteString("/v1")
		for i, s := range rr.segments {
			if s == "{id}" && !crdt.ValidID(segs[i]) {
				return "", http.StatusBadRequest, nil, fmt.Errorf("%q is not an id: 1–128 characters of [A-Za-z0-9._:-]", segs[i])
			}
			b.WriteString("/" + url.PathEscape(segs[i]))
		}
		return b.String(), 0, nil, nil
	}
	if len(allow) > 0 {
		return "", http.StatusMethodNotAllowed, allow, fmt.Errorf("%s is not relayed on this route", method)
	}
	return "", http.StatusNotFound, nil, errors.New("the console relays only edits of carts (add, set, remove, clear) and of stock (restock, adjust)")
}

// relay carries an edit to the region named in the path:
// /console/api/regions/{name}/v1/.... The answer is that region's API's,
// status, Lattice-Token and body; 502 region_unreachable when it could
// not be asked, 504 region_unanswered when it was asked but its answer
// did not come back (it may have applied the edit).
func (h *Handler) relay(w http.ResponseWriter, r *http.Request) {
	// Split as sent, then unescaped segment by segment: an escaped slash
	// belongs to its segment (an id holding one is refused), never makes
	// another path.
	segs := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), Path+"/api/regions/"), "/")
	for i, s := range segs {
		u, err := url.PathUnescape(s)
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("console: bad escape in path segment %q", s))
			return
		}
		segs[i] = u
	}
	name, segs := segs[0], segs[1:]
	var target *RegionLink
	for i := range h.regions {
		if h.regions[i].Name == name {
			target = &h.regions[i]
		}
	}
	if target == nil {
		problem(w, http.StatusNotFound, "not_found", fmt.Sprintf("no region %q in the cluster", name))
		return
	}
	if len(segs) < 2 || segs[0] != "v1" {
		problem(w, http.StatusNotFound, "not_found", "want /console/api/regions/{name}/v1/...")
		return
	}
	path, status, allow, err := matchRelay(r.Method, segs[1:])
	if err != nil {
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
		problem(w, status, map[int]string{400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}[status], "console: "+err.Error())
		return
	}
	if r.URL.RawQuery != "" {
		problem(w, http.StatusBadRequest, "invalid_request", "console: the relay takes no query parameters")
		return
	}
	if !h.authorized(w, r) {
		return
	}
	var body []byte
	if r.Method != http.MethodDelete {
		// A JSON content type keeps other sites' plain forms out.
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			problem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "console: the body must be application/json")
			return
		}
		body, err = io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid_request", "console: reading the body: "+err.Error())
			return
		}
		if len(body) > MaxBodyBytes {
			problem(w, http.StatusRequestEntityTooLarge, "payload_too_large", fmt.Sprintf("console: the body is larger than %d bytes", MaxBodyBytes))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), PeerTimeout+api.DefaultRequestTimeout)
	defer cancel()
	a := h.call(ctx, r, *target, r.Method, path, "", body)
	if a.Error != "" && a.Status == 0 && a.unanswered {
		problem(w, http.StatusGatewayTimeout, "region_unanswered", "console: "+a.Error+"; the edit may have been applied: read the cart or sku before repeating an add or a restock")
		return
	}
	if a.Error != "" && a.Status == 0 {
		problem(w, http.StatusBadGateway, "region_unreachable", "console: "+a.Error)
		return
	}
	if a.Body == nil && a.Error != "" {
		// An answer that is not JSON (a proxy's page): its status, and its
		// text in a problem, rather than an empty body.
		status := a.Status
		if status < 400 {
			status = http.StatusBadGateway
		}
		problem(w, status, "upstream_error", fmt.Sprintf("console: %s answered %d: %s", target.Name, a.Status, a.Error))
		return
	}
	if a.Token != "" {
		w.Header().Set(api.HeaderToken, a.Token)
	}
	ct := "application/json"
	if a.Status >= 400 {
		ct = "application/problem+json"
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(a.Status)
	w.Write(a.Body)
}

// dev serves the development controls: GET /console/dev/state, and POST
// /console/dev/cut, /heal ({"region": NAME}), /latency ({"a", "b",
// "latency_ms"}) and /loss ({"loss_pct"}). Without Controls it is 404.
func (h *Handler) dev(w http.ResponseWriter, r *http.Request) {
	c := h.opts.Controls
	if c == nil {
		problem(w, http.StatusNotFound, "not_found", "development controls are only in `lattice dev`")
		return
	}
	op := strings.TrimPrefix(r.URL.Path, Path+"/dev/")
	if op == "state" {
		h.route(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, c.State()) })
		return
	}
	switch op {
	case "cut", "heal", "latency", "loss":
	default:
		problem(w, http.StatusNotFound, "not_found", "console: no control "+op+"; want state, cut, heal, latency or loss")
		return
	}
	h.route(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Region    *string  `json:"region"`
			A         *string  `json:"a"`
			B         *string  `json:"b"`
			LatencyMS *int64   `json:"latency_ms"`
			LossPct   *float64 `json:"loss_pct"`
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			problem(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "console: the body must be application/json")
			return
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			problem(w, http.StatusBadRequest, "invalid_request", "console: body: "+err.Error())
			return
		}
		var err error
		switch op {
		case "cut", "heal":
			if in.Region == nil || in.A != nil || in.B != nil || in.LatencyMS != nil || in.LossPct != nil {
				err = errors.New(`want {"region": NAME}`)
			} else if op == "cut" {
				err = c.Cut(*in.Region)
			} else {
				err = c.Heal(*in.Region)
			}
		case "latency":
			switch {
			case in.A == nil || in.B == nil || in.LatencyMS == nil || in.Region != nil || in.LossPct != nil:
				err = errors.New(`want {"a": NAME, "b": NAME, "latency_ms": N}`)
			case *in.LatencyMS < 0 || *in.LatencyMS > MaxLatencyMS:
				err = fmt.Errorf("latency_ms must be 0..%d", MaxLatencyMS)
			default:
				err = c.SetLatency(*in.A, *in.B, time.Duration(*in.LatencyMS)*time.Millisecond)
			}
		case "loss":
			switch {
			case in.LossPct == nil || in.Region != nil || in.A != nil || in.B != nil || in.LatencyMS != nil:
				err = errors.New(`want {"loss_pct": PCT}`)
			case math.IsNaN(*in.LossPct) || *in.LossPct < 0 || *in.LossPct > 100:
				err = errors.New("loss_pct must be 0..100")
			default:
				err = c.SetLoss(*in.LossPct)
			}
		}
		if err != nil {
			problem(w, http.StatusBadRequest, "invalid_request", "console: "+err.Error())
			return
		}
		h.opts.Logger.Info("console: development control", "control", op)
		writeJSON(w, http.StatusOK, c.State())
	})
}
