package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// Each handler validates everything it was sent (path, query, headers,
// body) before it calls h.begin, so a rejected request reaches no service
// method and writes nothing.

// Request bodies, decoded strictly. Pointer fields tell a missing member
// from a zero one.
type (
	addItemBody struct {
		SKU *string `json:"sku"`
		Qty *int64  `json:"qty"`
	}
	qtyBody struct {
		Qty *int64 `json:"qty"`
	}
	adjustBody struct {
		Delta  *int64  `json:"delta"`
		Reason *string `json:"reason"`
	}
	reserveBody struct {
		SKU   *string `json:"sku"`
		Qty   *int64  `json:"qty"`
		TTLMS *int64  `json:"ttl_ms"`
	}
	checkoutBody struct {
		TTLMS *int64 `json:"ttl_ms"`
	}
)

// Canonical bodies of idempotent requests, defaults applied, for
// fingerprints.
type (
	reserveCanon struct {
		SKU   string `json:"sku"`
		Qty   int64  `json:"qty"`
		TTLMS int64  `json:"ttl_ms"`
	}
	checkoutCanon struct {
		TTLMS int64 `json:"ttl_ms"`
	}
)

func cartView(c region.Cart) region.Cart {
	if c.Items == nil {
		c.Items = []crdt.CartItem{}
	}
	return c
}

// cartRequest validates what every cart route shares: cart_id, no query,
// no Idempotency-Key.
func cartRequest(c echo.Context) (string, error) {
	id, err := pathID(c, "cart_id")
	if err != nil {
		return "", err
	}
	if err := checkQuery(c); err != nil {
		return "", err
	}
	return id, noIdempotencyKey(c.Request().Header)
}

func (h *handler) getCart(c echo.Context) error {
	cartID, err := pathID(c, "cart_id")
	if err != nil {
		return err
	}
	if err := checkQuery(c, QueryQuorum); err != nil {
		return err
	}
	if err := noIdempotencyKey(c.Request().Header); err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	cart, err := h.svc.GetCart(ctx, cartID)
	if err != nil {
		return err
	}
	return h.okCart(c, cart)
}

func (h *handler) addItem(c echo.Context) error {
	cartID, err := cartRequest(c)
	if err != nil {
		return err
	}
	var body addItemBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	sku, err := requireID("sku", body.SKU)
	if err != nil {
		return err
	}
	qty, err := requireInt("qty", body.Qty, 1, MaxQty)
	if err != nil {
		return err
	}
	ctx, cancel, err := h.beginCartWrite(c)
	if err != nil {
		return err
	}
	defer cancel()
	cart, err := h.svc.AddItem(ctx, cartID, sku, qty)
	if err != nil {
		return err
	}
	return h.okCart(c, cart)
}

func (h *handler) setItem(c echo.Context) error {
	cartID, err := cartRequest(c)
	if err != nil {
		return err
	}
	sku, err := pathID(c, "sku")
	if err != nil {
		return err
	}
	var body qtyBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	qty, err := requireInt("qty", body.Qty, 0, MaxQty)
	if err != nil {
		return err
	}
	ctx, cancel, err := h.beginCartWrite(c)
	if err != nil {
		return err
	}
	defer cancel()
	cart, err := h.svc.SetItem(ctx, cartID, sku, qty)
	if err != nil {
		return err
	}
	return h.okCart(c, cart)
}

func (h *handler) removeItem(c echo.Context) error {
	cartID, err := cartRequest(c)
	if err != nil {
		return err
	}
	sku, err := pathID(c, "sku")
	if err != nil {
		return err
	}
	if err := noBody(c); err != nil {
		return err
	}
	ctx, cancel, err := h.beginCartWrite(c)
	if err != nil {
		return err
	}
	defer cancel()
	cart, err := h.svc.RemoveItem(ctx, cartID, sku)
	if err != nil {
		return err
	}
	return h.okCart(c, cart)
}

func (h *handler) clearCart(c echo.Context) error {
	cartID, err := cartRequest(c)
	if err != nil {
		return err
	}
	if err := noBody(c); err != nil {
		return err
	}
	ctx, cancel, err := h.beginCartWrite(c)
	if err != nil {
		return err
	}
	defer cancel()
	cart, err := h.svc.ClearCart(ctx, cartID)
	if err != nil {
		return err
	}
	return h.okCart(c, cart)
}

func (h *handler) checkout(c echo.Context) error {
	cartID, err := pathID(c, "cart_id")
	if err != nil {
		return err
	}
	if err := checkQuery(c); err != nil {
		return err
	}
	var body checkoutBody
	if err := decodeBody(c, &body, true); err != nil {
		return err
	}
	ttl, err := optionalTTL(body.TTLMS)
	if err != nil {
		return err
	}
	id, err := idem(c, []string{"cart_id", cartID}, checkoutCanon{TTLMS: ttl.Milliseconds()})
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	order, err := h.svc.Checkout(ctx, cartID, ttl, id)
	if err != nil {
		return err
	}
	if order.Lines == nil {
		order.Lines = []region.OrderLine{}
	}
	return h.ok(c, http.StatusCreated, order)
}

// checkoutStatus answers what the cart's coordinator knows of the
// checkout made with the request's Idempotency-Key: its phase, outcome
// and every step.
func (h *handler) checkoutStatus(c echo.Context) error {
	cartID, err := pathID(c, "cart_id")
	if err != nil {
		return err
	}
	if err := checkQuery(c); err != nil {
		return err
	}
	key, err := idempotencyKey(c.Request().Header)
	if err != nil {
		return err
	}
	if key == "" {
		return region.InvalidField("Idempotency-Key", "the Idempotency-Key of the checkout is required")
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	st, err := h.svc.CheckoutStatusOf(ctx, cartID, key)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, st)
}

// skuRequest validates what every inventory route shares: sku, the allowed
// query parameters, no Idempotency-Key.
func skuRequest(c echo.Context, query ...string) (string, error) {
	sku, err := pathID(c, "sku")
	if err != nil {
		return "", err
	}
	if err := checkQuery(c, query...); err != nil {
		return "", err
	}
	return sku, noIdempotencyKey(c.Request().Header)
}

func (h *handler) getItem(c echo.Context) error {
	sku, err := skuRequest(c, "consistent", QueryQuorum)
	if err != nil {
		return err
	}
	consistent, err := queryBool(c, "consistent")
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	item, err := h.svc.GetItem(ctx, sku, consistent)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, item)
}

func (h *handler) restock(c echo.Context) error {
	sku, err := skuRequest(c)
	if err != nil {
		return err
	}
	var body qtyBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	qty, err := requireInt("qty", body.Qty, 1, MaxQty)
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	item, err := h.svc.Restock(ctx, sku, qty)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, item)
}

func (h *handler) adjust(c echo.Context) error {
	sku, err := skuRequest(c)
	if err != nil {
		return err
	}
	var body adjustBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	delta, err := checkDelta(body.Delta)
	if err != nil {
		return err
	}
	reason, err := checkReason(body.Reason)
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	item, err := h.svc.Adjust(ctx, sku, delta, reason)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, item)
}

func (h *handler) reserve(c echo.Context) error {
	if err := checkQuery(c); err != nil {
		return err
	}
	var body reserveBody
	if err := decodeBody(c, &body, false); err != nil {
		return err
	}
	sku, err := requireID("sku", body.SKU)
	if err != nil {
		return err
	}
	qty, err := requireInt("qty", body.Qty, 1, MaxQty)
	if err != nil {
		return err
	}
	ttl, err := optionalTTL(body.TTLMS)
	if err != nil {
		return err
	}
	id, err := idem(c, nil, reserveCanon{SKU: sku, Qty: qty, TTLMS: ttl.Milliseconds()})
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	r, err := h.svc.Reserve(ctx, sku, qty, ttl, id)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/reservations/"+url.PathEscape(r.ID))
	return h.ok(c, http.StatusCreated, r)
}

func (h *handler) getReservation(c echo.Context) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := checkQuery(c); err != nil {
		return err
	}
	if err := noIdempotencyKey(c.Request().Header); err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	r, err := h.svc.GetReservation(ctx, id)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, r)
}

func (h *handler) commit(c echo.Context) error {
	return h.transition(c, h.svc.Commit)
}

func (h *handler) release(c echo.Context) error {
	return h.transition(c, h.svc.Release)
}

// transition serves commit and release, which take the same request.
func (h *handler) transition(c echo.Context, op func(ctx context.Context, id string, idem Idem) (region.Reservation, error)) error {
	id, err := pathID(c, "id")
	if err != nil {
		return err
	}
	if err := checkQuery(c); err != nil {
		return err
	}
	if err := noBody(c); err != nil {
		return err
	}
	key, err := idem(c, []string{"id", id}, nil)
	if err != nil {
		return err
	}
	ctx, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	r, err := op(ctx, id, key)
	if err != nil {
		return err
	}
	return h.ok(c, http.StatusOK, r)
}

func (h *handler) cluster(c echo.Context) error {
	if err := checkQuery(c); err != nil {
		return err
	}
	if err := noIdempotencyKey(c.Request().Header); err != nil {
		return err
	}
	// A causal token is honoured here too, so a client can wait until a
	// region has applied what it saw before reading its status.
	_, cancel, err := h.begin(c)
	if err != nil {
		return err
	}
	defer cancel()
	return h.ok(c, http.StatusOK, h.svc.Cluster())
}

func (h *handler) openAPI(c echo.Context) error {
	return c.JSONBlob(http.StatusOK, h.openapi)
}

// healthz answers 200 while the process serves HTTP at all.
func (h *handler) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, map[string]string{"status": "ok", "region": h.svc.Region()})
}

// readyz answers 200 when the region's storage is open and serving, else a
// 503 unavailable problem. The 200 lists warnings, if any: what an
// operator should look at although the region serves.
func (h *handler) readyz(c echo.Context) error {
	if !h.svc.Ready() {
		return region.Errorf(region.CodeUnavailable, "region %s is not ready", h.svc.Region())
	}
	body := map[string]any{"status": "ready", "region": h.svc.Region()}
	if w := h.svc.Warnings(); len(w) > 0 {
		body["warnings"] = w
	}
	return writeJSON(c, http.StatusOK, body)
}
