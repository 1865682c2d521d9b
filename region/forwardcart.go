package region

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"

	"github.com/latticedb/lattice/crdt"
)

// A checkout answered by a region that does not coordinate the cart sends
// the coordinator its copy of the cart (HomeRequest.Cart). A cart may
// hold up to crdt.MaxCartEntries entries, and its canonical encoding,
// which repeats each line's sku in every entry, can pass
// crdt.MaxObjectBytes (1 MiB; 12,288 entries of 100-byte skus take 1.3
// MB) and the replication's call limit (2 MiB). Such a copy travels
// deflated (HomeRequest.CartZ): the repeated skus and replica ids shrink
// it about tenfold. A copy within MaxObjectBytes goes as before, so that
// a coordinator of an earlier version, which knows no CartZ, decodes every
// copy it could decode before.

// maxForwardedCart bounds a forwarded copy once inflated: the largest
// group a delta may carry, which holds the largest cart there is.
const maxForwardedCart = crdt.MaxGroupBytes

// maxForwardedCloudDots bounds the cloud dots of a forwarded copy's
// context decoded one by one: about what a plain copy's bytes
// (crdt.MaxObjectBytes) hold as decoded dots (crdt.CloudDotMem each),
// where the encoding of a dot may be a byte, and a few dozen kilobytes
// deflated inflate to a million of them. Past it the copy's context is
// read as its ceiling (crdt.DecodeCartCeilUpTo), which covers its
// entries: the coordinator plans from the copy's entries and its own
// context alone (readPlan), so an honest copy with a cloud that large
// still checks out, and no copy is refused for it.
const maxForwardedCloudDots = crdt.MaxObjectBytes / crdt.CloudDotMem

// packCart returns the forwarded form of a cart's encoding state: as it
// is, or deflated when it is larger than crdt.MaxObjectBytes.
func packCart(state []byte) (plain, deflated []byte, err error) {
	if len(state) <= crdt.MaxObjectBytes {
		return state, nil, nil
	}
	if len(state) > maxForwardedCart {
		return nil, nil, InvalidField("cart", "the cart's encoding is %d bytes, past the %d a checkout forwards", len(state), maxForwardedCart)
	}
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		return nil, nil, err
	}
	if _, err := w.Write(state); err != nil {
		return nil, nil, err
	}
	if err := w.Close(); err != nil {
		return nil, nil, err
	}
	return nil, b.Bytes(), nil
}

// unpackCart decodes a forwarded copy of a cart (packCart), refusing
// one that inflates past maxForwardedCart before it is decoded. The bound
// is absolute, as it is for the messages of a compressed replication
// stream: a few kilobytes from a peer may cost up to 4 MiB, once per call.
// The copy's cloud is kept one by one up to maxForwardedCloudDots, its
// context's ceiling past it: a dot of a byte or less of encoding is a
// map entry of about crdt.CloudDotMem decoded.
func unpackCart(plain, deflated []byte) (*crdt.Cart, error) {
	switch {
	case deflated == nil:
		return crdt.DecodeCartCeilUpTo(plain, crdt.MaxObjectBytes, maxForwardedCloudDots)
	case plain != nil:
		return nil, errors.New("both a plain and a deflated copy")
	}
	r := flate.NewReader(bytes.NewReader(deflated))
	defer r.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(r, maxForwardedCart+1)); err != nil {
		return nil, fmt.Errorf("inflating the copy: %w", err)
	}
	if b.Len() > maxForwardedCart {
		return nil, fmt.Errorf("the copy inflates past %d bytes", maxForwardedCart)
	}
	return crdt.DecodeCartCeilUpTo(b.Bytes(), maxForwardedCart, maxForwardedCloudDots)
}
