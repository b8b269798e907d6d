package keys

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestCreateThenLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "keys.json")
	created, err := LoadOrCreate(path)
	if err != nil {
		t.Fatalf("LoadOrCreate (create): %v", err)
	}
	for name, k := range map[string][]byte{
		"ticket": created.Ticket, "task": created.Task, "devJwt": created.DevJWT,
	} {
		if len(k) != MinKeyLen {
			t.Errorf("new %s key: got %d bytes; want %d", name, len(k), MinKeyLen)
		}
	}
	if bytes.Equal(created.Ticket, created.Task) || bytes.Equal(created.Task, created.DevJWT) {
		t.Errorf("new keys: got equal keys; want three different ones")
	}

	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode: got %04o; want 0600", perm)
	}
	dirInfo, _ := os.Stat(filepath.Dir(path))
	if perm := dirInfo.Mode().Perm(); perm != 0o700 {
		t.Errorf("key folder mode: got %04o; want 0700", perm)
	}

	loaded, err := LoadOrCreate(path)
	if err != nil {
		t.Fatalf("LoadOrCreate (load): %v", err)
	}
	if !bytes.Equal(loaded.Ticket, created.Ticket) || !bytes.Equal(loaded.Task, created.Task) ||
		!bytes.Equal(loaded.DevJWT, created.DevJWT) {
		t.Errorf("loaded keys differ from the created ones")
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("folder after create: got %d entries; want only the key file", len(entries))
	}
}

func TestConcurrentCreatorsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	const n = 8
	got := make([]Keys, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = LoadOrCreate(path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("creator %d: %v", i, errs[i])
		}
		if !bytes.Equal(got[i].Ticket, got[0].Ticket) {
			t.Errorf("creator %d: got a different ticket key; want the same keys for all", i)
		}
	}
}

func TestRefusesBadFile(t *testing.T) {
	good := func() []byte {
		b, _ := json.Marshal(Keys{
			Ticket: bytes.Repeat([]byte{1}, 32),
			Task:   bytes.Repeat([]byte{2}, 32),
			DevJWT: bytes.Repeat([]byte{3}, 32),
		})
		return b
	}()
	short, _ := json.Marshal(Keys{
		Ticket: bytes.Repeat([]byte{1}, 32),
		Task:   bytes.Repeat([]byte{2}, 8),
		DevJWT: bytes.Repeat([]byte{3}, 32),
	})

	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		wantErr string
	}{
		{"readable by group", good, 0o640, "mode 0640"},
		{"readable by others", good, 0o604, "mode 0604"},
		{"writable by group", good, 0o620, "mode 0620"},
		{"not JSON", []byte("ticket=abc"), 0o600, "parse"},
		{"ticket key missing", []byte(`{"task":"` + strings.Repeat("A", 44) + `"}`), 0o600,
			`key "ticket" missing`},
		{"empty object", []byte(`{}`), 0o600, `key "ticket" missing`},
		{"short key", short, 0o600, `key "task" is 8 bytes`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(path)
			if err == nil {
				t.Fatalf("got nil error; want one saying %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("got %q; want it to name %s and say %q", err, path, tc.wantErr)
			}
			if data, _ := os.ReadFile(path); !bytes.Equal(data, tc.content) {
				t.Errorf("file after refusal: got it changed; want it untouched")
			}
		})
	}

	t.Run("a folder in its place", func(t *testing.T) {
		path := t.TempDir()
		if _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("got %v; want a not a regular file error", err)
		}
	})
}
