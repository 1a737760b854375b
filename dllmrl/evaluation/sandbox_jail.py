"""One sandboxed run in fresh namespaces: stdlib only, never imported by dllmrl.

``dllmrl.evaluation.sandbox`` starts this file as root with ``python -I -S sandbox_jail.py`` and the
arguments named in ``_config`` (lists joined by newlines: json and platform would double the start-up
time), the nonce line and the program's source bytes on stdin, and a status pipe on STATUS_FD.
Three processes take part:

- the supervisor (this script's own process, in the caller's PID namespace) unshares the mount, PID,
  network, IPC and UTS namespaces and forks the init. On SIGTERM (the caller's deadline or output cap),
  at its own backstop deadline, or when the caller dies, it SIGKILLs the init. It exits only after
  waiting for the init, and the kernel answers that wait only once every process of the PID namespace
  is gone: when the caller has reaped the supervisor, nothing of the run is left running.
- the init (PID 1 of the new namespace) builds the new root (below), forks the runner, waits for it,
  reaps whatever the program orphaned, asks the kernel (``kill(-1, 0)``) whether anything else is still
  alive, writes ``EXIT_CODE CPU_SECONDS LEFT`` to the status pipe and exits, which kills the namespace.
- the runner process execs the interpreter on the runner text inside the new root.

The new root is a read-only tmpfs holding only: the Python installation and the directories of the
shared libraries it links (read-only binds at their host paths, site-packages hidden), /dev/null,
zero, full, random and urandom, a /proc of the new PID namespace, and one size- and inode-capped
tmpfs bound at /work (the program's directory, its only one owned by the run's uid), /tmp, /var/tmp
and /dev/shm. The host's root is detached after ``pivot_root``: nothing else of the host is reachable,
and all of it vanishes with the mount namespace.
"""

import ctypes
import os
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "full", "random", "urandom")
NEW = "/tmp"  # where the new root is built: mounting over it hides nothing the build needs

_libc = ctypes.CDLL(None, use_errno=True)
_init_pid = 0
_stop_asked = False


def _call(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _mount(src, target, fstype, flags, data=None):
    enc = [None if a is None else a.encode() for a in (src, target, fstype, data)]
    _call(_libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), "mount " + target)


def _bind(src, target, read_only):
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
    _mount(src, target, None, MS_BIND)
    if read_only:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _scratch(cfg, source):
    """The one writable filesystem: /work (owned by the run's uid), /tmp, /var/tmp, /dev/shm share its caps."""
    top = NEW + "/.scratch"
    os.mkdir(top)
    _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV,
           "size=%d,nr_inodes=%d,mode=755" % (cfg["scratch_bytes"], cfg["scratch_inodes"]))
    uid = cfg["uid"]
    for name, target in (("work", "/work"), ("tmp", "/tmp"), ("vartmp", "/var/tmp"), ("shm", "/dev/shm")):
        os.mkdir(top + "/" + name)
        os.chmod(top + "/" + name, 0o700 if name == "work" else 0o1777)
        _bind(top + "/" + name, NEW + target, read_only=False)
    fd = os.open(NEW + "/work/program.py", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, source)
    os.fchown(fd, uid, uid)
    os.close(fd)
    os.chown(NEW + "/work", uid, uid)
    _call(_libc.umount2((top).encode(), MNT_DETACH), "umount scratch")
    os.rmdir(top)


def _build_root(cfg, source):
    os.umask(0o022)  # the run's uid must be able to walk to the interpreter, whatever the caller's umask
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", NEW, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    for src in cfg["read_only"]:
        _bind(src, NEW + src, read_only=True)
    for path in cfg["hide"]:
        _mount("tmpfs", NEW + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=4,mode=755")
    for dev in DEVICES:
        _bind("/dev/" + dev, NEW + "/dev/" + dev, read_only=False)
    _scratch(cfg, source)
    os.mkdir(NEW + "/proc")
    _mount("proc", NEW + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(NEW + "/.old")
    _call(_libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], NEW.encode(), (NEW + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _call(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _exec_runner(cfg, nonce_fd):
    try:
        os.dup2(nonce_fd, 0)
        os.close(nonce_fd)
        os.close(cfg["status_fd"])
        os.chdir("/work")
        exe = cfg["exe"]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        os.execve(exe, [exe, "-I", "-S", "-c", cfg["runner"], "/work/program.py", *map(str, cfg["limits"])], env)
    except OSError as e:
        os.write(2, ("sandbox: cannot start the runner: %s\n" % e).encode())
    os._exit(127)


def _init(cfg, nonce, source):
    """PID 1 of the run's namespace; never returns."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        _build_root(cfg, source)
        r, w = os.pipe()
        os.write(w, nonce + b"\n")
        os.close(w)
        runner = os.fork()
        if runner == 0:
            _exec_runner(cfg, r)
        os.close(r)
        report = _wait_for(runner)
        os.write(cfg["status_fd"], report.encode())
    except BaseException as e:  # PID 1 must never fall back into the supervisor's code
        os.write(2, ("sandbox: the sandbox's init failed: %r\n" % (e,)).encode())
        os._exit(1)
    os._exit(0)  # the kernel now kills whatever is left in the namespace


def _wait_for(runner):
    """Wait for the runner, reaping the program's orphans too; 'EXIT_CODE CPU_SECONDS LEFT'."""
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid == runner:
            break
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    try:
        os.kill(-1, 0)  # from PID 1: succeeds when any other process of the namespace is alive
        left = 1
    except ProcessLookupError:
        left = 0
    cpu = usage.ru_utime + usage.ru_stime
    return "%d %.3f %d\n" % (os.waitstatus_to_exitcode(status), cpu, left)


def _stop(signum, frame):
    global _stop_asked
    _stop_asked = True
    if _init_pid:
        try:
            os.kill(_init_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _config(argv):
    names = ("uid", "exe", "status_fd", "scratch_bytes", "scratch_inodes", "backstop_s", "runner", "limits",
             "read_only", "hide")
    cfg = dict(zip(names, argv))
    for key in ("uid", "status_fd", "scratch_bytes", "scratch_inodes"):
        cfg[key] = int(cfg[key])
    cfg["backstop_s"] = float(cfg["backstop_s"])
    cfg["limits"] = cfg["limits"].split()
    cfg["read_only"] = cfg["read_only"].split("\n")
    cfg["hide"] = [p for p in cfg["hide"].split("\n") if p]
    return cfg


def main():
    global _init_pid
    cfg = _config(sys.argv[1:])
    nonce, _, source = sys.stdin.buffer.read().partition(b"\n")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGALRM, _stop)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    _call(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    pid = os.fork()
    if pid == 0:
        _init(cfg, nonce, source)
    _init_pid = pid
    if _stop_asked:  # the stop came between fork and here
        _stop(signal.SIGTERM, None)
    signal.setitimer(signal.ITIMER_REAL, cfg["backstop_s"])
    os.waitpid(pid, 0)  # returns once the whole PID namespace is gone
    os._exit(0)


if __name__ == "__main__":
    main()
