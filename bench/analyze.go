package bench

import (
	"time"
)

// OpsResult counts the measured operations (those whose target time is
// past the warm-up) and what became of them.
type OpsResult struct {
	// Scheduled operations in the measured period.
	Scheduled int `json:"scheduled"`
	// Answered operations: sent and ended (OK, Refused or Unknown).
	Answered int `json:"answered"`
	OK       int `json:"ok"`
	Refused  int `json:"refused"`
	Unknown  int `json:"unknown"`
	NotRun   int `json:"not_run"`
	// WarmupOps are the operations run during the warm-up, not counted
	// above.
	WarmupOps int `json:"warmup_ops"`
	// ByKind breaks the measured operations down by kind.
	ByKind map[string]KindCount `json:"by_kind"`
	// Codes counts the error codes of every request that was not a 2xx
	// (problem codes such as insufficient_stock or home_unavailable,
	// "transport" for no answer), commits and releases included.
	Codes map[string]int `json:"codes"`
}

// KindCount counts the measured operations of one kind.
type KindCount struct {
	Scheduled int     `json:"scheduled"`
	OK        int     `json:"ok"`
	Refused   int     `json:"refused"`
	Unknown   int     `json:"unknown"`
	Share     float64 `json:"share"`
}

// ReservationResult is the latency of reservations by where they were
// sent, and of their second step.
type ReservationResult struct {
	// Home and NonHome are the latencies of the hold request (POST
	// /v1/reservations) sent to the sku's home or to another region,
	// counting every decided answer (granted or insufficient_stock).
	Home    Summary `json:"from_home"`
	NonHome Summary `json:"from_non_home"`
	// Commit and Release are the latencies of the granted holds' second
	// step, sent to the same region as the hold.
	Commit  Summary `json:"commit"`
	Release Summary `json:"release"`
	// Granted, Insufficient and Unavailable count the holds granted,
	// refused with insufficient_stock, and answered 503
	// home_unavailable.
	Granted      int `json:"granted"`
	Insufficient int `json:"insufficient_stock"`
	Unavailable  int `json:"home_unavailable"`
}

// analysis is what the operations' results say, before the final reads.
type analysis struct {
	ops                       OpsResult
	throughput, throughputOK  float64
	write                     Summary
	writeByKind               map[string]Summary
	lag                       Summary
	res                       ReservationResult
	adds                      *AddModel
	stock                     StockModel
	writeSamples, homeSamples []float64
	nonHomeSamples            []float64
}

// analyze tallies results (one per operation of sched, started at start
// + Op.At): the operations measured (At ≥ warmup), their latencies, the
// throughput over the measured period [start+warmup, start+warmup+
// duration), and the models of acknowledged adds and stock (every
// operation, warm-up included, joined into stock, which holds the
// set-up's restocks).
func analyze(sched *Schedule, results []opResult, start time.Time, warmup, duration time.Duration, stock StockModel) analysis {
	a := analysis{adds: NewAddModel(), stock: stock, writeByKind: map[string]Summary{}}
	a.ops.ByKind = map[string]KindCount{}
	a.ops.Codes = map[string]int{}
	byKind := map[Kind][]float64{}
	var lag, commit, release []float64
	var inWindow, inWindowOK int
	measureStart := start.Add(warmup)
	measureEnd := measureStart.Add(duration)
	mixWrites := map[CartLine][]MixWrite{}
	// The stock of each sku before the run, and its holds and restocks
	// over time (HoldTimeline).
	base := map[string]int64{}
	for sku, l := range stock {
		base[sku] = l.RestockAcked + l.RestockUnknown
	}
	spans := map[string][]HoldSpan{}
	steps := map[string][]StockStep{}
	for i, op := range sched.Ops {
		r := results[i]
		if r.First.Outcome != NotRun && !r.Done.Before(measureStart) && r.Done.Before(measureEnd) {
			inWindow++
			if r.First.Outcome == OK {
				inWindowOK++
			}
		}
		// The models take every operation.
		switch op.Kind {
		case CartAdd:
			l := CartLine{op.Cart, op.SKU}
			switch r.First.Outcome {
			case OK:
				a.adds.Acked[l] += op.Qty
			case Unknown:
				a.adds.Unknown[l] += op.Qty
			}
		case CartMixAdd, CartSet, CartRemove:
			if r.First.Outcome == OK || r.First.Outcome == Unknown {
				l := CartLine{op.Cart, op.SKU}
				mixWrites[l] = append(mixWrites[l], MixWrite{Kind: op.Kind, Qty: op.Qty, OK: r.First.Outcome == OK, Sent: r.Sent, Done: r.Done, Region: op.Region})
			}
		case Restock:
			if r.First.Outcome == OK || r.First.Outcome == Unknown {
				steps[op.SKU] = append(steps[op.SKU], StockStep{Qty: op.Qty, At: r.Sent})
			}
			l := a.stock.Ledger(op.SKU)
			switch r.First.Outcome {
			case OK:
				l.RestockAcked += op.Qty
			case Unknown:
				l.RestockUnknown += op.Qty
				l.UnknownRestocks = append(l.UnknownRestocks, op.Qty)
			}
		case Reserve:
			if r.First.Outcome == OK {
				spans[op.SKU] = append(spans[op.SKU], holdSpan(op, r))
			}
			if op.Commit && r.First.Outcome == OK {
				l := a.stock.Ledger(op.SKU)
				switch r.Second.Outcome {
				case OK:
					l.CommitAcked += op.Qty
				case Unknown, NotRun:
					l.CommitUnknown += op.Qty
					l.UnknownCommits = append(l.UnknownCommits, op.Qty)
				}
			}
		}
		if op.At < warmup {
			a.ops.WarmupOps++
			continue
		}

		kc := a.ops.ByKind[op.Kind.String()]
		kc.Scheduled++
		a.ops.Scheduled++
		switch r.First.Outcome {
		case NotRun:
			a.ops.NotRun++
		case OK:
			a.ops.OK++
			kc.OK++
		case Refused:
			a.ops.Refused++
			kc.Refused++
		case Unknown:
			a.ops.Unknown++
			kc.Unknown++
		}
		a.ops.ByKind[op.Kind.String()] = kc
		if r.First.Outcome == NotRun {
			continue
		}
		a.ops.Answered++
		lag = append(lag, ms(r.Sent.Sub(start.Add(op.At))))
		for _, c := range []call{r.First, r.Second} {
			if c.Outcome == Refused || c.Outcome == Unknown {
				a.ops.Codes[c.Code]++
			}
		}
		if op.Kind.Local() {
			if r.First.Outcome == OK {
				v := ms(r.First.Latency)
				a.writeSamples = append(a.writeSamples, v)
				byKind[op.Kind] = append(byKind[op.Kind], v)
			}
			continue
		}
		// A reservation.
		decided := r.First.Outcome == OK || r.First.Code == "insufficient_stock"
		switch {
		case r.First.Outcome == OK:
			a.res.Granted++
		case r.First.Code == "insufficient_stock":
			a.res.Insufficient++
		case r.First.Code == "home_unavailable":
			a.res.Unavailable++
		}
		if decided {
			v := ms(r.First.Latency)
			if op.FromHome {
				a.homeSamples = append(a.homeSamples, v)
			} else {
				a.nonHomeSamples = append(a.nonHomeSamples, v)
			}
		}
		if r.Second.Outcome == OK {
			if op.Commit {
				commit = append(commit, ms(r.Second.Latency))
			} else {
				release = append(release, ms(r.Second.Latency))
			}
		}
	}
	for k, kc := range a.ops.ByKind {
		if a.ops.Scheduled > 0 {
			kc.Share = float64(kc.Scheduled) / float64(a.ops.Scheduled)
		}
		a.ops.ByKind[k] = kc
	}
	a.write = Summarize(a.writeSamples)
	for k, s := range byKind {
		a.writeByKind[k.String()] = Summarize(s)
	}
	a.lag = Summarize(lag)
	a.res.Home = Summarize(a.homeSamples)
	a.res.NonHome = Summarize(a.nonHomeSamples)
	a.res.Commit = Summarize(commit)
	a.res.Release = Summarize(release)
	if duration > 0 {
		a.throughput = float64(inWindow) / duration.Seconds()
		a.throughputOK = float64(inWindowOK) / duration.Seconds()
	}
	for sku, sp := range spans {
		if over := HoldTimeline(base[sku], sp, steps[sku]); over > 0 {
			a.stock.Ledger(sku).Overheld = over
		}
	}
	for l, ws := range mixWrites {
		a.adds.Mixed[l] = MixedCeil(ws)
		if lower, ok := MixedBound(ws); ok {
			a.adds.MixedLower[l] = lower
		}
	}
	return a
}

// holdSpan is when the granted hold of op (result r) was surely in force:
// from the answer of its grant to the soonest its end can have come — a
// release (or a refused commit) from when it was sent, an expiry no
// sooner than reservationTTL after the hold was asked for; never, once
// its commit was acknowledged, and no sooner than that expiry for a
// commit of unknown outcome (committed, or held until it expired).
func holdSpan(op Op, r opResult) HoldSpan {
	granted := r.Sent.Add(r.First.Latency)
	expires := r.Sent.Add(reservationTTL - time.Millisecond) // expired from decision + ttl on
	to := expires
	switch {
	case r.Second.Outcome == NotRun:
	case op.Commit && r.Second.Outcome == OK:
		to = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	case op.Commit && r.Second.Outcome == Unknown:
	default:
		if sent := r.Done.Add(-r.Second.Latency); sent.Before(to) {
			to = sent
		}
	}
	return HoldSpan{Qty: op.Qty, From: granted, To: to}
}
