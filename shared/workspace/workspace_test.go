package workspace

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestDir(t *testing.T) {
	const root = "/workspaces/stage"
	long64 := strings.Repeat("a", 64)
	const uuid = "8f0e1c2a-0b1d-4c3e-9f00-123456789abc"
	cases := []struct {
		name   string
		userID string
		// want is the folder name; "#" stands for the hashed form.
		want    string
		wantErr bool
	}{
		{"plain id is kept", "alice", "alice", false},
		{"uuid is kept", uuid, uuid, false},
		{"email is kept", "bob@example.com", "bob@example.com", false},
		{"64 bytes is kept", long64, long64, false},
		{"65 bytes is hashed", long64 + "a", "#", false},
		{"very long id is hashed", strings.Repeat("x", 10000), "#", false},
		{"empty id is refused", "", "", true},
		{"dot is hashed", ".", "#", false},
		{"dot dot is hashed", "..", "#", false},
		{"leading dot is hashed", ".profile", "#", false},
		{"parent escape is hashed", "../bob", "#", false},
		{"deep parent escape is hashed", "../../etc/passwd", "#", false},
		{"slash is hashed", "a/b", "#", false},
		{"absolute path is hashed", "/etc", "#", false},
		{"backslash is hashed", `a\b`, "#", false},
		{"upper case is hashed", "Alice", "#", false},
		{"unicode is hashed", "ålice", "#", false},
		{"look-alike unicode is hashed", "аlice", "#", false}, // Cyrillic a
		{"NUL byte is hashed", "alice\x00/../bob", "#", false},
		{"newline is hashed", "alice\n", "#", false},
		{"space is hashed", "al ice", "#", false},
		{"tilde is hashed", "~alice", "#", false},
		{"identity provider id is hashed", "google-oauth2|1234567890", "#", false},
		{"invalid UTF-8 is hashed", "al\xffice", "#", false},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Dir(root, tc.userID)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Dir(%q) = %q; want an error", tc.userID, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dir(%q): got error %v; want none", tc.userID, err)
			}
			checkInvariants(t, root, tc.userID, got)
			name := filepath.Base(got)
			if tc.want == "#" {
				if !strings.HasPrefix(name, hashedPrefix) || len(name) != 65 {
					t.Errorf("Dir(%q) = %q; want the hashed form", tc.userID, got)
				}
			} else if name != tc.want {
				t.Errorf("Dir(%q) = %q; want %q", tc.userID, got, filepath.Join(root, tc.want))
			}
			if other, ok := seen[got]; ok {
				t.Errorf("Dir(%q) = Dir(%q) = %q; want distinct folders", tc.userID, other, got)
			}
			seen[got] = tc.userID
		})
	}
}

func TestDirRefusesEmptyRoot(t *testing.T) {
	if got, err := Dir("", "alice"); err == nil {
		t.Fatalf("Dir(\"\", alice) = %q; want an error", got)
	}
}

func TestDirIsStable(t *testing.T) {
	a, _ := Dir("/r", "Some|User")
	b, _ := Dir("/r", "Some|User")
	if a != b {
		t.Fatalf("got %q then %q; want the same folder for the same id", a, b)
	}
}

// FuzzName checks the two promises of the mapping for any id: the folder is
// a direct child of the root, and a hashed name is never a safe name.
func FuzzName(f *testing.F) {
	for _, s := range []string{"alice", "..", "../x", "a/b", "~x", "A", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		got, err := Dir("/root", id)
		if id == "" {
			if err == nil {
				t.Fatalf("Dir(\"\") = %q; want an error", got)
			}
			return
		}
		if err != nil {
			t.Fatalf("Dir(%q): %v", id, err)
		}
		checkInvariants(t, "/root", id, got)
		name := filepath.Base(got)
		if name != id && safeID.MatchString(name) {
			t.Fatalf("Dir(%q) = %q: a hashed name that is also a safe id", id, got)
		}
	})
}

func checkInvariants(t *testing.T, root, id, got string) {
	t.Helper()
	if filepath.Dir(got) != root {
		t.Errorf("Dir(%q) = %q; want a direct child of %q", id, got, root)
	}
	name := filepath.Base(got)
	if name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		t.Errorf("Dir(%q) = %q; want a plain folder name", id, got)
	}
	if rel, err := filepath.Rel(root, got); err != nil || strings.HasPrefix(rel, "..") {
		t.Errorf("Dir(%q) = %q; want it inside %q", id, got, root)
	}
}

func TestPrepare(t *testing.T) {
	asRoot := os.Geteuid() == 0
	self := os.Geteuid()
	const uid = 54321

	cases := []struct {
		name string
		// setup prepares the root before Prepare runs.
		setup    func(t *testing.T, root string)
		userID   string
		uid      int
		rootOnly bool
		wantErr  string
		// wantOwner is checked when there is no error.
		wantOwner int
	}{
		{
			name:      "creates root and folder",
			userID:    "alice",
			wantOwner: self,
		},
		{
			name:      "hashed id gets its folder",
			userID:    "../bob",
			wantOwner: self,
		},
		{
			name: "reuses an existing folder and keeps its files",
			setup: func(t *testing.T, root string) {
				mkdir(t, filepath.Join(root, "alice"), 0o755)
				writeFile(t, filepath.Join(root, "alice", "notes"))
			},
			userID:    "alice",
			wantOwner: self,
		},
		{
			name: "refuses a symbolic link at the folder's place",
			setup: func(t *testing.T, root string) {
				mkdir(t, root, 0o711)
				if err := os.Symlink(t.TempDir(), filepath.Join(root, "alice")); err != nil {
					t.Fatal(err)
				}
			},
			userID:  "alice",
			wantErr: "symbolic link",
		},
		{
			name: "refuses a dangling symbolic link",
			setup: func(t *testing.T, root string) {
				mkdir(t, root, 0o711)
				if err := os.Symlink("/nonexistent/x", filepath.Join(root, "alice")); err != nil {
					t.Fatal(err)
				}
			},
			userID:  "alice",
			wantErr: "symbolic link",
		},
		{
			name: "refuses a file at the folder's place",
			setup: func(t *testing.T, root string) {
				mkdir(t, root, 0o711)
				writeFile(t, filepath.Join(root, "alice"))
			},
			userID:  "alice",
			wantErr: "not a folder",
		},
		{
			name: "refuses a root that is a file",
			setup: func(t *testing.T, root string) {
				writeFile(t, root)
			},
			userID:  "alice",
			wantErr: "not a folder",
		},
		{
			name:    "refuses an empty id",
			userID:  "",
			wantErr: "empty user id",
		},
		{
			name:    "refuses a negative uid",
			userID:  "alice",
			uid:     -1,
			wantErr: "negative uid",
		},
		{
			name:      "gives a new folder to the user's uid",
			userID:    "alice",
			uid:       uid,
			rootOnly:  true,
			wantOwner: uid,
		},
		{
			name: "hands a folder made by root to the user's uid",
			setup: func(t *testing.T, root string) {
				mkdir(t, filepath.Join(root, "alice"), 0o755)
			},
			userID:    "alice",
			uid:       uid,
			rootOnly:  true,
			wantOwner: uid,
		},
		{
			name: "refuses a folder of another uid",
			setup: func(t *testing.T, root string) {
				mkdir(t, filepath.Join(root, "alice"), 0o700)
				chown(t, filepath.Join(root, "alice"), uid+1)
			},
			userID:   "alice",
			uid:      uid,
			rootOnly: true,
			wantErr:  "owned by uid 54322, want uid 54321",
		},
		{
			name: "refuses a folder of a uid when none is given",
			setup: func(t *testing.T, root string) {
				mkdir(t, filepath.Join(root, "alice"), 0o700)
				chown(t, filepath.Join(root, "alice"), uid)
			},
			userID:   "alice",
			rootOnly: true,
			wantErr:  "owned by uid 54321, want uid 0",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rootOnly && !asRoot {
				t.Skip("needs root to change owners")
			}
			root := filepath.Join(t.TempDir(), "workspaces", "stage")
			if tc.setup != nil {
				mkdir(t, filepath.Dir(root), 0o755)
				tc.setup(t, root)
			}

			got, err := Prepare(root, tc.userID, tc.uid)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Prepare: got error %v; want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: got error %v; want none", err)
			}
			want, _ := Dir(root, tc.userID)
			if got != want {
				t.Errorf("Prepare = %q; want %q", got, want)
			}
			if tc.setup == nil {
				checkMode(t, root, RootMode|fs.ModeDir, -1)
			}
			checkMode(t, got, UserMode|fs.ModeDir, tc.wantOwner)
		})
	}
}

func TestPrepareRootKeepsExistingMode(t *testing.T) {
	root := filepath.Join(t.TempDir(), "ws")
	mkdir(t, root, 0o755)
	if _, err := Prepare(root, "alice", 0); err != nil {
		t.Fatal(err)
	}
	checkMode(t, root, 0o755|fs.ModeDir, -1)
}

func checkMode(t *testing.T, path string, want fs.FileMode, owner int) {
	t.Helper()
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode() & (fs.ModeType | fs.ModePerm); got != want {
		t.Errorf("mode of %s: got %v; want %v", path, got, want)
	}
	if owner >= 0 {
		sys := st.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != owner {
			t.Errorf("owner of %s: got uid %d; want %d", path, sys.Uid, owner)
		}
		// A folder handed to a user's uid also gets that uid as its group.
		if owner != os.Geteuid() && int(sys.Gid) != owner {
			t.Errorf("group of %s: got gid %d; want %d", path, sys.Gid, owner)
		}
	}
}

func mkdir(t *testing.T, path string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(path, mode); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}
