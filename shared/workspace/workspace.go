// Package workspace maps users to their workspace folders under a shared root
// and prepares those folders for an agent (R9, R9a).
//
// A user's folder is always a direct child of the root. User ids that are
// plainly safe as file names (lower-case letters, digits and ".", "_", "@",
// "-", starting with a letter or digit, at most 64 bytes) name their folder as
// they are, which keeps the folders readable for an operator. Every other id,
// upper-case letters included, names the folder "~" followed by the hex
// SHA-256 of the id. No safe id contains "~", so the two kinds never meet, and
// no id can name ".", "..", a path with a separator, or another user's
// folder. Upper case is hashed so that two ids differing only in case stay
// apart on a file system that ignores case.
package workspace

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// Modes of the root and of a user's folder: agents may pass through the root
// into their own folder but not list the root, and nobody but the owner may
// enter a user's folder.
const (
	RootMode fs.FileMode = 0o711
	UserMode fs.FileMode = 0o700
)

// hashedPrefix starts the folder name of an id that is not safe as it is.
// safeID cannot match anything that contains it.
const hashedPrefix = "~"

var safeID = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// ErrEmptyUserID is returned for an empty user id.
var ErrEmptyUserID = errors.New("empty user id")

// Name returns the folder name of a user id, without the root.
func Name(userID string) (string, error) {
	if userID == "" {
		return "", ErrEmptyUserID
	}
	if safeID.MatchString(userID) {
		return userID, nil
	}
	sum := sha256.Sum256([]byte(userID))
	return hashedPrefix + hex.EncodeToString(sum[:]), nil
}

// Dir returns the workspace folder of a user: a direct child of root that no
// other user id maps to.
func Dir(root, userID string) (string, error) {
	if root == "" {
		return "", errors.New("empty workspace root")
	}
	name, err := Name(userID)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Clean(root), name), nil
}

// Prepare makes sure the workspace folder of a user exists and belongs to
// that user, and returns its path. It creates root (mode 0711) if it is
// missing and the user's folder (mode 0700) if it is missing. When the
// process runs as root and uid is above 0, the folder is owned by uid:uid;
// otherwise it is owned by the process's own user. Prepare refuses a folder
// that is a symbolic link, not a folder, or owned by anyone else, and it
// never follows a link at the folder's place.
func Prepare(root, userID string, uid int) (string, error) {
	dir, err := Dir(root, userID)
	if err != nil {
		return "", fmt.Errorf("workspace folder: %w", err)
	}
	if uid < 0 {
		return "", fmt.Errorf("workspace folder: negative uid %d", uid)
	}
	root = filepath.Dir(dir)

	if err := ensureRoot(root); err != nil {
		return "", err
	}

	owner := os.Geteuid()
	if owner == 0 && uid > 0 {
		owner = uid
	}
	if err := os.Mkdir(dir, UserMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("create workspace folder: %w", err)
	}
	if err := claim(dir, owner); err != nil {
		return "", fmt.Errorf("workspace folder %s: %w", dir, err)
	}
	return dir, nil
}

// ensureRoot creates the root folder if it is missing. A root that exists is
// left as it is: on AWS it is the access point's root, whose owner and mode
// the access point sets.
func ensureRoot(root string) error {
	err := os.Mkdir(root, RootMode)
	if errors.Is(err, fs.ErrNotExist) {
		// Parents are created with the same mode: they must be passable too.
		err = os.MkdirAll(root, RootMode)
	}
	if errors.Is(err, fs.ErrExist) {
		st, err := os.Stat(root)
		if err != nil {
			return fmt.Errorf("workspace root: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("workspace root %s: not a folder", root)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("create workspace root: %w", err)
	}
	// The umask may have taken bits that agents need to pass through.
	if err := os.Chmod(root, RootMode); err != nil {
		return fmt.Errorf("set mode of workspace root: %w", err)
	}
	return nil
}

// claim checks the folder at dir and gives it to owner with UserMode. It
// works on an open descriptor of the folder itself, opened without following
// a link, so that nothing can swap the folder for a link between the check
// and the change.
func claim(dir string, owner int) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return errors.New("is a symbolic link")
	}
	if !st.IsDir() {
		return errors.New("not a folder")
	}

	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return fmt.Errorf("stat: %w", err)
	}

	// A folder made by root (by this or an earlier bridge) may be handed to
	// its user; a folder of any other user is never taken over.
	current := int(fst.Uid)
	if current != owner {
		if current != 0 || os.Geteuid() != 0 {
			return fmt.Errorf("owned by uid %d, want uid %d", current, owner)
		}
		if err := unix.Fchown(fd, owner, owner); err != nil {
			return fmt.Errorf("chown to uid %d: %w", owner, err)
		}
	}
	if fst.Mode&0o7777 != uint32(UserMode) {
		if err := unix.Fchmod(fd, uint32(UserMode)); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}
