package loadtest

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	colP50   = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colP95   = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colP99   = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colMax   = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	colSent  = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colRecv  = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	colPlan  = color.RGBA{A: 0xff}
	colKill  = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colTerm  = color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}
	colStart = color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}
	colPhase = color.RGBA{R: 0xaa, G: 0xaa, B: 0xaa, A: 0xff}
)

// WritePlots draws the latency over time and the latency distribution as PNG
// files in dir, named <base>-latency-over-time.png and
// <base>-latency-distribution.png, and returns their paths.
func (r *Report) WritePlots(dir, base string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the plot directory: %w", err)
	}
	overTime := filepath.Join(dir, base+"-latency-over-time.png")
	dist := filepath.Join(dir, base+"-latency-distribution.png")
	if err := r.plotOverTime(overTime); err != nil {
		return nil, fmt.Errorf("plotting latency over time: %w", err)
	}
	if err := r.plotDistribution(dist); err != nil {
		return nil, fmt.Errorf("plotting the latency distribution: %w", err)
	}
	return []string{overTime, dist}, nil
}

func (r *Report) title() string {
	mode := "exactly-once"
	if !r.Workers.ExactlyOnce {
		mode = "at-least-once"
	}
	return fmt.Sprintf("clickrec loadtest: %s, %s ev/s planned (peak %s), %s worker(s), %s",
		r.Scenario, thousands(r.RateTarget), thousands(r.RatePeak), r.workerCounts(), mode)
}

func (r *Report) plotOverTime(path string) error {
	lat := plot.New()
	lat.Title.Text = r.title() + fmt.Sprintf("\nlatency by intended send time, per %.0f s; p95 %.1f ms, p99 %.1f ms overall", r.BucketS, r.Latency.P95, r.Latency.P99)
	lat.Y.Label.Text = "click → recommendation (ms, log)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.TickerFunc(logTicks125)
	lat.X.Label.Text = "seconds since start"
	lat.Add(plotter.NewGrid())
	lat.Legend.Top = true
	lat.Legend.Left = true
	series := []struct {
		name string
		col  color.Color
		get  func(Point) float64
	}{
		{"max", colMax, func(p Point) float64 { return p.Max }},
		{"p99", colP99, func(p Point) float64 { return p.P99 }},
		{"p95", colP95, func(p Point) float64 { return p.P95 }},
		{"p50", colP50, func(p Point) float64 { return p.P50 }},
	}
	for _, s := range series {
		var xy plotter.XYs
		for _, p := range r.Timeline {
			if v := s.get(p); v > 0 {
				xy = append(xy, plotter.XY{X: p.TS + r.BucketS/2, Y: v})
			}
		}
		if len(xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color, l.Width = s.col, vg.Points(1.5)
		lat.Add(l)
		lat.Legend.Add(s.name, l)
	}
	t := r.SLA.Thresholds
	if t.P95Ms != nil {
		h := &hline{y: *t.P95Ms, style: dashed(colP95)}
		lat.Add(h)
		lat.Legend.Add(fmt.Sprintf("SLA p95 < %.0f ms", *t.P95Ms), h)
	}
	if t.P99Ms != nil {
		h := &hline{y: *t.P99Ms, style: dashed(colP99)}
		lat.Add(h)
		lat.Legend.Add(fmt.Sprintf("SLA p99 < %.0f ms", *t.P99Ms), h)
	}
	headroom(lat, 0.35, true)
	rate := plot.New()
	rate.Title.Text = "throughput"
	rate.Y.Label.Text = "events / s"
	rate.Y.Tick.Marker = plot.TickerFunc(plainTicks)
	rate.X.Label.Text = "seconds since start"
	rate.Add(plotter.NewGrid())
	rate.Legend.Top = true
	rate.Legend.Left = true
	var sent, recv, plan plotter.XYs
	for _, p := range r.Timeline {
		x := p.TS + r.BucketS/2
		if p.TS < r.DurationS {
			sent = append(sent, plotter.XY{X: x, Y: float64(p.Sent) / r.BucketS})
		}
		recv = append(recv, plotter.XY{X: x, Y: float64(p.Received) / r.BucketS})
	}
	for _, ph := range r.Phases {
		plan = append(plan, plotter.XY{X: ph.StartS, Y: ph.RateTarget}, plotter.XY{X: ph.EndS, Y: ph.RateTarget})
	}
	for _, s := range []struct {
		name  string
		xy    plotter.XYs
		col   color.Color
		style draw.LineStyle
	}{
		{"planned", plan, colPlan, dashed(colPlan)},
		{"sent (by intended time)", sent, colSent, draw.LineStyle{Color: colSent, Width: vg.Points(1.5)}},
		{"answered (by read time)", recv, colRecv, draw.LineStyle{Color: colRecv, Width: vg.Points(1.5)}},
	} {
		if len(s.xy) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.xy)
		if err != nil {
			return err
		}
		l.LineStyle = s.style
		rate.Add(l)
		rate.Legend.Add(s.name, l)
	}
	rate.Y.Min = 0
	headroom(rate, 0.3, false)
	for _, p := range []*plot.Plot{lat, rate} {
		for i, ph := range r.Phases {
			if i > 0 {
				p.Add(&vline{x: ph.StartS, style: draw.LineStyle{Color: colPhase, Width: vg.Points(0.8), Dashes: []vg.Length{vg.Points(2), vg.Points(2)}}})
			}
		}
		for i, k := range r.Kills {
			v := &vline{x: k.AtS, style: draw.LineStyle{Color: colKill, Width: vg.Points(1.2)}}
			p.Add(v)
			if i == 0 {
				p.Legend.Add("SIGKILL of a worker", v)
			}
		}
		var term, started bool
		for _, m := range r.Membership {
			v := &vline{x: m.AtS, style: draw.LineStyle{Color: colTerm, Width: vg.Points(1.2)}}
			switch {
			case m.Action == ActionStart:
				v.style.Color = colStart
				if !started {
					p.Legend.Add("worker started", v)
					started = true
				}
			case !term:
				p.Legend.Add("SIGTERM of a worker (restart, stop)", v)
				term = true
			}
			p.Add(v)
		}
		p.X.Min = 0
		p.X.Tick.Marker = plot.TickerFunc(plainTicks)
	}
	return savePNG(path, 11*vg.Inch, 8*vg.Inch, [][]*plot.Plot{{lat}, {rate}}, 2, 1)
}

func (r *Report) plotDistribution(path string) error {
	spec := plot.New()
	spec.Title.Text = r.title() + fmt.Sprintf("\npercentile spectrum, n=%d", r.Latency.Count)
	spec.X.Label.Text = "percentile"
	spec.Y.Label.Text = "latency (ms, log)"
	spec.X.Scale = plot.LogScale{}
	spec.X.Tick.Marker = plot.TickerFunc(percentileTicks)
	spec.Y.Scale = plot.LogScale{}
	spec.Y.Tick.Marker = plot.TickerFunc(logTicks125)
	spec.Add(plotter.NewGrid())
	spec.Legend.Top = false
	spec.Legend.Left = false

	hist := plot.New()
	hist.Title.Text = "histogram (log-spaced bins)"
	hist.X.Label.Text = "latency (ms, log)"
	hist.Y.Label.Text = "events"
	hist.Y.Tick.Marker = plot.TickerFunc(plainTicks)
	hist.X.Scale = plot.LogScale{}
	hist.X.Tick.Marker = plot.TickerFunc(logTicks125)
	hist.Add(plotter.NewGrid())

	h := r.hist
	if h != nil && h.TotalCount() > 0 {
		n := float64(h.TotalCount())
		var xy plotter.XYs
		for k := 0; ; k++ {
			tail := math.Pow(10, -float64(k)/20) // 1 − q
			if tail*n < 1 {
				break
			}
			q := 1 - tail
			v := float64(h.ValueAtPercentile(100*q)) / 1000
			xy = append(xy, plotter.XY{X: 1 / tail, Y: max(v, 0.001)})
		}
		xy = append(xy, plotter.XY{X: n, Y: max(float64(h.Max())/1000, 0.001)})
		l, err := plotter.NewLine(xy)
		if err != nil {
			return err
		}
		l.Color, l.Width = colP50, vg.Points(2)
		spec.Add(l)
		spec.Legend.Add("measured", l)
		t := r.SLA.Thresholds
		if t.P95Ms != nil {
			s := &hline{y: *t.P95Ms, style: dashed(colP95)}
			spec.Add(s)
			spec.Legend.Add(fmt.Sprintf("SLA p95 < %.0f ms", *t.P95Ms), s)
		}
		if t.P99Ms != nil {
			s := &hline{y: *t.P99Ms, style: dashed(colP99)}
			spec.Add(s)
			spec.Legend.Add(fmt.Sprintf("SLA p99 < %.0f ms", *t.P99Ms), s)
		}
		spec.Add(&vline{x: 20, style: dashed(colP95)}, &vline{x: 100, style: dashed(colP99)})

		lo := math.Max(float64(h.Min())/1000, 0.001)
		hi := math.Max(float64(h.Max())/1000, lo*1.01)
		const nb = 50
		bins := make([]plotter.HistogramBin, nb)
		step := math.Log(hi/lo) / nb
		for i := range bins {
			bins[i].Min = lo * math.Exp(step*float64(i))
			bins[i].Max = lo * math.Exp(step*float64(i+1))
		}
		for _, b := range h.Distribution() {
			if b.Count == 0 {
				continue
			}
			mid := (float64(b.From) + float64(b.To)) / 2000
			i := int(math.Log(math.Max(mid, lo)/lo) / step)
			bins[min(max(i, 0), nb-1)].Weight += float64(b.Count)
		}
		hg := &plotter.Histogram{Bins: bins, FillColor: colP50, LineStyle: draw.LineStyle{Color: color.White, Width: vg.Points(0.5)}}
		hist.Add(hg)
		for _, m := range []struct {
			v   float64
			col color.Color
		}{{r.Latency.P50, colP50}, {r.Latency.P95, colP95}, {r.Latency.P99, colP99}} {
			if m.v > 0 {
				hist.Add(&vline{x: m.v, style: dashed(m.col)})
			}
		}
		hist.Legend.Add(fmt.Sprintf("p50 %.2f ms", r.Latency.P50), &vline{style: dashed(colP50)})
		hist.Legend.Add(fmt.Sprintf("p95 %.2f ms", r.Latency.P95), &vline{style: dashed(colP95)})
		hist.Legend.Add(fmt.Sprintf("p99 %.2f ms", r.Latency.P99), &vline{style: dashed(colP99)})
		hist.Legend.Top = true
		hist.Legend.Left = true
		hist.Y.Min = 0
		headroom(hist, 0.25, false)
	}
	return savePNG(path, 12*vg.Inch, 5.5*vg.Inch, [][]*plot.Plot{{spec, hist}}, 1, 2)
}

// headroom raises the y axis maximum so that the top share of the plot is
// free for the legend.
func headroom(p *plot.Plot, share float64, log bool) {
	lo, hi := p.Y.Min, p.Y.Max
	if log {
		if lo > 0 && hi > lo {
			p.Y.Max = hi * math.Pow(hi/lo, share/(1-share))
		}
		return
	}
	p.Y.Max = hi + (hi-lo)*share/(1-share)
}

func dashed(c color.Color) draw.LineStyle {
	return draw.LineStyle{Color: c, Width: vg.Points(1.2), Dashes: []vg.Length{vg.Points(5), vg.Points(3)}}
}

func savePNG(path string, w, h vg.Length, plots [][]*plot.Plot, rows, cols int) error {
	img := vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(110))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12), PadX: vg.Points(24), PadY: vg.Points(18)}
	canvases := plot.Align(plots, tiles, dc)
	for j := range plots {
		for i, p := range plots[j] {
			p.Draw(canvases[j][i])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// logTicks125 marks every integer multiple of each decade, labelling 1, 2, 3
// and 5 as plain numbers.
func logTicks125(lo, hi float64) []plot.Tick {
	if !(lo > 0) || !(hi > lo) {
		return nil
	}
	var ticks []plot.Tick
	for d := math.Floor(math.Log10(lo)); d <= math.Ceil(math.Log10(hi)); d++ {
		base := math.Pow(10, d)
		for m := 1; m <= 9; m++ {
			v := float64(m) * base
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			label := ""
			if m == 1 || m == 2 || m == 3 || m == 5 {
				label = tickLabel(v)
			}
			ticks = append(ticks, plot.Tick{Value: v, Label: label})
		}
	}
	return ticks
}

// tickLabel formats a tick value plainly: 0.5, 20, 5,000.
func tickLabel(v float64) string {
	if v < 1 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return thousands(math.Round(v))
}

// plainTicks are gonum's default linear ticks with plain labels.
func plainTicks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = thousands(ticks[i].Value)
		}
	}
	return ticks
}

// percentileTicks labels the 1/(1−q) axis of a percentile spectrum.
func percentileTicks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for _, t := range []struct {
		v     float64
		label string
	}{{1, "0%"}, {2, "50%"}, {10, "90%"}, {20, "95%"}, {100, "99%"}, {1e3, "99.9%"}, {1e4, "99.99%"}, {1e5, "99.999%"}, {1e6, "99.9999%"}} {
		if t.v >= lo*0.999 && t.v <= hi*1.001 {
			ticks = append(ticks, plot.Tick{Value: t.v, Label: t.label})
		}
	}
	return ticks
}

// hline is a horizontal line across the whole plot at y; it widens the y range
// to include y.
type hline struct {
	y     float64
	style draw.LineStyle
}

// Plot implements plot.Plotter.
func (h *hline) Plot(c draw.Canvas, p *plot.Plot) {
	_, trY := p.Transforms(&c)
	y := trY(h.y)
	c.StrokeLine2(h.style, c.Min.X, y, c.Max.X, y)
}

// DataRange implements plot.DataRanger.
func (h *hline) DataRange() (xmin, xmax, ymin, ymax float64) {
	return math.Inf(1), math.Inf(-1), h.y, h.y
}

// Thumbnail implements plot.Thumbnailer.
func (h *hline) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(h.style, c.Min.X, y, c.Max.X, y)
}

// vline is a vertical line across the whole plot at x.
type vline struct {
	x     float64
	style draw.LineStyle
}

// Plot implements plot.Plotter.
func (v *vline) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	x := trX(v.x)
	c.StrokeLine2(v.style, x, c.Min.Y, x, c.Max.Y)
}

// Thumbnail implements plot.Thumbnailer.
func (v *vline) Thumbnail(c *draw.Canvas) {
	x := c.Center().X
	c.StrokeLine2(v.style, x, c.Min.Y, x, c.Max.Y)
}
