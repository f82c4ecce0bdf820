"""The sandbox's system call filter (seccomp), installed by the launcher before the job runs.

Namespaces take the network and the host's files away; this filter takes away the system calls
that exist to reach the kernel itself or other processes, which a converter never makes: the
calls a kernel exploit most often starts from (user-namespace nesting, BPF, perf, io_uring,
keyrings, userfaultfd), tracing other processes, mounting, loading kernel modules, rebooting.
It is a deny-list on an allow-by-default filter, like Docker's default profile and Flatpak's,
because TensorFlow, Node.js and their libraries make hundreds of different calls that change
between versions; a call listed here answers EPERM (ENOSYS where callers fall back, as for
io_uring and clone3), so a library that probes for one goes on.

The filter is inherited by every process the child starts (Node.js, the tfjs converter, an Edge
TPU compiler) and cannot be removed; libseccomp sets ``no_new_privs`` so no set-uid program
regains privileges. Made with libseccomp (through pyseccomp), which compiles the rules to BPF
for the running architecture.
"""

from __future__ import annotations

import errno

# What each group is refused for; the calls are the kernel's names, libseccomp resolves them.
DENIED_CALLS: dict[str, tuple[str, ...]] = {
    "namespaces (a new user namespace gives capabilities to exploit kernel code with)": (
        "unshare",
        "setns",
        "pivot_root",
        "chroot",
    ),
    "mounting": ("mount", "umount2", "fsopen", "fsmount", "fsconfig", "move_mount", "open_tree", "mount_setattr"),
    "tracing and reading other processes": (
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "kcmp",
        "pidfd_getfd",
    ),
    "kernel attack surface a converter never uses": (
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "add_key",
        "request_key",
        "open_by_handle_at",
        "name_to_handle_at",
        "lookup_dcookie",
        "personality",
    ),
    "the machine itself": (
        "reboot",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "syslog",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "adjtimex",
        "iopl",
        "ioperm",
    ),
}
# Callers fall back when these say "not implemented" (libuv, glibc's clone3 → clone).
NOT_IMPLEMENTED_CALLS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")
CLONE_NEWUSER = 0x10000000


def denied() -> list[str]:
    """Every refused call, for the report and /healthz."""
    calls = [call for group in DENIED_CALLS.values() for call in group]
    return sorted(calls + list(NOT_IMPLEMENTED_CALLS) + ["clone(CLONE_NEWUSER)"])


def install() -> None:
    """Load the filter into this process (and everything it starts). Raises OSError or
    RuntimeError when libseccomp or the kernel refuses; the caller fails the export then."""
    import pyseccomp as seccomp

    syscall_filter = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for calls in DENIED_CALLS.values():
        for call in calls:
            syscall_filter.add_rule(seccomp.ERRNO(errno.EPERM), call)
    for call in NOT_IMPLEMENTED_CALLS:
        syscall_filter.add_rule(seccomp.ERRNO(errno.ENOSYS), call)
    # clone's first argument holds its flags: a thread or a process is fine, a new user namespace not.
    syscall_filter.add_rule(
        seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)
    )
    syscall_filter.load()
