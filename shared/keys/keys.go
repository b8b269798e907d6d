// Package keys keeps the secret keys of one machine (make run) in a key file
// under the data folder: the ticket key, the task credential key and the
// key of development JWTs. In AWS the same keys come from Secrets Manager.
package keys

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MinKeyLen is the shortest key accepted from a key file, in bytes; new
// keys are this long.
const MinKeyLen = 32

// Keys are the secret keys of one installation.
type Keys struct {
	// Ticket signs client tickets.
	Ticket []byte `json:"ticket"`
	// Task signs task credentials.
	Task []byte `json:"task"`
	// DevJWT signs the development JWTs that stand in for the identity
	// provider's tokens.
	DevJWT []byte `json:"devJwt"`
}

// LoadOrCreate reads the key file at path, or creates it (mode 0600, its
// folder 0700) with fresh random keys when it does not exist. It refuses a
// file that group or others may read or write, and a file missing a key or
// holding one shorter than MinKeyLen, naming the file and the fault.
func LoadOrCreate(path string) (Keys, error) {
	k, err := load(path)
	if errors.Is(err, os.ErrNotExist) {
		k, err = create(path)
		if errors.Is(err, os.ErrExist) {
			// Another process created it first: use its keys.
			return load(path)
		}
	}
	return k, err
}

func load(path string) (Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return Keys{}, fmt.Errorf("load key file %s: %w", path, err)
	}
	defer f.Close()

	info, err := f.Stat()
	if err != nil {
		return Keys{}, fmt.Errorf("load key file %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return Keys{}, fmt.Errorf("load key file %s: not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return Keys{}, fmt.Errorf("load key file %s: mode %04o lets group or others in; "+
			"want 0600 (chmod 600 %s)", path, perm, path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return Keys{}, fmt.Errorf("load key file %s: read: %w", path, err)
	}

	var k Keys
	if err := json.Unmarshal(data, &k); err != nil {
		return Keys{}, fmt.Errorf("load key file %s: parse: %w", path, err)
	}
	for _, key := range []struct {
		name string
		val  []byte
	}{{"ticket", k.Ticket}, {"task", k.Task}, {"devJwt", k.DevJWT}} {
		if len(key.val) == 0 {
			return Keys{}, fmt.Errorf("load key file %s: key %q missing", path, key.name)
		}
		if len(key.val) < MinKeyLen {
			return Keys{}, fmt.Errorf("load key file %s: key %q is %d bytes; want at least %d",
				path, key.name, len(key.val), MinKeyLen)
		}
	}
	return k, nil
}

// create writes a new key file. The keys go to a temporary file first,
// which is then linked into place: the link fails if the file exists, so
// two processes starting at once never overwrite each other's keys and
// nobody reads a half-written file.
func create(path string) (Keys, error) {
	k := Keys{Ticket: newKey(), Task: newKey(), DevJWT: newKey()}
	data, err := json.MarshalIndent(k, "", "  ")
	if err != nil {
		return Keys{}, fmt.Errorf("create key file %s: encode: %w", path, err)
	}

	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Keys{}, fmt.Errorf("create key file %s: create folder: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return Keys{}, fmt.Errorf("create key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Keys{}, fmt.Errorf("create key file %s: write: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return Keys{}, fmt.Errorf("create key file %s: %w", path, err)
	}
	return k, nil
}

func newKey() []byte {
	b := make([]byte, MinKeyLen)
	rand.Read(b) // crypto/rand.Read never returns an error (it aborts instead)
	return b
}
