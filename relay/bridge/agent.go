package bridge

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// defaultPath is the agent's PATH when the bridge has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// agentSpec is what an agent is started with.
type agentSpec struct {
	// argv is the command; argv[0] is looked up in PATH when it has no
	// slash. arg0, when set, replaces argv[0] as the name the program sees
	// (a login shell's "-bash").
	argv []string
	arg0 string
	dir  string
	env  []string
	mode Mode
	// uid, when above 0 together with isolate, is the user the agent runs as.
	uid     int
	isolate bool
	cols    int
	rows    int
}

// agent is a running agent: a process that leads its own session and
// process group, and the bridge's end of its terminal or pipes.
type agent struct {
	pid  int
	mode Mode
	// in takes the agent's input and out gives its output. In pty mode
	// both are the terminal's master side; in pipes mode they are the
	// bridge's ends of the agent's standard input and output pipes. Both
	// are in the runtime's poller, so Close and deadlines interrupt them.
	in  *os.File
	out *os.File

	// exited is closed once the agent has been waited for; state holds
	// how it ended.
	exited chan struct{}
	state  *os.ProcessState

	closeOnce sync.Once
}

// startAgent starts the agent. Isolation (R9a) is applied when spec.isolate
// is set: the agent runs as spec.uid with its group set to the same id and no
// supplementary groups, and with no_new_privs, so neither a setuid program
// nor file capabilities can give it back the bridge's privileges.
func startAgent(spec agentSpec) (*agent, error) {
	cmd := exec.Command(spec.argv[0], spec.argv[1:]...)
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	if spec.arg0 != "" {
		cmd.Args[0] = spec.arg0
	}
	cmd.Dir = spec.dir
	cmd.Env = spec.env
	attr := &syscall.SysProcAttr{
		Setsid: true,
		// The agent never outlives its bridge, even one that is killed.
		Pdeathsig: syscall.SIGKILL,
	}
	if spec.isolate {
		attr.Credential = &syscall.Credential{
			Uid:    uint32(spec.uid),
			Gid:    uint32(spec.uid),
			Groups: []uint32{},
		}
	}
	cmd.SysProcAttr = attr

	a := &agent{mode: spec.mode, exited: make(chan struct{})}
	// childEnds are the agent's ends, closed here once it has them.
	var childEnds []*os.File
	switch spec.mode {
	case ModePipes:
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("create input pipe: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return nil, fmt.Errorf("create output pipe: %w", err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, outW
		a.in, a.out = inW, outR
		childEnds = []*os.File{inR, outW}
	default:
		master, tty, err := openPTY()
		if err != nil {
			return nil, err
		}
		a.in, a.out = master, master
		childEnds = []*os.File{tty}
		if err := a.resize(spec.cols, spec.rows); err != nil {
			master.Close()
			tty.Close()
			return nil, err
		}
		if spec.isolate {
			// Like login(1): the user owns the terminal, so programs that
			// open it by name (tty, less, an editor) may.
			if err := tty.Chown(spec.uid, spec.uid); err != nil {
				master.Close()
				tty.Close()
				return nil, fmt.Errorf("give terminal to uid %d: %w", spec.uid, err)
			}
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		attr.Setctty = true
		attr.Ctty = 0 // the child's standard input, the terminal
	}

	started := make(chan error, 1)
	go func() {
		// no_new_privs and Pdeathsig belong to the thread that forks the
		// agent, not to the process. This goroutine keeps its thread to
		// itself from the prctl through the fork until the agent is
		// reaped, and never unlocks it: the runtime then ends the thread
		// with the goroutine instead of reusing a thread that carries
		// no_new_privs.
		runtime.LockOSThread()
		if spec.isolate {
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				started <- fmt.Errorf("set no_new_privs: %w", err)
				return
			}
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		// The error says no more than the state does.
		_ = cmd.Wait()
		a.state = cmd.ProcessState
		close(a.exited)
	}()
	err := <-started
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		a.closeFiles()
		return nil, err
	}
	a.pid = cmd.Process.Pid
	return a, nil
}

// openPTY opens a pseudo-terminal and returns its master side in the
// runtime's poller, and its terminal side.
func openPTY() (master, tty *os.File, err error) {
	m, tty, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pseudo-terminal: %w", err)
	}
	// pty.Open leaves the master blocking, and a blocking read cannot be
	// interrupted by Close. A non-blocking duplicate of it goes through the
	// poller; os.NewFile sees the flag and registers it.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		tty.Close()
		return nil, nil, fmt.Errorf("open pseudo-terminal: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), tty, nil
}

// control runs fn on the master's descriptor without taking it out of the
// poller (File.Fd would).
func (a *agent) control(fn func(fd int) error) error {
	sc, err := a.out.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// resize sets the terminal's size; sizes out of range are ignored.
func (a *agent) resize(cols, rows int) error {
	if a.mode != ModePTY || cols <= 0 || rows <= 0 || cols > 0xffff || rows > 0xffff {
		return nil
	}
	ws := &unix.Winsize{Col: uint16(cols), Row: uint16(rows)}
	return a.control(func(fd int) error {
		if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
			return fmt.Errorf("set terminal size: %w", err)
		}
		return nil
	})
}

// busy reports whether a command runs in the agent's terminal: the
// terminal's foreground process group is not the agent's own, which is what
// a shell with job control does while it runs a command. In pipes mode it is
// always false; the bridge's loop decides there.
func (a *agent) busy() bool {
	if a.mode != ModePTY {
		return false
	}
	var fg int
	err := a.control(func(fd int) error {
		var err error
		fg, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		return err
	})
	return err == nil && fg > 0 && fg != a.pid
}

// running reports whether the agent has not been waited for yet.
func (a *agent) running() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the agent's process group, while the agent lives (its
// group id could name someone else's group after that).
func (a *agent) signal(sig syscall.Signal) {
	if a.running() {
		_ = unix.Kill(-a.pid, sig)
	}
}

// sweep kills every process left in the agent's session, such as a
// shell's background jobs, which live in process groups of their own. A
// process that left the session (setsid, a daemon) is out of its reach.
func (a *agent) sweep() {
	for range 10 {
		pids := sessionMembers(a.pid)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// sessionMembers lists the live processes whose session id is sid.
func sessionMembers(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...; comm may hold anything,
		// so the fields are counted after its closing parenthesis.
		rest := string(stat)
		if i := strings.LastIndexByte(rest, ')'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if s, err := strconv.Atoi(f[3]); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// closeFiles closes the bridge's ends of the agent's terminal or pipes,
// which ends the output reader and the input writer.
func (a *agent) closeFiles() {
	a.closeOnce.Do(func() {
		a.in.Close()
		if a.out != a.in {
			a.out.Close()
		}
	})
}

// exitReason describes how the agent ended, and the exit code to report: the
// exit status, or 128 plus the signal's number when a signal killed it.
func exitReason(state *os.ProcessState) (string, int) {
	ws, ok := state.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() {
		name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
		if name == "" {
			name = strconv.Itoa(int(ws.Signal()))
		}
		return "agent killed by signal " + name, 128 + int(ws.Signal())
	}
	return fmt.Sprintf("agent exited with status %d", state.ExitCode()), state.ExitCode()
}

// errNoCommand is returned for an empty agent command.
var errNoCommand = errors.New("no agent command")

// agentCommand returns the agent's argv and the name it is shown as: the
// configured command, or the login shell started as a login shell.
func agentCommand(configured []string, shell string) (argv []string, arg0 string, err error) {
	if len(configured) > 0 {
		if configured[0] == "" {
			return nil, "", errNoCommand
		}
		return configured, "", nil
	}
	return []string{shell}, "-" + filepath.Base(shell), nil
}

// agentEnv is the agent's whole environment: small, and free of the task's
// credential and the relay's settings.
func agentEnv(home, userID, shell, path string, mode Mode) []string {
	if path == "" {
		path = defaultPath
	}
	term := "xterm-256color"
	if mode == ModePipes {
		term = "dumb"
	}
	return []string{
		"HOME=" + home,
		"USER=" + userID,
		"LOGNAME=" + userID,
		"SHELL=" + shell,
		"PATH=" + path,
		"LANG=C.UTF-8",
		"TERM=" + term,
	}
}
