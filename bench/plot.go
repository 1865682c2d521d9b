package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Plot size: 1000 × 600 pixels (the PNG canvas has 96 dots per inch).
const (
	plotW = 1000 * vg.Inch / vgimg.DefaultDPI
	plotH = 600 * vg.Inch / vgimg.DefaultDPI
)

// save writes p to path as a PNG image.
func save(p *plot.Plot, path string) error {
	c := vgimg.PngCanvas{Canvas: vgimg.New(plotW, plotH)}
	p.Draw(draw.New(c))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Bin is one bar of a histogram: Count samples in [Lo, Hi).
type Bin struct {
	Lo, Hi float64
	Count  int
}

// LogBins sorts the positive samples into n bins of equal width on a
// logarithmic scale from lo to hi (the last bin includes hi); samples
// outside count in the first or last bin, samples ≤ 0 are left out. When
// lo or hi is ≤ 0, the smallest or largest positive sample is used. It
// returns nil when no sample is positive or n < 1.
func LogBins(samples []float64, n int, lo, hi float64) []Bin {
	var pos []float64
	for _, v := range samples {
		if v > 0 {
			pos = append(pos, v)
		}
	}
	if len(pos) == 0 || n < 1 {
		return nil
	}
	if lo <= 0 {
		lo = slices.Min(pos)
	}
	if hi <= 0 {
		hi = slices.Max(pos)
	}
	if hi <= lo {
		hi = lo * 1.01
	}
	llo, lhi := math.Log(lo), math.Log(hi)
	step := (lhi - llo) / float64(n)
	bins := make([]Bin, n)
	for i := range bins {
		bins[i].Lo = math.Exp(llo + float64(i)*step)
		bins[i].Hi = math.Exp(llo + float64(i+1)*step)
	}
	bins[0].Lo, bins[n-1].Hi = lo, hi
	for _, v := range pos {
		i := min(max(int(math.Floor((math.Log(v)-llo)/step)), 0), n-1)
		// The log's rounding may put a bin's bound in its neighbour.
		for i > 0 && v < bins[i].Lo {
			i--
		}
		for i < n-1 && v >= bins[i].Hi {
			i++
		}
		bins[i].Count++
	}
	return bins
}

// logTicks labels 1, 2 and 5 times the powers of ten between min and
// max (and 3 when they are less than two decades apart), with unlabelled
// minor ticks between.
var logTicks = plot.TickerFunc(func(min, max float64) []plot.Tick {
	if min <= 0 {
		min = 1e-3
	}
	dense := max/min < 100
	var ts []plot.Tick
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		p := math.Pow(10, e)
		for m := 1; m < 10; m++ {
			v := float64(m) * p
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 || m == 3 && dense {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
			}
			ts = append(ts, t)
		}
	}
	return ts
})

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(15)
	p.X.Label.Text = x
	p.Y.Label.Text = y
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(13)
		a.Tick.Label.Font.Size = vg.Points(11)
	}
	p.Legend.TextStyle.Font.Size = vg.Points(11)
	p.Add(plotter.NewGrid())
	return p
}

func logX(p *plot.Plot, lo, hi float64) {
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = logTicks
	p.X.Min, p.X.Max = lo, hi
}

// vline is a vertical line at x from y0 to y1.
func vline(x, y0, y1 float64, c color.Color, dashes []vg.Length) (*plotter.Line, error) {
	l, err := plotter.NewLine(plotter.XYs{{X: x, Y: y0}, {X: x, Y: y1}})
	if err != nil {
		return nil, err
	}
	l.Color, l.Dashes, l.Width = c, dashes, vg.Points(1.2)
	return l, nil
}

// plot writes the three plots of r to dir.
func (r *Result) plot(dir string) error {
	if err := r.plotConvergence(filepath.Join(dir, ConvergencePlotFile)); err != nil {
		return fmt.Errorf("bench: convergence plot: %w", err)
	}
	if err := r.plotWrites(filepath.Join(dir, WriteLatencyPlotFile)); err != nil {
		return fmt.Errorf("bench: write latency plot: %w", err)
	}
	if err := r.plotReservations(filepath.Join(dir, ReservationPlotFile)); err != nil {
		return fmt.Errorf("bench: reservation latency plot: %w", err)
	}
	return nil
}

// plotConvergence draws, for each pair of regions, the fraction of
// writes not yet visible at the remote after x ms (1 − CDF), both axes on
// a log scale: the median sits near the top, and the tail (p99, p99.9, the
// slowest writes) spreads over the lower decades instead of crowding
// against 1. Every pair has its own colour and dash pattern.
func (r *Result) plotConvergence(path string) error {
	p := newPlot("Cross-region convergence: acknowledged at the origin → durable at the remote",
		"milliseconds (log scale)", "fraction of writes not yet visible (log scale)")
	// The curves fall from the top left to the bottom right: the top
	// right corner is free for the legend.
	p.Legend.Top, p.Legend.Left = true, false
	lo, hi := math.Inf(1), 0.0
	most := 0
	floors := map[float64]bool{}
	for _, pr := range r.Convergence {
		for _, v := range pr.Samples {
			if v > 0 {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		most = max(most, len(pr.Samples))
		if pr.OneWayMS > 0 {
			floors[pr.OneWayMS] = true
			lo = min(lo, pr.OneWayMS)
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 1
	}
	logX(p, lo*0.8, hi*1.25)
	// The slowest write of the largest pair is 1/most of it: the axis
	// reaches a decade below, so every sample but the last shows.
	ymin := math.Pow(10, math.Floor(math.Log10(1/float64(max(most, 10)))))
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = ymin, 1
	for i, pr := range r.Convergence {
		cdf := Downsample(CDF(pr.Samples), 2000)
		if len(cdf) == 0 {
			continue
		}
		xys := make(plotter.XYs, 0, len(cdf)+1)
		xys = append(xys, plotter.XY{X: cdf[0].X, Y: 1})
		for _, pt := range cdf {
			if pt.X > 0 {
				xys = append(xys, plotter.XY{X: pt.X, Y: max(1-pt.F, ymin)})
			}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return err
		}
		l.Color, l.Width, l.Dashes = plotutil.Color(i), vg.Points(2), plotutil.Dashes(i)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s → %s (p50 %s, p99 %s ms)", pr.From, pr.To, f(pr.P50), f(pr.P99)), l)
	}
	fl := make([]float64, 0, len(floors))
	for v := range floors {
		fl = append(fl, v)
	}
	slices.Sort(fl)
	for i, v := range fl {
		l, err := vline(v, ymin, 1, color.Gray{Y: 90}, []vg.Length{vg.Points(1), vg.Points(3)})
		if err != nil {
			return err
		}
		p.Add(l)
		if i == 0 {
			p.Legend.Add("one-way latency of a pair (physical floor)", l)
		}
	}
	return save(p, path)
}

// histogram returns a histogram of samples in n bins of equal width on a
// log scale from lo to hi.
func histogram(samples []float64, lo, hi float64, fill color.Color, line color.Color) *plotter.Histogram {
	h := &plotter.Histogram{FillColor: fill, LineStyle: draw.LineStyle{Color: line, Width: vg.Points(0.6)}}
	for _, b := range LogBins(samples, 60, lo, hi) {
		h.Bins = append(h.Bins, plotter.HistogramBin{Min: b.Lo, Max: b.Hi, Weight: float64(b.Count)})
	}
	return h
}

// headroom is the share of a histogram's height left free above its
// highest bar for the legend.
const headroom = 1.3

func (r *Result) plotWrites(path string) error {
	s := r.WriteLatency
	p := newPlot(fmt.Sprintf("Local write latency (HTTP, at the origin): %d cart writes and restocks", s.Count),
		"milliseconds (log scale)", "requests per bin")
	p.Legend.Top = true
	if s.Count == 0 {
		return save(p, path)
	}
	h := histogram(r.writeSamples, s.Min, s.Max, color.NRGBA{R: 60, G: 110, B: 190, A: 200}, color.NRGBA{R: 30, G: 60, B: 120, A: 255})
	p.Add(h)
	logX(p, s.Min*0.9, s.Max*1.1)
	_, _, _, ymax := h.DataRange()
	p.Y.Min, p.Y.Max = 0, ymax*headroom
	marks := []struct {
		name string
		v    float64
		c    color.Color
	}{{"p50", s.P50, color.NRGBA{G: 140, A: 255}}, {"p99", s.P99, color.NRGBA{R: 220, G: 120, A: 255}},
		{"p99.9", s.P999, color.NRGBA{R: 200, A: 255}}}
	if s.Count < MinP999Samples {
		marks = marks[:2] // no p99.9 from so few samples
	}
	for _, m := range marks {
		l, err := vline(m.v, 0, ymax, m.c, []vg.Length{vg.Points(6), vg.Points(3)})
		if err != nil {
			return err
		}
		l.Width = vg.Points(2)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s = %s ms", m.name, f(m.v)), l)
	}
	return save(p, path)
}

func (r *Result) plotReservations(path string) error {
	rs := r.Reservations
	p := newPlot("Reservation latency (hold request, granted or refused): from the home vs from another region",
		"milliseconds (log scale)", "requests per bin")
	p.Legend.Top = true
	all := append(slices.Clone(r.homeSamples), r.nonHomeSamples...)
	if len(all) == 0 {
		return save(p, path)
	}
	lo, hi := slices.Min(all), slices.Max(all)
	ymax := 0.0
	for _, set := range []struct {
		name    string
		samples []float64
		s       Summary
		fill    color.Color
		line    color.Color
	}{
		{"from the home", r.homeSamples, rs.Home, color.NRGBA{G: 150, B: 80, A: 150}, color.NRGBA{G: 90, B: 40, A: 255}},
		{"from a non-home region", r.nonHomeSamples, rs.NonHome, color.NRGBA{R: 210, G: 90, B: 30, A: 150}, color.NRGBA{R: 140, G: 50, A: 255}},
	} {
		if len(set.samples) == 0 {
			continue
		}
		h := histogram(set.samples, lo, hi, set.fill, set.line)
		p.Add(h)
		_, _, _, y := h.DataRange()
		ymax = max(ymax, y)
		p.Legend.Add(fmt.Sprintf("%s: %d, p50 %s ms, p99 %s ms", set.name, set.s.Count, f(set.s.P50), f(set.s.P99)), h)
	}
	logX(p, lo*0.9, hi*1.1)
	p.Y.Min, p.Y.Max = 0, ymax*headroom
	return save(p, path)
}
