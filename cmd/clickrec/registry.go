package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/clickrec/clickrec/internal/cli"
	"github.com/clickrec/clickrec/internal/redisutil"
	"github.com/clickrec/clickrec/model"
	"github.com/clickrec/clickrec/model/onnx"
	"github.com/clickrec/clickrec/model/registry"
)

func init() {
	register(command{name: "registry", synopsis: "list, show, push, promote and roll back model versions in the Redis registry", run: runRegistry})
}

func runRegistry(ctx context.Context, args []string) error {
	const usage = `usage: clickrec registry <list|show VERSION|push|promote VERSION|rollback|history> [flags]`
	if len(args) == 0 {
		return cli.Usagef("%s", usage)
	}
	verb, rest := args[0], args[1:]
	var arg string
	if (verb == "show" || verb == "promote") && len(rest) > 0 && rest[0][0] != '-' {
		arg, rest = rest[0], rest[1:]
	}
	var (
		rcfg    redisutil.Config
		reason  string
		dir     string
		version string
		doProm  bool
	)
	fs := newFlagSet("registry", `Operate the model registry in Redis.

  list              versions, newest last, with their metrics; * marks the served one
  show VERSION      a version's metadata (JSON)
  push              register a trained model directory (--dir) as --version, exporting it to ONNX
  promote VERSION   serve VERSION; every worker swaps between two batches
  rollback          serve again the version before the current one
  history           promotions and rollbacks with their reasons`)
	rcfg.Register(fs)
	fs.StringVar(&reason, "reason", "manual", "why (recorded in the history)")
	fs.StringVar(&dir, "dir", "", "push: the model directory written by clickrec train --out")
	fs.StringVar(&version, "version", "", "push: the version name (default: from the directory's metadata, else v<timestamp>)")
	fs.BoolVar(&doProm, "promote", false, "push: also promote the pushed version")
	if err := fs.Parse(rest); err != nil {
		return err
	}
	rc := rcfg.Client()
	defer rc.Close()
	if err := redisutil.Ping(ctx, &rcfg, rc); err != nil {
		return err
	}
	r := registry.New(rc)
	switch verb {
	case "list":
		vs, err := r.List(ctx)
		if err != nil {
			return err
		}
		cur, _ := r.Current(ctx)
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\tVERSION\tREGISTERED\tITEMS\tHR@20\tMRR@20")
		for _, v := range vs {
			md, err := r.Meta(ctx, v)
			if err != nil {
				return err
			}
			mark := ""
			if v == cur {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.4f\t%.4f\n", mark, v, md.RegisteredAt.Format(time.RFC3339), md.Items, md.Holdout["hr@20"], md.Holdout["mrr@20"])
		}
		return tw.Flush()
	case "show":
		if arg == "" {
			return cli.Usagef("registry show needs a VERSION")
		}
		md, err := r.Meta(ctx, arg)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(md)
	case "push":
		if dir == "" {
			return cli.Usagef("registry push needs --dir (a directory written by clickrec train --out)")
		}
		mdl, md, err := model.Load(dir)
		if err != nil {
			return cli.Usagef("--dir %s: %v", dir, err)
		}
		if version == "" {
			version = md.Version
		}
		if version == "" {
			version = "v" + time.Now().UTC().Format("20060102-150405")
		}
		mdl.Version, md.Version = version, version
		bin, err := mdl.MarshalBinary()
		if err != nil {
			return err
		}
		ob, err := onnx.Export(mdl, onnx.ExportOptions{})
		if err != nil {
			return err
		}
		meta := registry.Metadata{Metadata: md}
		if m := md.OfflineMetrics["served"]; m != nil {
			meta.Holdout = m
		}
		if err := r.Register(ctx, registry.Version{Meta: meta, Model: bin, ONNX: ob}, reason); err != nil {
			return err
		}
		fmt.Printf("registered %s (%d items, ONNX %d bytes)\n", version, mdl.NumItems(), len(ob))
		if doProm {
			prev, err := r.Promote(ctx, version, reason)
			if err != nil {
				return err
			}
			fmt.Printf("promoted %s (was %q)\n", version, prev)
		}
		return nil
	case "promote":
		if arg == "" {
			return cli.Usagef("registry promote needs a VERSION")
		}
		prev, err := r.Promote(ctx, arg, reason)
		if err != nil {
			return err
		}
		fmt.Printf("promoted %s (was %q)\n", arg, prev)
		return nil
	case "rollback":
		now, err := r.Rollback(ctx, reason)
		if err != nil {
			return err
		}
		fmt.Printf("rolled back to %s\n", now)
		return nil
	case "history":
		hist, err := r.History(ctx, 50)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tACTION\tVERSION\tPREVIOUS\tREASON")
		for _, e := range hist {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Action, e.Version, e.Previous, e.Reason)
		}
		return tw.Flush()
	}
	return cli.Usagef("unknown registry verb %q; %s", verb, usage)
}
