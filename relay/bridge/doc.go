// Package bridge is the task side of the relay: the entry point of an agent
// task. It connects to the relay's task socket, waits for its user when the
// task is warm (R8), prepares the user's workspace folder (R9, R9a), starts
// the agent in it and relays bytes both ways, and tells the relay whether the
// agent is busy (R7).
//
// # The agent
//
// AGENT_COMMAND is split into words like the words of a simple shell command
// (blanks, single and double quotes, backslashes) and run directly, with no
// shell in between: a program that does not exist then fails to start, with
// its cause, instead of becoming a shell that exits with status 127. There is
// no expansion of variables or globs. Without AGENT_COMMAND the agent is the
// login shell of the bridge's user (from /etc/passwd, else $SHELL, else
// /bin/sh), started as a login shell ("-bash"); under a terminal it is
// interactive too.
//
// The agent leads its own session and process group, runs in the workspace
// folder with a small environment of its own (HOME, USER, LOGNAME, SHELL,
// PATH, LANG, TERM; nothing of the task's credential or the relay), and gets
// SIGKILL if its bridge dies. When the bridge runs as root and the user has a
// uid, the agent runs as that uid, with that gid and no other groups, and with
// no_new_privs; otherwise a warning says isolation is off.
//
// # Busy or idle
//
// In pty mode the agent is busy while the terminal's foreground process group
// is not the agent's own: a shell with job control hands the terminal to each
// command it runs and takes it back at its prompt. An agent without job
// control is therefore always idle. In pipes mode the agent is busy from each
// input until it has written nothing for Config.QuietPeriod.
//
// # The relay connection
//
// The bridge dials the relay with exponential back-off (100 ms doubling to
// 2 s) for up to Config.ReconnectWindow, at start and whenever the connection
// drops; the agent keeps running meanwhile and its output is kept, up to
// 1 MiB, oldest dropped. On every connection while the agent runs the bridge
// first sends ready; after a reconnection it also repeats its processing
// state. A warm task that has its session reconnects to the session's task
// socket. A dial answered with HTTP 401 or 403, or a close with 1008, ends the
// bridge.
//
// # How it ends
//
// Run returns nil (exit status 0) when the agent exits on its own, after the
// bridge sent shutdown with the agent's exit status, or when the relay's
// shutdown frame or the context (SIGTERM, SIGINT) stopped it: SIGHUP and
// SIGTERM to the agent's process group, SIGKILL after Config.StopGrace, and
// SIGKILL to whatever else is left in the agent's session. Run returns an
// error (exit status 1) when the agent cannot start, when the relay refuses
// the task, and when the relay stays out of reach past the reconnect window.
// Its last log line, event bridge_stopped, states the reason.
package bridge
