// Package queries holds the CloudWatch Logs Insights queries behind the daily
// report (R15), one *.query file each, so that the CDK app deploys the same
// text as saved query definitions that operators run in the console.
package queries

import (
	"embed"
	"io/fs"
	"path"
	"strings"
)

//go:embed *.query
var files embed.FS

// All returns every query by name (the file name without .query), such as
// "task-startup-latency", with its text.
func All() map[string]string {
	names, err := fs.Glob(files, "*.query")
	if err != nil {
		panic("queries: " + err.Error()) // the pattern is constant and valid
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			panic("queries: " + err.Error()) // embedded files are always readable
		}
		out[strings.TrimSuffix(path.Base(name), ".query")] = string(b)
	}
	return out
}
