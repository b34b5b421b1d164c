package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/model/eval"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// isReplay reports whether clickrec eval was asked for the replay mode, and
// returns the other arguments.
func isReplay(args []string) (bool, []string) {
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "replay" {
			continue
		}
		on := !hasVal || val == "true" || val == "1"
		return on, slices.Delete(slices.Clone(args), i, i+1)
	}
	return false, args
}

// runReplay is clickrec eval --replay: the frozen model against the frozen
// model plus online item knowledge, on clicks replayed in time order.
func runReplay(ctx context.Context, args []string) error {
	fs := newFlagSet("eval --replay", `Replay timed clicks: train the frozen model on the first part, then replay the
rest in time order, predicting each next click of a session before the online
item knowledge (itemknow) learns it. Reports HR@20 and MRR@20 of the frozen
model, of the frozen model blended with the online knowledge, and of the online
knowledge alone: overall, for targets unseen at training, and per --bucket.

  clickrec eval --replay --clicks a.gz,b.gz --clicks-format yoochoose --json out.json`)
	var (
		rc     = eval.DefaultReplay()
		files  cli.Strings
		format string
		jsOut  string
		png    string
		lg     cli.Logging
	)
	fs.Var(&files, "clicks", "comma-separated click files, merged in time order (required)")
	fs.Env("clicks", "CLICKREC_REPLAY_CLICKS")
	fs.StringVar(&format, "clicks-format", eval.FormatYooChoose, "format of --clicks: yoochoose (SessionId<TAB>ItemId<TAB>Time) or taobao (user,item,category,behavior,ts)")
	fs.StringVar(&jsOut, "json", "", "write the JSON report here (required; - for stdout)")
	fs.StringVar(&png, "plot", "", "also draw HR@20 per --bucket of the three recommenders as a PNG here")
	fs.Float64Var(&rc.TrainFraction, "train-fraction", rc.TrainFraction, "share of the time span that trains the frozen model")
	fs.Float64Var(&rc.ValidFraction, "replay-valid-fraction", rc.ValidFraction, "share of the replay's time span (its start) that tunes the blend weight")
	fs.DurationVar(&rc.Bucket, "bucket", rc.Bucket, "width of the per-period figures")
	fs.DurationVar(&rc.Online.HalfLife, "ik-half-life", rc.Online.HalfLife, "half-life of the online knowledge")
	fs.BoolVar(&rc.Online.QueryProbation, "ik-probation", rc.Online.QueryProbation, "online queries see pairs seen in one session only")
	fs.BoolVar(&rc.Online.QueryProbationItems, "ik-probation-items", rc.Online.QueryProbationItems, "online queries propose items clicked in one session only")
	fs.Float64Var(&rc.Online.BackWeight, "ik-back-weight", rc.Online.BackWeight, "weight of the backward pair X→A of a click on X after A")
	fs.Float64Var(&rc.Served.Known, "ik-weight", rc.Served.Known, "served blend: weight of the online score of an item the model knows (as clickrec hotpath --ik-weight)")
	fs.Float64Var(&rc.Served.New, "ik-new-weight", rc.Served.New, "served blend: weight of the online score of an item the model does not know (as clickrec hotpath --ik-new-weight)")
	apply := trainFlags(fs, &rc.Model, "CLICKREC_REPLAY_")
	lg.Register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := lg.Logger()
	if err != nil {
		return err
	}
	switch {
	case len(files) == 0:
		return cli.Usagef("--clicks is required (see clickrec eval --replay --help)")
	case jsOut == "":
		return cli.Usagef("--json is required")
	case !(rc.TrainFraction > 0 && rc.TrainFraction < 1) || !(rc.ValidFraction >= 0 && rc.ValidFraction < 1):
		return cli.Usagef("--train-fraction must be in (0,1), --replay-valid-fraction in [0,1)")
	case rc.Bucket <= 0 || rc.Online.HalfLife <= 0:
		return cli.Usagef("--bucket and --ik-half-life must be positive")
	}
	if err := apply(); err != nil {
		return err
	}
	limitProcs(rc.Model.Workers)
	rc.Log = log
	t0 := time.Now()
	var clicks []eval.Click
	for _, f := range files {
		cs, err := eval.ReadClicksFile(f, format)
		if err != nil {
			return fmt.Errorf("read clicks: %w", err)
		}
		clicks = append(clicks, cs...)
	}
	log.Info("read clicks", "clicks", len(clicks), "took", time.Since(t0).Round(time.Millisecond))
	res, err := eval.Replay(ctx, clicks, rc)
	if err != nil {
		return err
	}
	if err := writeJSON(jsOut, res); err != nil {
		return err
	}
	printReplayTable(os.Stderr, res)
	if png != "" {
		if err := plotReplay(png, res); err != nil {
			return err
		}
	}
	log.Info("replay done", "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// printReplayTable prints the replay's overall and unseen-target figures.
func printReplayTable(w io.Writer, r *eval.ReplayResult) {
	fmt.Fprintf(w, "blend %s, λ = %g, μ = %g (chosen on the validation part)\n", r.Blend, r.Lambda, r.Mu)
	fmt.Fprintln(w, "frozen* and served never recommend the clicked item (as the hot path); frozen, blend and online may")
	fmt.Fprintf(w, "%-15s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s\n", "cases", "n", "frozen*", "", "served", "", "frozen", "", "blend", "", "online", "")
	fmt.Fprintf(w, "%-15s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s\n", "", "", "hr@20", "mrr@20", "hr@20", "mrr@20", "hr@20", "mrr@20", "hr@20", "mrr@20", "hr@20", "mrr@20")
	row := func(name string, f eval.ReplayFigures) {
		fmt.Fprintf(w, "%-15s %7d %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f %7.4f\n", name, f.Cases,
			f.FrozenServed.HR20, f.FrozenServed.MRR20, f.Served.HR20, f.Served.MRR20,
			f.Frozen.HR20, f.Frozen.MRR20, f.Blend.HR20, f.Blend.MRR20, f.Online.HR20, f.Online.MRR20)
	}
	row("overall", r.Overall)
	row("unseen targets", r.Unseen)
	row("seen targets", r.Seen)
	for _, b := range r.Buckets {
		row(b.Start.Format("01-02 15:04"), b.ReplayFigures)
	}
}

// plotReplay draws HR@20 per period of the frozen model, the blend and the
// online knowledge as a PNG.
func plotReplay(path string, r *eval.ReplayResult) error {
	p := plot.New()
	p.Title.Text = "replay: HR@20 per period"
	p.X.Label.Text = "period start (hours into the reported replay)"
	p.Y.Label.Text = "HR@20"
	line := func(f func(eval.ReplayFigures) float64) plotter.XYs {
		var xy plotter.XYs
		for _, b := range r.Buckets {
			if b.Cases == 0 {
				continue
			}
			xy = append(xy, plotter.XY{X: b.Start.Sub(r.Buckets[0].Start).Hours(), Y: f(b.ReplayFigures)})
		}
		return xy
	}
	if err := plotutil.AddLinePoints(p,
		"frozen", line(func(f eval.ReplayFigures) float64 { return f.Frozen.HR20 }),
		"frozen, as served", line(func(f eval.ReplayFigures) float64 { return f.FrozenServed.HR20 }),
		"served (hot path)", line(func(f eval.ReplayFigures) float64 { return f.Served.HR20 }),
		"frozen + online (tuned)", line(func(f eval.ReplayFigures) float64 { return f.Blend.HR20 }),
		"online", line(func(f eval.ReplayFigures) float64 { return f.Online.HR20 })); err != nil {
		return fmt.Errorf("plotting the replay: %w", err)
	}
	if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("saving the replay plot: %w", err)
	}
	return nil
}
