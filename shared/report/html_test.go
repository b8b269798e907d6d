package report_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"html"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aishell/aishell/shared/report"
)

func TestHistogram(t *testing.T) {
	got := report.Histogram([]float64{0, 250, 251, 999, 3000, 10000, 10001, 30000, 30001, 95000})
	want := map[string]int{
		"≤0.25 s": 2, "0.25-0.5 s": 1, "0.5-1 s": 1, "2-3 s": 1, "5-10 s": 1,
		"10-20 s": 1, "20-30 s": 1, ">30 s": 2,
	}
	total := 0
	for _, b := range got {
		if b.Count != want[b.Label] {
			t.Errorf("bin %s: got %d; want %d", b.Label, b.Count, want[b.Label])
		}
		total += b.Count
	}
	if total != 10 {
		t.Errorf("total: got %d; want 10", total)
	}
}

func TestWriteHTML(t *testing.T) {
	c, dir := testCorpus(t)
	p := report.PeriodEnding(badDay, 5)
	r, err := report.Build(context.Background(), report.Dir{Path: dir}, report.Options{Env: "test", Period: p})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := report.WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := b.String()

	if strings.Contains(page, "://") {
		t.Errorf("page refers to an external URL; want it self-contained")
	}
	for _, a := range r.Anomalies {
		if !strings.Contains(page, a.Message) {
			t.Errorf("page lacks anomaly %q", a.Message)
		}
	}

	// Three charts, each well-formed SVG: the histogram with one bar per
	// bin holding the true start-ups, and two with one bar per day.
	svgs := regexp.MustCompile(`(?s)<svg.*?</svg>`).FindAllString(page, -1)
	if len(svgs) != 3 {
		t.Fatalf("charts: got %d; want 3", len(svgs))
	}
	wantBars := []int{len(report.Histogram(nil)), p.Days, p.Days}
	for i, svg := range svgs {
		bars, err := countBars(svg)
		if err != nil {
			t.Errorf("chart %d is not well-formed: %v", i, err)
		}
		if bars != wantBars[i] {
			t.Errorf("chart %d bars: got %d; want %d", i, bars, wantBars[i])
		}
	}
	for _, bin := range report.Histogram(c.Startups(p)) {
		if bin.Count == 0 {
			continue
		}
		if want := html.EscapeString(bin.Label) + ": " + strconv.Itoa(bin.Count) + "</title>"; !strings.Contains(svgs[0], want) {
			t.Errorf("histogram lacks %q", want)
		}
	}
}

// countBars decodes svg as XML and counts its rect elements of class bar.
func countBars(svg string) (int, error) {
	d := xml.NewDecoder(strings.NewReader(svg))
	bars := 0
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return bars, nil
		}
		if err != nil {
			return bars, err
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			for _, a := range se.Attr {
				if a.Name.Local == "class" && a.Value == "bar" {
					bars++
				}
			}
		}
	}
}
