package bench

import (
	"fmt"
	"strings"
	"time"
)

// Goals of escrow reservations (Config.Escrow), stated in the summary.
const (
	// EscrowFastMS and EscrowFastGoal: at least this share of the escrow
	// holds granted at a region other than the sku's home are answered
	// within EscrowFastMS (the client's latency, request to answer).
	EscrowFastMS   = 5.0
	EscrowFastGoal = 0.95
	// EscrowRefusedGoal: at most this share of an escrow sku's holds are
	// refused while the stock was available elsewhere (KindResult).
	EscrowRefusedGoal = 0.01
)

// EscrowResult sets the escrow skus beside the home-decided ones of the
// same run: the same homes, the same share of the restocks and
// reservations, sent from the same regions (Workload.Escrow).
type EscrowResult struct {
	// SKUs are the escrow skus, HomeDecidedSKUs the others; SKUs[i] is
	// homed where HomeDecidedSKUs[i] is.
	SKUs            []string `json:"skus"`
	HomeDecidedSKUs []string `json:"home_decided_skus"`
	// HomeDecided and Escrow are the two kinds' figures.
	HomeDecided KindResult `json:"home_decided"`
	Escrow      KindResult `json:"escrow"`
	// Goals are the goals the escrow skus are judged by, and whether
	// this run met them.
	Goals []Goal `json:"goals"`
	// UnitsGranted and UnitsReturned are the units of rights the homes
	// granted and the regions gave back unused, over the whole run
	// (lattice_escrow_granted_units_total and
	// lattice_escrow_returned_units_total of every region).
	UnitsGranted  float64 `json:"units_granted"`
	UnitsReturned float64 `json:"units_returned"`
}

// KindResult is what the measured holds of one kind of sku (escrow or
// home-decided) came to.
type KindResult struct {
	// Holds counts the holds decided (Granted + Insufficient); Granted,
	// Insufficient and Unavailable count those granted, refused with
	// insufficient_stock and answered 503 home_unavailable, of which
	// NonHome* those sent to a region other than the sku's home.
	Holds               int `json:"holds"`
	Granted             int `json:"granted"`
	Insufficient        int `json:"insufficient_stock"`
	Unavailable         int `json:"home_unavailable"`
	NonHomeGranted      int `json:"non_home_granted"`
	NonHomeInsufficient int `json:"non_home_insufficient_stock"`
	NonHomeUnavailable  int `json:"non_home_home_unavailable"`
	// NonHomeNoAnswer counts the holds sent to a region other than the
	// sku's home that ended without a decision or a 503 home_unavailable
	// (timed out, transport error, another 5xx): not answered within
	// EscrowFastMS, they count against NonHomeFast.
	NonHomeNoAnswer int `json:"non_home_no_answer"`
	// NonHomeLatency is the latency of the holds granted at a region
	// other than the sku's home; NonHomeFast the share of them answered
	// within EscrowFastMS, of them and NonHomeNoAnswer.
	NonHomeLatency Summary `json:"non_home_granted_latency"`
	NonHomeFast    float64 `json:"non_home_granted_within_5ms"`
	// DecidedLocally counts the holds granted at a region other than the
	// sku's home whose reservation id names that region (decided there,
	// from its rights); DecidedAtHome those whose id names the home;
	// DecidedElsewhere any other (must be 0). DecidedLocallyAfterRTT
	// counts those decided there that took at least the emulated round
	// trip to the home: a hold decided from rights already held crosses
	// no link, so these waited for the home to grant rights (0 without
	// emulated latency).
	DecidedLocally         int `json:"non_home_decided_locally"`
	DecidedLocallyAfterRTT int `json:"non_home_decided_locally_after_round_trip"`
	DecidedAtHome          int `json:"non_home_decided_at_home"`
	DecidedElsewhere       int `json:"non_home_decided_elsewhere"`
	// RefusedWhileAvailable counts the holds refused with
	// insufficient_stock at a region R while the stock was available
	// elsewhere: available + granted ≥ qty, available being what the
	// home had available when it refused (stock − its holds − the rights
	// other regions hold; the refusal's own available) and granted the
	// rights other regions hold, read at the home (?consistent=true)
	// right after the refusal (used by their own holds or not: a bound
	// from above). Its share is of Holds. RefusedWhileRights counts the
	// refusals for which available plus the unused rights of every region
	// other than the home (each read there right after) was ≥ qty: units
	// no hold had. RefusalsUnchecked counts refusals whose reads failed.
	RefusedWhileAvailable      int     `json:"refused_while_available"`
	RefusedWhileAvailableShare float64 `json:"refused_while_available_share"`
	RefusedWhileRights         int     `json:"refused_while_unused_rights"`
	RefusalsUnchecked          int     `json:"refusals_unchecked"`
	// Commit and Release are the latencies of the granted holds' second
	// step: sent to the region the id names (escrow) or to the region the
	// hold was sent to (home-decided).
	Commit  Summary `json:"commit"`
	Release Summary `json:"release"`
	// OversoldUnits is the units held and committed beyond stock, summed
	// over the kind's skus: the larger, per sku, of what its home shows
	// (CheckStock, a consistent read) and what any region's view shows
	// (ViewOversold).
	OversoldUnits int64 `json:"oversold_units"`
}

// Goal is one goal and whether a run met it.
type Goal struct {
	Goal   string  `json:"goal"`
	Kind   string  `json:"kind"`
	Target string  `json:"target"`
	Value  float64 `json:"value"`
	Met    bool    `json:"met"`
}

// analyzeEscrow tallies the measured holds (At ≥ warmup) of sched by kind
// of sku, names being the regions' names by index and rtt the emulated
// round trip between two of them (ms), and sets the goals; homeOver and
// viewOver are the oversold units of each sku at its home and in the
// regions' views.
func analyzeEscrow(sched *Schedule, results []opResult, names []string, rtt func(a, b int) float64, warmup time.Duration,
	homeOver, viewOver map[string]int64) *EscrowResult {
	e := &EscrowResult{SKUs: sched.Escrow, HomeDecidedSKUs: sched.Hot[:len(sched.Hot)-len(sched.Escrow)]}
	type samples struct{ nonHome, commit, release []float64 }
	var s [2]samples
	kinds := [2]*KindResult{&e.HomeDecided, &e.Escrow}
	for i, op := range sched.Ops {
		if op.Kind != Reserve || op.At < warmup {
			continue
		}
		r := results[i]
		k := 0
		if op.Escrow {
			k = 1
		}
		kr := kinds[k]
		switch {
		case r.First.Outcome == OK:
			kr.Granted++
			if op.FromHome {
				break
			}
			kr.NonHomeGranted++
			s[k].nonHome = append(s[k].nonHome, ms(r.First.Latency))
			switch decider(r.ID) {
			case names[op.Region]:
				kr.DecidedLocally++
				if f := rtt(op.Region, op.Home); f > 0 && ms(r.First.Latency) >= f {
					kr.DecidedLocallyAfterRTT++
				}
			case names[op.Home]:
				kr.DecidedAtHome++
			default:
				kr.DecidedElsewhere++
			}
		case r.First.Code == "insufficient_stock":
			kr.Insufficient++
			if !op.FromHome {
				kr.NonHomeInsufficient++
			}
			switch p := r.Stock; {
			case p == nil || !p.OK:
				kr.RefusalsUnchecked++
			default:
				avail := p.Available
				if r.First.Available != nil {
					avail = *r.First.Available
				}
				if avail+p.Granted >= op.Qty {
					kr.RefusedWhileAvailable++
				}
				if p.RightsOK && avail+p.Rights >= op.Qty {
					kr.RefusedWhileRights++
				}
			}
		case r.First.Code == "home_unavailable":
			kr.Unavailable++
			if !op.FromHome {
				kr.NonHomeUnavailable++
			}
		case r.First.Outcome == Unknown && !op.FromHome:
			kr.NonHomeNoAnswer++
		}
		if r.Second.Outcome == OK {
			if op.Commit {
				s[k].commit = append(s[k].commit, ms(r.Second.Latency))
			} else {
				s[k].release = append(s[k].release, ms(r.Second.Latency))
			}
		}
	}
	for k, kr := range kinds {
		kr.Holds = kr.Granted + kr.Insufficient
		if kr.Holds > 0 {
			kr.RefusedWhileAvailableShare = float64(kr.RefusedWhileAvailable) / float64(kr.Holds)
		}
		kr.NonHomeLatency = Summarize(s[k].nonHome)
		fast := 0
		for _, v := range s[k].nonHome {
			if v <= EscrowFastMS {
				fast++
			}
		}
		if n := len(s[k].nonHome) + kr.NonHomeNoAnswer; n > 0 {
			kr.NonHomeFast = float64(fast) / float64(n)
		}
		kr.Commit = Summarize(s[k].commit)
		kr.Release = Summarize(s[k].release)
	}
	for _, sku := range e.HomeDecidedSKUs {
		e.HomeDecided.OversoldUnits += max(homeOver[sku], viewOver[sku])
	}
	for _, sku := range e.SKUs {
		e.Escrow.OversoldUnits += max(homeOver[sku], viewOver[sku])
	}
	es := e.Escrow
	e.Goals = []Goal{
		{Goal: fmt.Sprintf("holds granted at a non-home region answered within %v ms", EscrowFastMS), Kind: "escrow",
			Target: fmt.Sprintf("≥ %v %%", EscrowFastGoal*100), Value: es.NonHomeFast,
			Met: es.NonHomeGranted > 0 && es.NonHomeFast >= EscrowFastGoal},
		{Goal: "holds refused (insufficient_stock) while the stock was available elsewhere, of all holds", Kind: "escrow",
			// The share the verdict judges: a refusal whose stock could
			// not be read counts against it, in the value shown too.
			Target: fmt.Sprintf("≤ %v %%", EscrowRefusedGoal*100), Value: refusedShare(es),
			// A refusal whose stock could not be read counts against it.
			Met: es.Holds > 0 && float64(es.RefusedWhileAvailable+es.RefusalsUnchecked) <= EscrowRefusedGoal*float64(es.Holds)},
		{Goal: "oversold units", Kind: "escrow", Target: "0", Value: float64(es.OversoldUnits), Met: es.OversoldUnits == 0},
		{Goal: "holds granted at a non-home region decided by a third region (neither where sent nor the home)", Kind: "escrow", Target: "0",
			Value: float64(es.DecidedElsewhere), Met: es.DecidedElsewhere == 0},
		{Goal: "oversold units", Kind: "home-decided", Target: "0", Value: float64(e.HomeDecided.OversoldUnits), Met: e.HomeDecided.OversoldUnits == 0},
	}
	return e
}

// escrowMarkdown writes the side-by-side table of the two kinds of sku and
// the goals.
func (r *Result) escrowMarkdown(w func(string, ...any)) {
	e := r.Escrow
	h, s := e.HomeDecided, e.Escrow
	w("\n## Escrow and home-decided skus side by side\n\n")
	w("Escrow skus %s and home-decided skus %s, one of each homed at each region, share the restocks and holds evenly, "+
		"sent from the same regions. A hold of an escrow sku at a region holding enough rights is decided there; "+
		"its commit or release goes to the region its id names.\n\n", strings.Join(e.SKUs, ", "), strings.Join(e.HomeDecidedSKUs, ", "))
	w("| measured holds | home-decided | escrow |\n|---|---:|---:|\n")
	row := func(name string, a, b any) { w("| %s | %v | %v |\n", name, a, b) }
	row("holds decided (granted + insufficient_stock)", h.Holds, s.Holds)
	row("granted / insufficient_stock / home_unavailable", fmt.Sprintf("%d / %d / %d", h.Granted, h.Insufficient, h.Unavailable),
		fmt.Sprintf("%d / %d / %d", s.Granted, s.Insufficient, s.Unavailable))
	row("sent to a non-home region: granted / insufficient_stock / home_unavailable",
		fmt.Sprintf("%d / %d / %d", h.NonHomeGranted, h.NonHomeInsufficient, h.NonHomeUnavailable),
		fmt.Sprintf("%d / %d / %d", s.NonHomeGranted, s.NonHomeInsufficient, s.NonHomeUnavailable))
	row("granted at a non-home region, p50 / p99 / p99.9 ms", fmt.Sprintf("%s / %s / %s", f(h.NonHomeLatency.P50), f(h.NonHomeLatency.P99), p999(h.NonHomeLatency)),
		fmt.Sprintf("%s / %s / %s", f(s.NonHomeLatency.P50), f(s.NonHomeLatency.P99), p999(s.NonHomeLatency)))
	row("sent to a non-home region and left without an answer (timed out, other 5xx)", h.NonHomeNoAnswer, s.NonHomeNoAnswer)
	row(fmt.Sprintf("… answered within %v ms (of granted and unanswered)", EscrowFastMS), pct(h.NonHomeFast), pct(s.NonHomeFast))
	row("… decided where sent / at the home / elsewhere (by the id's region)", fmt.Sprintf("%d / %d / %d", h.DecidedLocally, h.DecidedAtHome, h.DecidedElsewhere),
		fmt.Sprintf("%d / %d / %d", s.DecidedLocally, s.DecidedAtHome, s.DecidedElsewhere))
	row("… decided where sent, after at least the round trip to the home (waited for rights)", h.DecidedLocallyAfterRTT, s.DecidedLocallyAfterRTT)
	row("refused while available elsewhere (available + granted ≥ qty), of holds", fmt.Sprintf("%d (%s)", h.RefusedWhileAvailable, pct(h.RefusedWhileAvailableShare)),
		fmt.Sprintf("%d (%s)", s.RefusedWhileAvailable, pct(s.RefusedWhileAvailableShare)))
	row("… of which available + unused rights ≥ qty", h.RefusedWhileRights, s.RefusedWhileRights)
	row("refusals whose stock could not be read", h.RefusalsUnchecked, s.RefusalsUnchecked)
	row("commit p50 / p99 ms", fmt.Sprintf("%s / %s", f(h.Commit.P50), f(h.Commit.P99)), fmt.Sprintf("%s / %s", f(s.Commit.P50), f(s.Commit.P99)))
	row("release p50 / p99 ms", fmt.Sprintf("%s / %s", f(h.Release.P50), f(h.Release.P99)), fmt.Sprintf("%s / %s", f(s.Release.P50), f(s.Release.P99)))
	row("oversold units (home, consistent; every region's view)", h.OversoldUnits, s.OversoldUnits)
	row("units of rights granted / returned unused (whole run)", "–", fmt.Sprintf("%.0f / %.0f", e.UnitsGranted, e.UnitsReturned))
	w("\nA refusal counts as *while available elsewhere* when `available + granted` was at least the quantity refused: " +
		"`available` what the home had available when it refused (stock − its holds − the rights other regions hold; the " +
		"refusal's own `available`), `granted` the rights other regions hold (used by their holds or not), read at the home " +
		"with `?consistent=true` right after the refusal; the row below it counts those for which `available` plus the other " +
		"regions' unused `rights` (each read there) was.\n\n")
	w("| goal | kind | target | this run | met |\n|---|---|---:|---:|---|\n")
	for _, g := range e.Goals {
		v := pct(g.Value)
		if g.Target == "0" {
			v = fmt.Sprintf("%.0f", g.Value)
		}
		met := "**not met**"
		if g.Met {
			met = "met"
		}
		w("| %s | %s | %s | %s | %s |\n", g.Goal, g.Kind, g.Target, v, met)
	}
}

// pct formats a share as a percentage: one decimal from 10 %, two below.
func pct(v float64) string {
	if v < 0.1 {
		return fmt.Sprintf("%.2f %%", v*100)
	}
	return fmt.Sprintf("%.1f %%", v*100)
}

// refusedShare is the share of holds refused while stock was available
// elsewhere, refusals whose stock could not be read among them.
func refusedShare(es KindResult) float64 {
	if es.Holds == 0 {
		return 0
	}
	return float64(es.RefusedWhileAvailable+es.RefusalsUnchecked) / float64(es.Holds)
}
