package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
)

// Execute runs cfg, prints the summary to stdout, writes the JSON report to
// jsonPath (or <cfg.OutDir>/loadtest-<scenario>-<time>.json when empty) and
// the plots next to it, and returns the verdict as an error (nil: SLA met).
func Execute(ctx context.Context, cfg Config, jsonPath string, log *slog.Logger, stdout io.Writer) error {
	rep, err := Run(ctx, cfg, log)
	if err != nil {
		return err
	}
	if jsonPath == "" {
		jsonPath = filepath.Join(cfg.OutDir, fmt.Sprintf("loadtest-%s-%s.json", cfg.Scenario, rep.StartedAt.Format("20060102-150405")))
	}
	base := strings.TrimSuffix(filepath.Base(jsonPath), filepath.Ext(jsonPath))
	plots, perr := rep.WritePlots(filepath.Dir(jsonPath), base)
	if perr != nil {
		log.Error("could not draw the plots", "err", perr)
	}
	rep.Plots = plots
	jerr := rep.WriteJSON(jsonPath)
	if jerr == nil {
		rep.Notes = append(rep.Notes, "report: "+jsonPath)
	}
	if err := rep.WriteText(stdout); err != nil {
		return fmt.Errorf("writing the summary: %w", err)
	}
	if err := errors.Join(perr, jerr); err != nil {
		return err
	}
	return rep.Err()
}
